"""Graph and Layer lifecycle on both drivers: register, create, mount,
commit, diff, delete, and what each refuses."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, open_graph, tar_of
from support.mounts import mount_points

BASE = tar_of({"etc/": "", "etc/os-release": "ID=lamina\n", "bin/": "", "bin/sh": "#!\n"})
MID = tar_of({"etc/app.conf": "a=1\n", "bin/sh": None, "lib/": "", "lib/x": "->../etc/app.conf"})


def content_bytes(tar: bytes) -> int:
    """The seed's layer size, counted by tarfile: the members' sizes."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return sum(m.size for m in t.getmembers())


@pytest.fixture(params=DRIVERS)
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> lamina.Graph:
    with open_graph(tmp_path / "store", request.param) as g:
        yield g  # type: ignore[misc]


def test_register_get_and_dedupe(graph: lamina.Graph) -> None:
    base = graph.register(BASE, metadata={"from": "test"})
    assert base.diff_id == "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert base.chain_id == base.diff_id
    assert base.id == base.chain_id.removeprefix("sha256:")
    assert base.parent is None and not base.writable
    assert base.metadata == {"from": "test"}
    assert base.tar_size == len(BASE) and base.size == content_bytes(BASE)
    assert base.created.tzinfo is not None
    assert base.created.utcoffset() == datetime.timedelta(0)
    mid = graph.register(io.BytesIO(MID), parent=base.id[:10])
    assert mid.parent == base and [lay.id for lay in mid.chain] == [base.id, mid.id]
    want_chain = hashlib.sha256(f"{base.chain_id} {mid.diff_id}".encode()).hexdigest()
    assert mid.chain_id == f"sha256:{want_chain}"
    # Same diff on the same parent: stored once.
    assert graph.register(MID, parent=base) == mid
    assert len(graph) == 2 and base.id in graph and base.id[:5] in graph and "ab" * 32 not in graph
    assert graph[base.id[:7]] == base and set(graph) == {base, mid}
    assert graph.heads() == [mid] and graph.layers() == [base, mid]
    with pytest.raises(lamina.LayerExists):
        graph.register(MID, parent=base, id=mid.id)
    with pytest.raises(lamina.LayerNotFound):
        graph.get("0" * 64)
    with pytest.raises(KeyError):
        graph["f" * 12]
    assert "<Layer" in repr(mid) and mid.id[:12] in repr(mid)


def test_store_files_are_private(graph: lamina.Graph) -> None:
    base = graph.register(BASE)
    layer_dir = Path(graph.root, "layers", base.id)
    assert stat.S_IMODE(os.stat(layer_dir / "layer.json").st_mode) == 0o600
    for d in (graph.root, Path(graph.root, "layers"), Path(graph.root, "tmp"), layer_dir):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert os.listdir(Path(graph.root, "tmp")) == []


def test_diff_is_byte_identical(graph: lamina.Graph, tmp_path: Path) -> None:
    base = graph.register(BASE)
    mid = graph.register(MID, parent=base)
    assert base.diff() == BASE and mid.diff() == MID
    out = tmp_path / "mid.tar"
    assert mid.diff(out) == len(MID) and out.read_bytes() == MID
    buf = io.BytesIO()
    mid.diff(buf)
    assert buf.getvalue() == MID


def test_container_lifecycle(graph: lamina.Graph) -> None:
    base = graph.register(BASE)
    mid = graph.register(MID, parent=base)
    box = graph.create(mid, init=True, metadata={"name": "c1"})
    assert box.writable and box.diff_id is None
    init = box.parent
    assert init is not None and init.id == box.id + "-init" and init.parent == mid
    assert graph[box.id[:12]] == box  # a prefix of both names the container
    with box.mounted() as root:
        assert box.mount_count == 1
        assert Path(root, ".dockerenv").is_file() and Path(root, "etc/hosts").is_file()
        assert Path(root, "etc/app.conf").read_text() == "a=1\n"
        assert not Path(root, "bin/sh").exists()
        Path(root, "hello").write_text("hi\n")
        os.remove(Path(root, "etc/os-release"))
        with pytest.raises(lamina.LayerInUse):
            graph.delete(box)
    assert box.mount_count == 0
    assert sorted((c.kind, c.path) for c in box.changes()) == [
        ("A", "/hello"),
        ("C", "/etc"),
        ("D", "/etc/os-release"),
    ]
    assert box.diff_size() == 3
    diff = box.diff()
    with tarfile.open(fileobj=io.BytesIO(diff)) as tar:
        names = tar.getnames()
    assert "hello" in names and "etc/.wh.os-release" in names and ".dockerenv" not in names
    img = graph.commit(box, metadata={"msg": "commit"})
    assert img.parent == mid and not img.writable and img.metadata == {"msg": "commit"}
    assert img.diff_id == "sha256:" + hashlib.sha256(img.diff()).hexdigest()
    with img.mounted() as root:
        assert Path(root, "hello").read_text() == "hi\n"
        assert not Path(root, "etc/os-release").exists()
        assert not Path(root, ".dockerenv").exists()
        if graph.driver != "vfs":
            # Read-only: its files are hard links shared with other layers
            # (overlay), its diff/ a lower of its children (overlay2).
            with pytest.raises(OSError):
                Path(root, "new").write_text("x")
    with pytest.raises(lamina.LayerInUse):
        graph.delete(mid)
    graph.delete(box)
    assert box.id not in graph and init.id not in graph
    graph.delete(img)
    graph.delete(mid)
    graph.delete(base)
    assert len(graph) == 0


def test_refusals(graph: lamina.Graph) -> None:
    base = graph.register(BASE)
    box = graph.create(base)
    with pytest.raises(ValueError):
        graph.create(box)  # a writable layer is no parent
    with pytest.raises(ValueError):
        graph.register(MID, parent=box)
    with pytest.raises(ValueError):
        graph.commit(base)  # read-only
    with pytest.raises(ValueError):
        graph.register(MID, id="../../etc")
    with pytest.raises(lamina.LayerExists):
        graph.create(base, id=box.id)
    with pytest.raises(lamina.ArchiveError):
        graph.register(b"not a tar at all" * 64)
    assert os.listdir(Path(graph.root, "tmp")) == []


def test_ambiguous_prefix(graph: lamina.Graph) -> None:
    ids = [f"{n:x}" * 64 for n in range(10, 12)]
    for i in ids:
        graph.register(BASE, id=i)
    graph.register(BASE, id="ab" * 32)
    with pytest.raises(lamina.LayerNotFound, match="ambiguous") as e:
        graph.get("a")
    assert e.value.reference == "a" and e.value.root == graph.root
    assert e.value.candidates == ["a" * 64, "ab" * 32]
    assert "a" not in graph
    assert graph.get("ab").id == "ab" * 32


def test_close_unmounts(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "overlay") as g:
        box = g.create(g.register(BASE))
        box_id = box.id
        path = box.mount()
        box.mount()
        assert path in mount_points() and box.mount_count == 2
    assert path not in mount_points()
    with pytest.raises(ValueError, match="closed"):
        _ = box.mount_count
    with lamina.Graph(tmp_path / "s") as g:
        assert g.driver == "overlay" and g[box_id].mount_count == 0
        g.delete(box_id)
    with pytest.raises(ValueError):
        lamina.Graph(tmp_path / "s", driver="vfs")


def test_status(graph: lamina.Graph) -> None:
    graph.register(BASE)
    s = graph.status()
    assert s["driver"] == graph.driver and s["layers"] == 1
    assert "backing_filesystem" in s and s["supports_d_type"] is True
    if graph.driver == "overlay2":
        # Native diffs unless the kernel turns on what breaks them.
        blockers = [k for k in ("redirect_dir", "metacopy") if s.get(f"overlay.{k}") == "Y"]
        assert s["native_diff"] is (not blockers)
        assert s["mount_api"] and s["max_lowers"]
