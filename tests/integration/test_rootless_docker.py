"""Rootless (issue 12) on real layers: ``nobody`` registers the layers of an
image Docker built and saved — a Debian base with root-owned files, setuid
binaries and device-free /dev, then whiteouts, opaque directories and hard
links — and gets Docker's diff ids back byte for byte. The tree it could
not make exactly (owners, setuid bits, modes that lock it out) reads back,
through a diff computed from it, as the saved tar says."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import lamina
from support.docker_image import docker_saved_layers
from support.unprivileged import run_as_nobody, staging_dir


def _entries(tar: bytes) -> dict[str, tuple[object, ...]]:
    """Each member's kind and recorded metadata; a hard link counts as the
    regular file it names, since which name carries the data is the
    writer's choice."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            name = m.name.rstrip("/").removeprefix("./")
            kind = tarfile.REGTYPE if m.islnk() or m.type == tarfile.AREGTYPE else m.type
            out["" if name == "." else name] = (
                kind,
                m.mode,
                m.uid,
                m.gid,
                m.mtime,
                m.linkname if m.issym() else None,
                (m.devmajor, m.devminor) if m.ischr() or m.isblk() else None,
                {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")},
            )
    out.pop("", None)
    return out


def _register_saved(root: str, *tars: str) -> None:
    """What ``nobody`` runs."""
    assert os.geteuid() != 0
    with lamina.Graph(root, driver="vfs") as g:
        parent = None
        for tar in tars:
            data = Path(tar).read_bytes()
            layer = g.register(data, parent=parent)
            assert layer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
            assert layer.diff() == data, tar
            parent = layer
        base = parent.chain[0] if parent else None
        assert base is not None
        tree = Path(root, "layers", base.id, "root")
        got = _entries(lamina.export_diff(None, tree))
        want = _entries(Path(tars[0]).read_bytes())
        wrong = {
            k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
        }
        assert not wrong, sorted(wrong.items())[:10]
        assert g.check()["problems"] == []


def test_nobody_registers_docker_layers() -> None:
    saved = docker_saved_layers()
    base = staging_dir()
    try:
        tars = []
        for i, s in enumerate(saved):
            dst = base / f"layer{i}.tar"
            shutil.copyfile(s.tar, dst)
            dst.chmod(0o444)
            tars.append(str(dst))
        run_as_nobody(base, __file__, "_register_saved", str(base / "s"), *tars)
    finally:
        # nobody's store holds directories it made 0555 and files it made
        # 0000 for itself: root removes it regardless.
        shutil.rmtree(base)
