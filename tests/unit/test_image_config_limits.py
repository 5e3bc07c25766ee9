"""An image config is kept only if it reads back: over the size cap, or
holding a value JSON readers would change (an int past 2**53, a non-str
key), it is refused before anything is written, so a listing never meets a
record it cannot read (a config with a 50 MiB label once made every
``images()`` fail with CorruptStore)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import tar_of

CAP = 4 << 20


def _store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "tmp" not in p.parts)


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[lamina.Graph]:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        g.tag(g.register(tar_of({"etc/motd": b"hi\n"})), "base:1")
        yield g


def _labels(text: str) -> dict[str, Any]:
    return {"os": "linux", "config": {"Labels": {"big": text}}}


def test_a_fifty_mib_label_is_refused_and_the_store_still_lists(
    graph: lamina.Graph, tmp_path: Path
) -> None:
    base = graph.image("base:1").layer
    before = _store_files(tmp_path / "s")
    with pytest.raises(
        ValueError, match=r"image config is \d+ bytes as JSON; the limit is 4194304"
    ):
        graph.tag(base, "big:1", config=_labels("x" * (50 << 20)))
    assert _store_files(tmp_path / "s") == before
    assert [i.name for i in graph.images()] == ["base:1"]


def test_commit_image_refuses_a_big_label_before_the_layer_is_made(
    graph: lamina.Graph, tmp_path: Path
) -> None:
    box = graph.create(graph.image("base:1"))
    with box.mounted() as root:
        Path(root, "etc/new").write_text("n\n")
    layers = {layer.id for layer in graph.layers()}
    before = _store_files(tmp_path / "s")
    with pytest.raises(ValueError, match="the limit is 4194304"):
        graph.commit_image(box, "big:1", changes={"Labels": {"big": "x" * (50 << 20)}})
    assert _store_files(tmp_path / "s") == before
    assert {layer.id for layer in graph.layers()} == layers
    assert [i.name for i in graph.images()] == ["base:1"]


def test_a_config_just_under_the_cap_is_kept_and_reads_back(graph: lamina.Graph) -> None:
    base = graph.image("base:1").layer
    # The stored config is the given one plus its rootfs: 1 KiB of room.
    img = graph.tag(base, "near:1", config=_labels("é" * ((CAP - 1024) // 2)))
    assert len(img.config["config"]["Labels"]["big"]) == (CAP - 1024) // 2
    assert sorted(i.name for i in graph.images()) == ["base:1", "near:1"]
    assert graph.image("near:1").labels["big"] == "é" * ((CAP - 1024) // 2)
    with pytest.raises(ValueError, match="the limit is 4194304"):
        graph.tag(base, "over:1", config=_labels("x" * CAP))


REFUSED: dict[str, tuple[Any, type[Exception], str]] = {
    "int past 2**53": (
        {"config": {"Labels": {"n": 2**53 + 1}}},
        ValueError,
        r"config\[\"config\"\]\[\"Labels\"\]\[\"n\"\]: 9007199254740993 is outside",
    ),
    "int key": ({"config": {1: "a"}}, TypeError, r"key 1 is int"),
    "tuple": ({"config": {"Cmd": ("sh",)}}, TypeError, r"a tuple would read back as a list"),
    "not a dict": (["os"], TypeError, r"config is a dict, not list"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_what_would_not_read_back_is_refused(
    graph: lamina.Graph, tmp_path: Path, case: str
) -> None:
    value, exc, message = REFUSED[case]
    before = _store_files(tmp_path / "s")
    with pytest.raises(exc, match=message):
        graph.tag(graph.image("base:1").layer, "bad:1", config=value)
    assert _store_files(tmp_path / "s") == before
    assert os.path.isdir(graph.root)
    assert [i.name for i in graph.images()] == ["base:1"]
