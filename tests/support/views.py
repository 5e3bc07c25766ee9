"""Manifests of merged views, comparable with manifests of mounted trees
(support/manifest.py): what ``layer.walk()`` reports must be what a mount
of the layer shows."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
from dataclasses import replace
from typing import Any

from support.manifest import Record, manifest


def walk_manifest(view: Any, path: str = "/", *, content: bool = True) -> dict[str, Record]:
    """The manifest of ``view.walk(path)`` (a Layer or a ``_merged_view``):
    hard links become files of one link group, as a tree's manifest has
    them; xattrs are not compared (an Entry has none)."""
    recs: dict[str, Record] = {}
    groups: dict[str, list[str]] = {}
    for e in view.walk(path):
        kind = "file" if e.type == "hardlink" else e.type
        data = view.read(e.path) if kind == "file" and content else None
        recs[e.path] = Record(
            type=kind,
            mode=e.mode,
            uid=e.uid,
            gid=e.gid,
            size=e.size if kind in ("file", "symlink") else None,
            rdev=(e.devmajor, e.devminor) if kind in ("char", "block") else None,
            mtime_ns=e.mtime_ns,
            atime_ns=None,
            linkname=e.linkname if kind == "symlink" else None,
            xattrs=(),
            link_group=None,
            sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
        )
        if e.type == "hardlink":
            groups.setdefault(e.linkname, [e.linkname]).append(e.path)
    for paths in groups.values():
        group = min(paths)
        for p in paths:
            recs[p] = replace(recs[p], link_group=group)
    return recs


OVERRIDE = "user.containers.override_stat"


def _override(path: str) -> tuple[int, int, int, str | None, tuple[int, int] | None] | None:
    try:
        v = os.getxattr(path, OVERRIDE, follow_symlinks=False).decode()
    except OSError:
        return None
    uid, gid, mode, *rest = v.split(":", 3)
    kind, rdev = None, None
    if rest:
        t = rest[0]
        for dev in ("char", "block"):
            if t.startswith(dev):
                kind, (major, minor) = dev, t[len(dev) :].split(":")
                rdev = (int(major), int(minor))
        if kind is None:
            kind = {"pipe": "fifo"}.get(t, t)
    return int(uid), int(gid), int(mode, 8), kind, rdev


def tree_manifest(root: str | os.PathLike[str], *, content: bool = True) -> dict[str, Record]:
    """The manifest of a mounted tree, without xattrs; a tree a rootless
    apply wrote (its root carries ``user.containers.override_stat`` and is
    not root's) as it records itself: the override's owner, mode and type,
    and the writer's own ids standing for root's (the containers/storage
    scheme, read here from the xattrs directly)."""
    root = os.fspath(root)
    m = {p: replace(r, xattrs=()) for p, r in manifest(root, content=content).items()}
    st = os.lstat(root)
    if _override(root) is None or st.st_uid == 0:
        return m
    writer = (st.st_uid, st.st_gid)
    for p, r in m.items():
        o = _override(os.path.join(root, p.lstrip("/")) if p != "/" else root)
        if o is None:
            uid = 0 if r.uid == writer[0] else r.uid
            gid = 0 if r.gid == writer[1] else r.gid
            m[p] = replace(r, uid=uid, gid=gid)
            continue
        uid, gid, mode, kind, rdev = o
        if kind in ("char", "block"):
            m[p] = replace(
                r, uid=uid, gid=gid, mode=mode, type=kind, rdev=rdev, size=None, sha256=None
            )
        else:
            m[p] = replace(r, uid=uid, gid=gid, mode=mode, type=kind or r.type)
    return m


def tar_paths(tar: str | os.PathLike[str] | bytes) -> tuple[set[str], set[str], set[str]]:
    """What a layer tar names, read with ``tarfile``: the paths it puts,
    the paths it whites out, and its opaque directories (all ``/a/b``)."""
    import io

    puts: set[str] = set()
    removes: set[str] = set()
    opaques: set[str] = set()
    kw: dict[str, Any] = {"fileobj": io.BytesIO(tar)} if isinstance(tar, bytes) else {"name": tar}
    with tarfile.open(**kw) as t:
        for m in t:
            p = posixpath.normpath("/" + m.name.lstrip("/"))
            head, name = posixpath.split(p)
            if any(c.startswith(".wh..wh.") for c in head.split("/")):
                continue
            if name == ".wh..wh..opq":
                opaques.add(head)
            elif name.startswith(".wh..wh."):
                continue
            elif name.startswith(".wh."):
                removes.add(posixpath.join(head, name[4:]))
            else:
                puts.add(p)
    return puts, removes, opaques
