"""Graph.squash, Graph.diff_images, Layer.find / Image.find and the plugin's
image asserts. Oracles: GNU tar's extraction of the trees lamina exports,
the container's own changes() and fnmatch over os.walk of a real tree."""

from __future__ import annotations

import fnmatch
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from lamina.pytest_plugin import assert_image_config, assert_image_diff
from support.layers import tar_of


@pytest.fixture
def built(tmp_path: Path) -> Iterator[tuple[lamina.Graph, Any, Any, lamina.Layer]]:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        base = g.register(tar_of({"etc/os": b"debian\n", "etc/keep": b"k\n", "bin/sh": b"sh"}))
        mid = g.register(tar_of({"etc/mid": b"m\n", "usr/lib/x.so": b"so"}), parent=base)
        img = g.tag(mid, "base:1", config={"config": {"Env": ["PATH=/usr/bin"], "Cmd": ["sh"]}})
        box = g.create(img, init=True)
        with box.mounted() as root:
            os.remove(Path(root, "etc/os"))
            Path(root, "etc/new").write_text("n\n")
            Path(root, "etc/keep").write_text("changed\n")
        new = g.commit_image(box, "app:1", changes=["ENV A=2"], created_by="step")
        yield g, img, new, box


def _gnu_tree(tar: Path, dst: Path) -> dict[str, tuple[int, bytes | None]]:
    dst.mkdir()
    subprocess.run(["tar", "-C", str(dst), "-xf", str(tar)], check=True)
    out = {}
    for d, dirs, files in os.walk(dst):
        for n in dirs + files:
            p = Path(d, n)
            rel = "/" + str(p.relative_to(dst))
            st = p.lstat()
            out[rel] = (st.st_mode, None if p.is_dir() else p.read_bytes())
    return out


def test_squash_gives_the_same_tree_in_one_layer(built: Any, tmp_path: Path) -> None:
    g, _, new, _ = built
    one = g.squash(new, "one:1")
    assert len(one.layers) == 1
    assert one.config["rootfs"]["diff_ids"] == [one.layer.diff_id]
    assert one.cmd == new.cmd and one.env == new.env
    assert [h["created_by"] for h in one.history] == ["lamina squash app:1"]
    # Oracle: the merged trees exported whole, extracted by GNU tar.
    for img, tag in ((new, "layered"), (one, "squashed")):
        with img.layer.mounted() as root:
            lamina.export_diff(None, root, tmp_path / f"{tag}.tar")
    assert _gnu_tree(tmp_path / "squashed.tar", tmp_path / "a") == _gnu_tree(
        tmp_path / "layered.tar", tmp_path / "b"
    )


def test_diff_images_is_what_the_container_changed(built: Any) -> None:
    g, img, new, box = built
    want = sorted((c.kind, c.path) for c in box.changes())
    got = sorted((c.kind, c.path) for c in g.diff_images(img, new))
    assert got == want and ("D", "/etc/os") in got and ("A", "/etc/new") in got
    assert g.diff_images("app:1", "app:1") == []
    assert_image_diff(g, img, new, added=["/etc/new"], deleted=["/etc/os"])
    with pytest.raises(AssertionError, match="missing /nope"):
        assert_image_diff(g, img, new, added=["/nope"])


def test_find_equals_fnmatch_over_the_real_tree(built: Any, tmp_path: Path) -> None:
    _, img, new, _ = built
    with new.layer.mounted() as root:
        lamina.export_diff(None, root, tmp_path / "t.tar")
    tree = _gnu_tree(tmp_path / "t.tar", tmp_path / "t")
    for pattern in ("etc/*", "/usr/*/*.so", "*", "nothing*"):
        pat = pattern if pattern.startswith("/") else "*/" + pattern
        want = sorted(p for p in tree if fnmatch.fnmatchcase(p, pat))
        assert sorted(e.path for e in new.find(pattern)) == want, pattern
    providers = {e.path: e.layer for e in new.find("/etc/*")}
    assert providers["/etc/new"] == new.layer.id
    assert providers["/etc/mid"] == img.layer.id
    with pytest.raises(TypeError, match="int"):
        new.layer.find(1)  # type: ignore[arg-type]


def test_plugin_image_config(built: Any) -> None:
    _, _, new, _ = built
    assert_image_config(new, Env={"PATH": "/usr/bin", "A": "2"}, Cmd=["sh"])
    with pytest.raises(AssertionError, match="Cmd: wanted"):
        assert_image_config(new, Cmd=["other"])


def test_image_html_shows_config_history_and_layers(built: Any) -> None:
    _, _, new, _ = built
    html = new._repr_html_()
    assert "app:1" in html and "A=2" in html and "step" in html
    for lay in new.layers:
        assert lay.diff_id in html
