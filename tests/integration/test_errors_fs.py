"""OS failures keep their errno all the way to Python: a full disk is an
``OSError(ENOSPC)`` naming the file (not a malformed archive), a failed mount
a ``DriverError`` with ``errno`` and the mount point; and a failed register
leaves nothing in the store."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, open_graph, tar_of

BIG = tar_of({"d/": "", "d/big": os.urandom(4 << 20), "d/small": "s" * 100})


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_apply_enospc(small_fs: Path) -> None:
    dst = small_fs / "dst"
    dst.mkdir()
    with pytest.raises(OSError) as e:
        lamina.apply_layer(dst, BIG)
    assert not isinstance(e.value, lamina.ArchiveError)
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(dst / "d/big")
    assert "tar entry 'd/big'" in str(e.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_register_enospc_leaves_nothing(small_fs: Path, driver: str) -> None:
    root = small_fs / "store"
    with open_graph(root, driver) as g:
        with pytest.raises(OSError) as e:
            g.register(BIG)
        assert e.value.errno == errno.ENOSPC
        assert e.value.filename.endswith("/d/big")
        assert len(g) == 0
        assert os.listdir(root / "layers") == [] and os.listdir(root / "tmp") == []
        # The store still works once there is room.
        small = g.register(tar_of({"f": "x"}))
        assert small.diff_id is not None


def test_copy_enospc(small_fs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(4 << 20))
    with pytest.raises(OSError) as e:
        lamina.copy_dir(src, small_fs / "dst")
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(small_fs / "dst" / "big")


@pytest.mark.parametrize("driver", [d for d in DRIVERS if d != "vfs"])
def test_mount_failure_keeps_errno(tmp_path: Path, driver: str) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        box = g.create(g.register(tar_of({"f": "x"})))
        work = Path(g.root, "layers", box.id, "work")
        shutil.rmtree(work)
        with pytest.raises(lamina.DriverError) as e:
            box.mount()
        assert e.value.errno == errno.ENOENT
        assert e.value.filename == str(Path(g.root, "layers", box.id, "merged"))
        assert box.mount_count == 0
