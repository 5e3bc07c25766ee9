"""containerd's snapshotter-suite idea: the same file operations applied
through a chain of layers (create, mount, write, commit, next) and to one
flat directory must give equal trees; and the overlay driver never changes
an inode of a parent layer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, open_graph, tar_of
from support.manifest import Record, assert_same, manifest


def _tree(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, Record]:
    """The manifest without `/` (whose time is when the tree was made)."""
    m = manifest(root, exclude=exclude)
    del m["/"]
    return m


def _untimed(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, Record]:
    """A manifest without times: the flat directory is written later than
    the layers, everything else must match, hard-link groups included (a
    naive (vfs) diff carries the unchanged name of a file newly linked from
    a lower layer, as overlayfs's copy-up does)."""
    return {p: replace(r, mtime_ns=None) for p, r in _tree(root, exclude).items()}


def _add(r: Path) -> None:
    (r / "a/b").mkdir(parents=True)
    (r / "a/b/f1").write_text("one\n")
    (r / "a/f2").write_text("two\n")
    os.symlink("b/f1", r / "a/link")
    (r / "d/e").mkdir(parents=True)
    (r / "d/e/g").write_text("g\n")
    (r / "x/y").mkdir(parents=True)
    (r / "x/y/z").write_text("z\n")
    (r / "h1").write_text("linked\n")
    (r / "empty").mkdir()
    os.chmod(r / "empty", 0o1777)


def _modify(r: Path) -> None:
    with open(r / "a/f2", "a") as f:
        f.write("more\n")
    os.chmod(r / "a/b/f1", 0o600)
    os.chown(r / "a/f2", 1000, 1001)
    os.chown(r / "d/e", 12, 34)
    os.utime(r / "x/y/z", ns=(1_000_000_000, 1_500_000_000_123))


def _delete(r: Path) -> None:
    (r / "a/b/f1").unlink()
    shutil.rmtree(r / "d")


def _replace_dir_by_file(r: Path) -> None:
    shutil.rmtree(r / "x")
    (r / "x").write_text("now a file\n")


def _rename(r: Path) -> None:
    os.rename(r / "a/f2", r / "a/f2-renamed")
    # Renaming a lower directory is EXDEV on overlayfs without redirect_dir;
    # shutil.move falls back to copy + remove, as `mv` does.
    shutil.move(r / "a/b", r / "a/b2")


def _hard_links(r: Path) -> None:
    os.link(r / "h1", r / "h1-link")
    (r / "new").write_text("n\n")
    os.link(r / "new", r / "new-link")


def _recreate_dir(r: Path) -> None:
    shutil.rmtree(r / "a")
    (r / "a").mkdir()
    (r / "a/fresh").write_text("fresh\n")


STEPS: list[Callable[[Path], None]] = [
    _add,
    _modify,
    _delete,
    _replace_dir_by_file,
    _rename,
    _hard_links,
    _recreate_dir,
]


@pytest.mark.parametrize("driver", DRIVERS)
def test_layer_chain_equals_flat_directory(driver: str, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    with open_graph(tmp_path / "store", driver) as g:
        parent: lamina.Layer | None = None
        for step in STEPS:
            box = g.create(parent)
            with box.mounted() as root:
                step(Path(root))
                written = _tree(root)
            step(flat)
            parent = g.commit(box)
            g.delete(box)
            with parent.mounted() as view:
                # Times included: the commit carries them exactly.
                assert_same(_tree(view), written)
                assert_same(_untimed(view), _untimed(flat))
        assert parent is not None and len(parent.chain) == len(STEPS)


@pytest.mark.parametrize("driver", DRIVERS)
def test_container_chain_with_init_layers(driver: str, tmp_path: Path) -> None:
    """The same through containers with -init layers: a commit carries the
    container's changes only, never the init layer's files."""
    flat = tmp_path / "flat"
    flat.mkdir()
    with open_graph(tmp_path / "store", driver) as g:
        parent = g.register(tar_of({"etc/": "", "etc/hosts": "image\n"}))
        with parent.mounted() as view:
            shutil.copytree(view, flat, dirs_exist_ok=True, symlinks=True)
        for step in STEPS:
            box = g.create(parent, init=True)
            with box.mounted() as root:
                step(Path(root))
                init_paths = ("/etc", "/.dockerenv", "/.dockerinit", "/dev", "/proc", "/sys")
                written = _tree(root, init_paths)
            step(flat)
            parent = g.commit(box)
            g.delete(box)
            with parent.mounted() as view:
                assert not Path(view, ".dockerenv").exists()
                assert_same(_tree(view, init_paths), written)
                assert_same(_untimed(view, ("/etc",)), _untimed(flat, ("/etc",)))


def _layer_tree(g: lamina.Graph, layer: lamina.Layer) -> Path:
    return Path(g.root, "layers", layer.id, "root")


def _inodes(root: Path) -> dict[str, tuple[int, Record]]:
    """Inode number and everything else about each path but its ctime,
    which link(2) moves: a hard-link copy changes the link count, nothing
    else may change."""
    return {p: (r.ino, r) for p, r in manifest(root).items()}


def test_overlay_never_changes_a_parent_inode(tmp_path: Path) -> None:
    with open_graph(tmp_path / "store", "overlay") as g:
        base = g.register(
            tar_of({"etc/": "", "etc/passwd": "root\n", "bin/": "", "bin/sh": "sh\n", "f": "f\n"})
        )
        before = _inodes(_layer_tree(g, base))
        # A child rewriting, re-moding and deleting the parent's files.
        child = g.register(
            tar_of({"etc/passwd": "root\nuser\n", "bin/sh": None, "f": "->etc/passwd"}),
            parent=base,
        )
        assert _inodes(_layer_tree(g, base)) == before
        mid = _inodes(_layer_tree(g, child))
        box = g.create(child, init=True)
        with box.mounted() as root:
            with open(Path(root, "etc/passwd"), "a") as f:
                f.write("more\n")
            os.chmod(Path(root, "etc"), 0o700)
            os.chown(Path(root, "etc/passwd"), 5, 5)
            os.utime(Path(root, "etc/passwd"), ns=(1, 1))
            os.setxattr(Path(root, "etc/passwd"), "user.k", b"v")
            os.link(Path(root, "etc/passwd"), Path(root, "passwd-link"))
        img = g.commit(box)
        with img.mounted() as view:
            assert Path(view, "etc/passwd").read_text() == "root\nuser\nmore\n"
        assert _inodes(_layer_tree(g, base)) == before
        assert _inodes(_layer_tree(g, child)) == mid
        with base.mounted() as view:
            assert Path(view, "bin/sh").read_text() == "sh\n"
            assert Path(view, "etc/passwd").read_text() == "root\n"
