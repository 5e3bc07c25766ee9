"""Real layers made by Docker: registered, given back byte for byte, with
Docker's diff ids, and reproduced on a second store from their diffs."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

import lamina
from support.docker_image import docker_saved_layers
from support.layers import DRIVERS, open_graph
from support.manifest import Record, assert_same, manifest
from support.rootfs import debian_rootfs


def _tree(root: str, **kw: bool) -> dict[str, Record]:
    """The manifest of a merged view, without the time of ``/``: layer tars
    rarely carry ``./``, so that time is when the tree was made."""
    m = manifest(root, **kw)
    m["/"] = replace(m["/"], mtime_ns=None)
    return m


@pytest.fixture(scope="module")
def saved() -> list:  # type: ignore[type-arg]
    return docker_saved_layers()


@pytest.mark.parametrize("driver", DRIVERS)
def test_docker_layers_round_trip(saved: list, driver: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    with open_graph(tmp_path / "a", driver) as g:
        parent = None
        chain = []
        for s in saved:
            layer = g.register(s.tar, parent=parent)
            assert layer.diff_id == s.diff_id, s.tar
            parent = layer
            chain.append(layer)
        want = [s.diff_id for s in saved]
        assert [lay.diff_id for lay in parent.chain] == want
        for layer, s in zip(chain, saved):
            data = layer.diff()
            assert data == s.tar.read_bytes(), f"{s.tar}: diff() differs from the saved tar"
            assert "sha256:" + hashlib.sha256(data).hexdigest() == s.diff_id
            # The seed's size, counted independently by tarfile.
            with tarfile.open(s.tar) as t:
                assert layer.size == sum(m.size for m in t.getmembers()), s.tar
            assert layer.tar_size == s.tar.stat().st_size


@pytest.mark.parametrize("driver", DRIVERS)
def test_second_store_reproduces_layers(saved: list, driver: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    with open_graph(tmp_path / "a", driver) as a, open_graph(tmp_path / "b", driver) as b:
        pa = pb = None
        for s in saved:
            la = a.register(s.tar, parent=pa)
            lb = b.register(io.BytesIO(la.diff()), parent=pb)
            assert (lb.id, lb.diff_id, lb.chain_id) == (la.id, la.diff_id, la.chain_id)
            with la.mounted() as ra, lb.mounted() as rb:
                assert_same(_tree(ra), _tree(rb))
            pa, pb = la, lb


@pytest.mark.parametrize("driver", DRIVERS)
def test_container_diff_reapplies(saved: list, driver: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """A container's diff, committed, gives the same tree on another store
    as the container's own merged view."""
    with open_graph(tmp_path / "a", driver) as a, open_graph(tmp_path / "b", driver) as b:
        pa = pb = None
        for s in saved:
            pa = a.register(s.tar, parent=pa)
            pb = b.register(s.tar, parent=pb)
        box = a.create(pa)
        with box.mounted() as root:
            Path(root, "data/keep/new").write_text("new\n")
            Path(root, "data/keep/k").write_text("rewritten\n")
            Path(root, "data/opaque/b").unlink()
        img = b.register(box.diff(), parent=pb)
        with box.mounted() as ra, img.mounted() as rb:
            assert_same(_tree(ra, dir_times=False), _tree(rb, dir_times=False))
        assert isinstance(img, lamina.Layer)


@pytest.mark.parametrize("driver", DRIVERS)
def test_debootstrap_rootfs_round_trip(driver: str, tmp_path: Path) -> None:
    """A GNU tar of a real Debian rootfs: registered, given back exactly."""
    tar = tmp_path / "rootfs.tar"
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-C", str(debian_rootfs()), "-cf", str(tar), "."],
        check=True,
    )
    with open_graph(tmp_path / "s", driver) as g:
        layer = g.register(tar)
        out = tmp_path / "out.tar"
        layer.diff(out)
        assert out.read_bytes() == tar.read_bytes()
        assert layer.diff_id == "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
