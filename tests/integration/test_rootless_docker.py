"""Rootless (issue 12) on real layers: ``nobody`` registers the layers of an
image Docker built and saved — a Debian base with root-owned files, setuid
binaries and device-free /dev, then whiteouts, opaque directories and hard
links — and gets Docker's diff ids back byte for byte. The tree it could
not make exactly (owners, setuid bits, modes that lock it out) reads back,
through a diff computed from it, as the saved tar says."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import lamina
from support.docker_image import INIT_PATHS, docker_saved_layers
from support.images import real_image
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
                m.mode & 0o7777,  # `docker export` writes the type bits too
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


def _load_and_save(root: str, archive: str, exported: str, out: str, *diff_ids: str) -> None:
    """What ``nobody`` runs: load Docker's archive, save it back."""
    assert os.geteuid() != 0
    with lamina.Graph(root, driver="vfs") as g:
        (img,) = g.load(archive)
        assert [lay.diff_id for lay in img.layer.chain] == list(diff_ids)
        # The merged tree reads as `docker export` of a container of it,
        # file capabilities and owners included, but for what `docker
        # create` adds and the times of directories it added them to.
        tree = Path(root, "layers", img.layer.id, "root")
        got = _entries(lamina.export_diff(None, tree))
        want = _entries(Path(exported).read_bytes())
        init = tuple(p.lstrip("/") for p in INIT_PATHS)

        def comparable(entries: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
            return {
                k: v[:4] + v[5:] if v[0] == tarfile.DIRTYPE else v
                for k, v in entries.items()
                if not any(k == p or k.startswith(p + "/") for p in init)
            }

        got, want = comparable(got), comparable(want)
        wrong = {
            k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
        }
        assert not wrong, sorted(wrong.items())[:10]
        g.save(img, out, format="docker-archive", compression=None)
    # Each saved layer is the tar Docker hashed: its digest is the diff id.
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        saved = []
        for name in manifest[0]["Layers"]:
            f = t.extractfile(name)
            assert f is not None
            saved.append("sha256:" + hashlib.sha256(f.read()).hexdigest())
    assert saved == list(diff_ids)


def test_nobody_loads_and_saves_a_real_image() -> None:
    image = real_image()
    base = staging_dir()
    try:
        for src, dst in ((image.docker_save, "image.tar"), (image.exported, "exported.tar")):
            shutil.copyfile(src, base / dst)
            (base / dst).chmod(0o444)
        run_as_nobody(
            base,
            __file__,
            "_load_and_save",
            str(base / "s"),
            str(base / "image.tar"),
            str(base / "exported.tar"),
            str(base / "saved.tar"),
            *image.diff_ids(),
        )
    finally:
        shutil.rmtree(base)
