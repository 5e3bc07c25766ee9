"""After `Graph.close()` every call on the graph, its layers and its images
is a `ValueError`, as on a closed file; repr() still answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

import lamina
from support.layers import tar_of


@pytest.fixture
def closed(tmp_path: Path) -> tuple[lamina.Graph, lamina.Layer, lamina.Layer, Any]:
    g = lamina.Graph(tmp_path / "s", driver="vfs")
    base = g.register(tar_of({"etc/hosts": b"h\n"}))
    box = g.create(base)
    img = g.tag(base, "app:1")
    g.close()
    return g, base, box, img


GRAPH_CALLS: dict[str, Callable[[lamina.Graph, lamina.Layer], object]] = {
    "len": lambda g, b: len(g),
    "iter-layers": lambda g, b: g.layers(),
    "heads": lambda g, b: g.heads(),
    "contains": lambda g, b: b.id in g,
    "getitem": lambda g, b: g[b.id],
    "get": lambda g, b: g.get(b.id),
    "register": lambda g, b: g.register(tar_of({"x": b"x"})),
    "create": lambda g, b: g.create(b),
    "delete": lambda g, b: g.delete(b),
    "status": lambda g, b: g.status(),
    "images": lambda g, b: g.images(),
    "image": lambda g, b: g.image("app:1"),
    "tag": lambda g, b: g.tag(b, "app:2"),
    "check": lambda g, b: g.check(),
    "root": lambda g, b: g.root,
    "driver": lambda g, b: g.driver,
}

LAYER_CALLS: dict[str, Callable[[lamina.Layer], object]] = {
    "id": lambda lay: lay.id,
    "parent": lambda lay: lay.parent,
    "chain": lambda lay: lay.chain,
    "size": lambda lay: lay.size,
    "diff_id": lambda lay: lay.diff_id,
    "metadata": lambda lay: lay.metadata,
    "mount": lambda lay: lay.mount(),
    "mount_count": lambda lay: lay.mount_count,
    "diff": lambda lay: lay.diff(),
    "changes": lambda lay: lay.changes(),
    "walk": lambda lay: list(lay.walk("/")),
    "read": lambda lay: lay.read("/etc/hosts"),
    "exists": lambda lay: lay.exists("/etc/hosts"),
    "analyze": lambda lay: lay.analyze(),
}

IMAGE_CALLS: dict[str, Callable[[Any], object]] = {
    "name": lambda i: i.name,
    "digest": lambda i: i.digest,
    "layer": lambda i: i.layer,
    "layers": lambda i: i.layers,
    "config": lambda i: i.config,
    "manifest": lambda i: i.manifest,
}


@pytest.mark.parametrize("call", GRAPH_CALLS, ids=list(GRAPH_CALLS))
def test_graph_calls_raise(closed: Any, call: str) -> None:
    g, base, _, _ = closed
    with pytest.raises(ValueError, match="closed"):
        GRAPH_CALLS[call](g, base)


@pytest.mark.parametrize("call", LAYER_CALLS, ids=list(LAYER_CALLS))
@pytest.mark.parametrize("which", ["image layer", "container"])
def test_layer_calls_raise(closed: Any, call: str, which: str) -> None:
    _, base, box, _ = closed
    with pytest.raises(ValueError, match="closed"):
        LAYER_CALLS[call](base if which == "image layer" else box)


@pytest.mark.parametrize("call", IMAGE_CALLS, ids=list(IMAGE_CALLS))
def test_image_calls_raise(closed: Any, call: str) -> None:
    with pytest.raises(ValueError, match="closed"):
        IMAGE_CALLS[call](closed[3])


def test_repr_and_second_close_still_work(closed: Any) -> None:
    g, base, box, img = closed
    for obj in (g, base, box, img):
        assert repr(obj)
    g.close()
    with g:
        pass


def test_the_store_reopens_with_everything(closed: Any, tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s") as again:
        assert len(again) == 2
        assert again.image("app:1").layer.read("/etc/hosts") == b"h\n"


def test_exit_returns_none(tmp_path: Path) -> None:
    g = lamina.Graph(tmp_path / "s", driver="vfs")
    assert g.__exit__(None, None, None) is None


def test_unmount_more_than_mounted_is_not_mounted(tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        box = g.create()
        box.mount()
        box.unmount()
        with pytest.raises(lamina.NotMounted) as e:
            box.unmount()
        assert isinstance(e.value, lamina.LaminaError)
        assert isinstance(e.value, ValueError)
        assert e.value.id == box.id
        assert box.id in str(e.value)
