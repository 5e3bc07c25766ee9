"""Apply a layer tar with GNU tar plus whiteout post-processing.

The oracle beside ``lamina.apply_layer`` in the round-trip tests: GNU tar
extracts the diff, then this does what GNU tar does not: ``.wh.NAME`` removes
NAME, ``.wh..wh..opq`` empties its directory of everything the layer did not
bring.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from decimal import Decimal
from pathlib import Path

WH = ".wh."
OPQ = ".wh..wh..opq"


def _mtime_ns(m: tarfile.TarInfo) -> int:
    raw = m.pax_headers.get("mtime")
    if raw is not None:
        return int(Decimal(raw) * 1_000_000_000)
    return int(m.mtime) * 1_000_000_000


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def gnu_tar_apply(tar: bytes | str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Extract ``tar`` onto ``dst`` with GNU tar, then apply its whiteouts."""
    dst = Path(dst)
    data = tar if isinstance(tar, bytes) else Path(tar).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    # OCI: a non-directory entry replaces a directory; GNU tar refuses to.
    for m in members:
        p = dst / m.name.removeprefix("./")
        if not m.isdir() and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    cmd = [
        "tar",
        "-x",
        "-p",
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-C",
        str(dst),
        "-f",
        "-",
    ]
    if os.geteuid() == 0:
        cmd.insert(2, "--same-owner")
    subprocess.run(cmd, input=data, check=True)

    names = {m.name.rstrip("/").removeprefix("./") for m in members}
    for m in members:
        name = m.name.rstrip("/").removeprefix("./")
        parent, _, base = name.rpartition("/")
        pdir = dst / parent if parent else dst
        if base == OPQ:
            for child in os.listdir(pdir):
                rel = f"{parent}/{child}" if parent else child
                if rel not in names:
                    _rm(pdir / child)
            (pdir / base).unlink()
        elif base.startswith(WH):
            _rm(pdir / base[len(WH) :])
            (pdir / base).unlink()
    # Removing entries moved the directories' mtimes: put back the tar's.
    for m in members:
        if m.isdir():
            name = m.name.rstrip("/")
            name = "" if name in ("", ".") else name.removeprefix("./")
            p = dst / name if name else dst
            ns = _mtime_ns(m)
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
