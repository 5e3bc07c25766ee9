"""Hardening (issue 8): deletes and diffs never cross a mount point, the
store's own paths cannot be redirected, failures leave an openable store,
and the CLI survives what a hostile layer or a deep chain gives it. The
races through swapped-in symlinks are proven in the Rust suite (fs::race),
where every new entry can be exchanged the moment after it is made."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, open_graph, tar_of
from support.mounts import mount_points

BASE = tar_of({"etc/": "", "etc/os-release": "ID=lamina\n", "d/": "", "d/keep": "k"})


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A host directory with a secret, to be mounted into trees."""
    v = tmp_path / "volume"
    v.mkdir()
    (v / "secret").write_text("do not delete, do not export")
    yield v
    assert (v / "secret").read_text() == "do not delete, do not export"


# -- deletes that cross mount points -------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [
        {"d": "a file over the directory"},
        {"d": None},  # a whiteout
        {".wh..wh..opq": "", "x": "x"},  # an opaque root
    ],
    ids=["file-over-dir", "whiteout", "opaque-parent"],
)
def test_apply_never_removes_across_a_mount(
    tmp_path: Path, volume: Path, entries: dict[str, str | None]
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    lamina.apply_layer(dst, BASE)
    (dst / "d/m").mkdir()
    mount("--bind", str(volume), str(dst / "d/m"))
    try:
        with pytest.raises(OSError) as e:
            lamina.apply_layer(dst, tar_of(entries))
        assert e.value.errno == errno.EBUSY
        assert e.value.filename == str(dst / "d/m")
    finally:
        umount(dst / "d/m")


def test_vfs_delete_refuses_a_mounted_volume(tmp_path: Path, volume: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        box = g.create(g.register(BASE))
        root = Path(box.mount())
        (root / "vol").mkdir()
        mount("--bind", str(volume), str(root / "vol"))
        try:
            box.unmount()
            with pytest.raises(lamina.LayerInUse, match=r"mounted at .*/vol"):
                g.delete(box)
            assert box.id in g and (root / "etc/os-release").exists()
        finally:
            umount(root / "vol")
        g.delete(box)
        assert box.id not in g


@pytest.mark.parametrize("driver", DRIVERS)
def test_diffs_do_not_descend_into_mounts(tmp_path: Path, volume: Path, driver: str) -> None:
    """A bind-mounted host directory is not the layer's: not in changes(),
    not in diff(), not in a commit (the overlay upper walk never sees it;
    this keeps it so)."""
    with open_graph(tmp_path / "s", driver) as g:
        box = g.create(g.register(BASE))
        with box.mounted() as root:
            Path(root, "new").write_text("n")
            Path(root, "mnt").mkdir()
            mount("--bind", str(volume), str(Path(root, "mnt")))
            try:
                paths = [c.path for c in box.changes()]
                tar = box.diff()
                img = g.commit(box)
            finally:
                umount(Path(root, "mnt"))
        assert "/new" in paths and not any(p.startswith("/mnt/") for p in paths)
        assert b"do not delete" not in tar and b"mnt/secret" not in tar
        with img.mounted() as view:
            assert not Path(view, "mnt/secret").exists()


# -- the store's own paths ----------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_root_through_a_symlink(tmp_path: Path, driver: str) -> None:
    real = tmp_path / "disk/lamina"
    real.mkdir(parents=True)
    link = tmp_path / "var-lib-lamina"
    link.symlink_to(real)
    with lamina.Graph(link, driver=driver) as g:
        assert g.root == str(real)
        box = g.create(g.register(BASE))
        path = box.mount()
        assert path.startswith(str(real))
        box.unmount()
        assert path not in mount_points() or driver == "vfs"
        g.delete(box)
    assert not any(p.startswith(str(real)) for p in mount_points())


def test_relative_root_mounts(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with lamina.Graph("rel/../store", driver="overlay") as g:
            box = g.create(g.register(BASE))
            with box.mounted() as root:
                assert Path(root, "etc/os-release").read_text() == "ID=lamina\n"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("inner", ["tmp", "layers", "driver"])
def test_store_dirs_that_are_symlinks_are_refused(tmp_path: Path, inner: str) -> None:
    root = tmp_path / "s"
    lamina.Graph(root, driver="vfs").close()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("p")
    os.rename(root / inner, tmp_path / f"old-{inner}")
    (root / inner).symlink_to(outside)
    with pytest.raises(lamina.CorruptStore) as e:
        lamina.Graph(root)
    assert e.value.path == str(root / inner)
    assert (outside / "precious").read_text() == "p"


def test_merged_that_is_a_symlink_is_not_mounted_over(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("p")
    with open_graph(tmp_path / "s", "overlay") as g:
        box = g.create(g.register(BASE))
        merged = Path(g.root, "layers", box.id, "merged")
        merged.rmdir()
        merged.symlink_to(outside)
        with pytest.raises(lamina.CorruptStore):
            box.mount()
    assert str(outside) not in mount_points()
    assert (outside / "precious").read_text() == "p"


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero"])
def test_tampered_tar_split_is_corruption_not_a_hang(tmp_path: Path, kind: str) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        layer = g.register(BASE)
        record = Path(g.root, "layers", layer.id, "tar-split.zst")
        record.unlink()
        if kind == "fifo":
            os.mkfifo(record)
        else:
            record.symlink_to("/dev/zero")
        start = time.monotonic()
        with pytest.raises(lamina.CorruptStore) as e:
            layer.diff()
        assert time.monotonic() - start < 10
        assert e.value.path == str(record)


# -- failures that leave an openable store ------------------------------------


def test_immutable_file_blocks_delete_names_it_store_opens(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        box = g.create(g.register(BASE))
        locked = Path(box.mount(), "etc/locked")
        locked.write_text("x")
        box.unmount()
        subprocess.run(["chattr", "+i", str(locked)], check=True)
        try:
            with pytest.raises(PermissionError) as e:
                g.delete(box)
            assert e.value.filename.endswith("/etc/locked")
            with lamina.Graph(root) as again:
                # Whole or gone, never half: it is gone (moved out of
                # layers/ before its files were removed).
                assert box.id not in again and len(again) == 1
        finally:
            for p in Path(root, "tmp").rglob("locked"):
                subprocess.run(["chattr", "-i", str(p)], check=True)


UNREADABLE = r"would not read back|recursion limit|nested deeper than"


def test_metadata_that_would_not_read_back_is_refused(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        for depth in (126, 127):
            deep: dict[str, object] = {}
            for _ in range(depth):
                deep = {"d": deep}
            with pytest.raises(ValueError, match=UNREADABLE):
                g.register(BASE, metadata=deep)
            with pytest.raises(ValueError, match=UNREADABLE):
                g.create(metadata=deep)
        g.register(BASE, metadata={"fine": [1, 2]})
        assert len(g.layers()) == 1 and g.layers()[0].metadata == {"fine": [1, 2]}


def test_init_ids_are_reserved(tmp_path: Path) -> None:
    reserved = pytest.raises(ValueError, match="reserved for init layers")
    with open_graph(tmp_path / "s", "vfs") as g, reserved:
        g.register(BASE, id="ab" * 32 + "-init")


def _create_until_gone(root: str, parent: str, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with lamina.Graph(root) as g:
        for _ in range(2000):
            try:
                g.delete(g.create(parent))
            except lamina.LayerNotFound:
                q.put("gone")
                return
            except Exception as e:  # what the race must never raise
                q.put(f"{type(e).__name__}: {e}")
                return
    q.put("never gone")


@pytest.mark.parametrize("driver", DRIVERS)
def test_create_racing_a_delete_is_layer_not_found(tmp_path: Path, driver: str) -> None:
    root = str(tmp_path / "s")
    with lamina.Graph(root, driver=driver) as g:
        parent = g.register(BASE).id
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_create_until_gone, args=(root, parent, q))
    p.start()
    with lamina.Graph(root) as g:
        deadline = time.monotonic() + 60
        while parent in g and time.monotonic() < deadline:
            with contextlib.suppress(lamina.LayerInUse):
                g.delete(parent)
    p.join(60)
    assert q.get(timeout=5) == "gone"


# -- the CLI --------------------------------------------------------------------


def cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lamina", "--root", str(root), *args],
        capture_output=True,
        env={**os.environ, **env},
    )


def test_cli_tree_of_a_deep_chain(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with lamina.Graph(root, driver="vfs") as g:
        parent = None
        for i in range(1100):
            parent = g.register(tar_of({f"f{i}": "x"}), parent=parent)
    r = cli(root, "tree")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 1100 and "RecursionError" not in r.stderr.decode()


def test_cli_changes_escapes_names(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with lamina.Graph(root, driver="vfs") as g:
        box = g.create(g.register(BASE))
        with box.mounted() as r:
            for name in (b"bad\xff", b"esc\x1b[31m", b"new\nline"):
                Path(os.fsdecode(os.path.join(os.fsencode(r), name))).write_text("x")
        box_id = box.id
    r = cli(root, "changes", box_id, LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "A /bad\\377" in out and "A /esc\\033[31m" in out and "A /new\\nline" in out
    assert b"\x1b" not in r.stdout and len(out.splitlines()) == 3


def test_cli_refuses_empty_input_and_needless_umount(tmp_path: Path) -> None:
    root = tmp_path / "s"
    r = cli(root, "register", "/dev/null")
    assert r.returncode == 1 and b"empty stream" in r.stderr
    with lamina.Graph(root, driver="auto") as g:
        box = g.create(g.register(BASE)).id
    r = cli(root, "umount", box)
    assert r.returncode == 1 and b"not mounted" in r.stderr
    assert cli(root, "mount", box).returncode == 0
    assert cli(root, "umount", box).returncode == 0
    assert cli(root, "umount", box).returncode == 1
