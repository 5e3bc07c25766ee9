"""Small layer tars and helpers for the graph tests."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lamina

DRIVERS = ("overlay", "overlay2", "vfs")


def tar_of(entries: dict[str, bytes | str | None], *, mtime: int = 1_700_000_000) -> bytes:
    """A PAX tar: a path ending in ``/`` is a directory, ``None`` a whiteout of
    that path, ``str`` a symlink target (``"->target"``) or file text."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            if data is None:
                head, _, tail = name.rpartition("/")
                info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
                info.mtime = mtime
                tar.addfile(info)
                continue
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = mtime
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(data, str) and data.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                raw = data.encode() if isinstance(data, str) else data
                info.size, info.mode = len(raw), 0o644
                tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


@contextmanager
def open_graph(root: Path, driver: str) -> Iterator[lamina.Graph]:
    """A graph that is closed (its mounts given back) whatever happens."""
    g = lamina.Graph(root, driver=driver)
    try:
        yield g
    finally:
        g.close()


@contextmanager
def scratch_vfs_graph() -> Iterator[lamina.Graph]:
    """A vfs graph in a temporary directory on /dev/shm where it is
    writable (heavy test trees stay off the slow root filesystem), removed
    after."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as d, lamina.Graph(Path(d, "s"), driver="vfs") as g:
        yield g
