"""The Graph with the vfs driver: no mounts, no privilege needed (this suite
also runs as an unprivileged user)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import lamina
from support.layers import open_graph, tar_of

BASE = tar_of({"etc/": "", "etc/os-release": "ID=lamina\n", "bin/": "", "bin/sh": "#!\n"})
TOP = tar_of({"etc/app.conf": "a=1\n", "bin/sh": None})


def test_round_trip_and_commit(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base = g.register(BASE)
        top = g.register(io.BytesIO(TOP), parent=base)
        assert top.diff() == TOP and base.diff() == BASE
        assert (
            top.chain_id
            == "sha256:" + hashlib.sha256(f"{base.diff_id} {top.diff_id}".encode()).hexdigest()
        )
        box = g.create(top, init=True)
        with box.mounted() as root:
            Path(root, "hello").write_text("hi")
            os.remove(Path(root, "etc/os-release"))
        assert [(c.kind, c.path) for c in box.changes()] == [
            ("C", "/etc"),
            ("D", "/etc/os-release"),
            ("A", "/hello"),
        ]
        img = g.commit(box)
        assert img.parent == top and img.diff_id
        assert "sha256:" + hashlib.sha256(img.diff()).hexdigest() == img.diff_id
        g.delete(box)
        assert sorted(lay.id for lay in g) == sorted([base.id, top.id, img.id])


def test_mapping_and_errors(tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        base = g.register(BASE, metadata={"a": {"b": [1, 2]}})
        assert g[base.id[:6]].metadata == {"a": {"b": [1, 2]}}
        assert base.id in g and "nope" not in g and len(g) == 1
        with pytest.raises(lamina.LayerNotFound):
            g["0" * 64]
        with pytest.raises(lamina.LayerExists):
            g.register(TOP, id=base.id)
        with pytest.raises(TypeError):
            g.register(12345)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            g.register(BASE, metadata={"x": object()})


def test_threads_share_a_graph(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base = g.register(BASE)
        seen: list[str] = []

        def work(n: int) -> None:
            for i in range(5):
                layer = g.register(tar_of({f"f{n}-{i}": str(i)}), parent=base)
                assert layer.diff() == tar_of({f"f{n}-{i}": str(i)})
                seen.append(layer.id)

        ts = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(set(seen)) == 40 and len(g) == 41


# Opens the store, mounts the layer and stays alive holding it.
HOLDER = """
import sys, lamina
g = lamina.Graph(sys.argv[1], driver="vfs")
g[sys.argv[2]].mount()
print("mounted", flush=True)
sys.stdin.read()
"""


def test_other_process_mount_blocks_delete_until_it_dies(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        layer = g.register(BASE)
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root), layer.id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "mounted\n"
            assert layer.mount_count == 1
            with pytest.raises(lamina.LayerInUse, match=str(child.pid)):
                g.delete(layer)
            # Our own unmount cannot give back the other process's reference.
            with pytest.raises(ValueError, match="not mounted"):
                layer.unmount()
            assert layer.mount_count == 1
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # A process that died without unmounting never blocks delete.
        assert layer.mount_count == 0
        g.delete(layer)
        assert len(g) == 0
