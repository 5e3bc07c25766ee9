"""Tree manifests: everything about a tree that a lossless copy or apply keeps.

A manifest maps each path (relative, ``/``-rooted) to a record of its type,
mode, owner, size, rdev, times to the nanosecond, link target, every xattr,
hard-link group and content hash. Tests compare manifests made by lamina with
manifests made by an oracle (``cp -a``, GNU tar, ``tarfile``), so the
expectation is never written by hand.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class Record:
    """What a manifest keeps of one path."""

    type: str
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int | None  # regular files and symlinks only (a dir's size is the fs's business)
    rdev: tuple[int, int] | None
    mtime_ns: int | None  # None for symlinks unless asked (see manifest(symlink_times=))
    atime_ns: int | None
    linkname: str | None
    xattrs: tuple[tuple[str, bytes], ...]
    link_group: (
        str | None
    )  # smallest path of its hard-link group (files with nlink > 1 in the tree)
    sha256: str | None
    # Identity, for "nothing changed" checks; not compared by default.
    ino: int = field(default=0, compare=False)
    ctime_ns: int = field(default=0, compare=False)


def _xattrs(path: str, skip: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        if any(n.startswith(p) for p in skip):
            continue
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest(
    root: str | os.PathLike[str],
    *,
    atime: bool = False,
    dir_times: bool = True,
    symlink_times: bool = True,
    content: bool = True,
    skip_xattrs: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> dict[str, Record]:
    """The manifest of the tree under ``root`` (the root itself is ``/``).

    ``atime`` is off by default because reading a tree moves atimes under
    relatime; ``exclude`` drops paths (and everything below them).
    """
    root = os.fspath(root)
    skip = tuple(skip_xattrs)
    excluded = set(exclude)
    recs: dict[str, Record] = {}
    inodes: dict[tuple[int, int], list[str]] = {}

    def visit(rel: str, full: str) -> None:
        st = os.lstat(full)
        kind = TYPES[stat.S_IFMT(st.st_mode)]
        times = kind != "symlink" or symlink_times
        if kind == "dir" and not dir_times:
            times = False
        recs[rel] = Record(
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind in ("file", "symlink") else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind in ("char", "block")
            else None,
            mtime_ns=st.st_mtime_ns if times else None,
            atime_ns=st.st_atime_ns if times and atime else None,
            linkname=os.readlink(full) if kind == "symlink" else None,
            xattrs=_xattrs(full, skip),
            link_group=None,
            sha256=_sha256(full) if kind == "file" and content else None,
            ino=st.st_ino,
            ctime_ns=st.st_ctime_ns,
        )
        if kind != "dir" and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        if kind == "dir":
            with os.scandir(full) as it:
                names = sorted(e.name for e in it)
            for name in names:
                child = f"{rel.rstrip('/')}/{name}"
                if child in excluded:
                    continue
                visit(child, os.path.join(full, name))

    visit("/", root)
    for paths in inodes.values():
        if len(paths) > 1:
            group = min(paths)
            for p in paths:
                recs[p] = replace(recs[p], link_group=group)
    return recs


def diff(a: dict[str, Record], b: dict[str, Record], *, limit: int = 40) -> list[str]:
    """Human-readable differences between two manifests (empty when equal)."""
    out: list[str] = []
    for p in sorted(a.keys() - b.keys()):
        out.append(f"only in first: {p}")
    for p in sorted(b.keys() - a.keys()):
        out.append(f"only in second: {p}")
    for p in sorted(a.keys() & b.keys()):
        ra, rb = a[p], b[p]
        if ra != rb:
            fields = [
                f"{f}: {getattr(ra, f)!r} != {getattr(rb, f)!r}"
                for f in Record.__dataclass_fields__
                if Record.__dataclass_fields__[f].compare and getattr(ra, f) != getattr(rb, f)
            ]
            out.append(f"{p}: " + "; ".join(fields))
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more"]
    return out


def assert_same(a: dict[str, Record], b: dict[str, Record]) -> None:
    """Fail with the differences listed when two manifests differ."""
    d = diff(a, b)
    assert not d, "manifests differ:\n  " + "\n  ".join(d)


def identity(root: str | os.PathLike[str]) -> dict[str, tuple[int, int, int]]:
    """(inode, ctime_ns, nlink-free mode) of every path: changes whenever any
    chown, chmod, xattr, utimes or write touches an inode."""
    m = manifest(root, content=False)
    return {p: (r.ino, r.ctime_ns, r.mode) for p, r in m.items()}


def type_of(mode: int) -> str:
    """The manifest type name of a ``st_mode``."""
    return TYPES[stat.S_IFMT(mode)]


def files_under(root: Path) -> list[Path]:
    """Every path under ``root`` (not following symlinks), sorted."""
    return sorted(p for p in root.rglob("*"))
