"""lamina.apply_layer against GNU tar: the same tar, applied by both, must
give the same tree (manifests compared, nothing hand-written)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import lamina
from lamina import _lamina
from support import manifest as mf
from support.tars import PRIVILEGED, build, gnu_tar_extract

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
LONG = "d" * 60 + "/" + "e" * 80 + "/" + "f" * 90  # over 100 and over 155 + 100


def tree(fmt: str) -> list[dict]:
    owner = {"uid": 1234, "gid": 4321} if PRIVILEGED else {}
    es: list[dict] = [
        {"name": ".", "type": "dir", "mode": 0o755},
        {"name": "etc", "type": "dir", "mode": 0o755, **owner},
        {"name": "etc/passwd", "data": b"root:x:0:0\n", "mode": 0o644},
        {"name": "etc/shadow", "data": b"secret\n", "mode": 0o640, **owner},
        {"name": "bin", "type": "dir", "mode": 0o755},
        {"name": "bin/su", "data": b"\x7fELF" * 100, "mode": 0o4755},
        {"name": "bin/sg", "data": b"x", "mode": 0o2711, **owner},
        {"name": "bin/sh", "type": "symlink", "linkname": "dash"},
        {"name": "bin/dash", "data": b"dash" * 3000, "mode": 0o755},
        {"name": "bin/rbash", "type": "link", "linkname": "bin/dash"},
        {"name": "tmp", "type": "dir", "mode": 0o1777},
        {"name": "var", "type": "dir"},
        {"name": "var/run", "type": "symlink", "linkname": "/run"},
        {"name": "run", "type": "dir", "mode": 0o755},
        {"name": "run/fifo", "type": "fifo", "mode": 0o600},
        {"name": "private", "type": "dir", "mode": 0o700},
        {"name": "private/f", "data": b"", "mode": 0o000 if PRIVILEGED else 0o400},
        {"name": "empty", "data": b""},
        {"name": "big", "data": os.urandom(3 << 20)},
        {"name": "odd", "data": b"y" * 513, "mtime": 0},
        {"name": "old", "data": b"z", "mtime": 315532800},
        {"name": "ro", "type": "dir", "mode": 0o555},
        {"name": "ro/inside", "data": b"written after its dir"},
    ]
    if fmt != "ustar":
        es += [
            {"name": LONG.split("/")[0], "type": "dir"},
            {"name": "/".join(LONG.split("/")[:2]), "type": "dir"},
            {"name": LONG, "type": "dir"},
            {"name": LONG + "/" + "g" * 120, "data": b"long"},
            {"name": "lnk-" + "h" * 120, "type": "symlink", "linkname": "t" * 150},
            {"name": "hl-" + "i" * 120, "type": "link", "linkname": LONG + "/" + "g" * 120},
        ]
    if fmt == "pax":
        es += [
            {"name": "ns", "data": b"ns", "mtime": 1_600_000_000.123456789},
            {"name": "xa", "data": b"x", "xattrs": {"user.comment": "hello", "user.bin": "\u00e9"}},
            {"name": "x\u00e9\u4e2d", "data": b"utf8"},
            # A pax record's length, not a newline, ends it (GNU tar, Go,
            # tarfile); the tar crate splits on newlines (fuzz/reader.rs).
            {"name": "nl-" + "j" * 100 + "\n\x01 \n 2", "data": b"newline in a pax path"},
            {"name": "nl-link", "type": "symlink", "linkname": "t\n" * 60},
        ]
    if PRIVILEGED:
        es += [
            {"name": "dev", "type": "dir"},
            {"name": "dev/null", "type": "char", "dev": (1, 3), "mode": 0o666},
            {"name": "dev/loop0", "type": "block", "dev": (7, 0), "mode": 0o660, "gid": 6},
        ]
    return es


def apply_both(tmp_path: Path, tars: list[bytes]) -> tuple[Path, Path]:
    ours, theirs = tmp_path / "lamina", tmp_path / "gnu"
    ours.mkdir()
    theirs.mkdir()
    for i, t in enumerate(tars):
        p = tmp_path / f"layer{i}.tar"
        p.write_bytes(t)
        gnu_tar_extract(p, theirs)
        n = lamina.apply_layer(ours, p)
        assert n == len(t)
    return ours, theirs


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_tree_as_gnu_tar(tmp_path: Path, fmt: str) -> None:
    data = build(tree(fmt), FORMATS[fmt])
    ours, theirs = apply_both(tmp_path, [data])
    mf.assert_same(mf.manifest(ours), mf.manifest(theirs))


def test_umask_does_not_apply(tmp_path: Path) -> None:
    data = build(tree("pax"), tarfile.PAX_FORMAT)
    old = os.umask(0o077)
    try:
        ours, theirs = tmp_path / "lamina", tmp_path / "gnu"
        ours.mkdir()
        lamina.apply_layer(ours, data)
    finally:
        os.umask(old)
    theirs.mkdir()
    (tmp_path / "l.tar").write_bytes(data)
    gnu_tar_extract(tmp_path / "l.tar", theirs)
    mf.assert_same(mf.manifest(ours), mf.manifest(theirs))


def test_old_style_directory_entries(tmp_path: Path) -> None:
    """A NUL-typed entry whose name ends in a slash is a directory (V7-era
    tars; Go's archive/tar and tarfile read it so too)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        t.addfile(root)
        old = tarfile.TarInfo("old/")
        old.type, old.mode, old.mtime = tarfile.AREGTYPE, 0o750, 1_500_000_000
        t.addfile(old)
        t.addfile(tarfile.TarInfo("old/f"), io.BytesIO(b""))
    data = buf.getvalue()
    assert data[512 + 156 : 512 + 157] == b"\0" and data[512 : 512 + 4] == b"old/"
    ours, theirs = apply_both(tmp_path, [data])
    assert (ours / "old").is_dir()
    mf.assert_same(mf.manifest(ours), mf.manifest(theirs))


def test_replace_rules_and_duplicates(tmp_path: Path) -> None:
    lower = build(
        [
            {"name": "a", "data": b"file"},
            {"name": "b", "type": "dir"},
            {"name": "b/inner", "data": b"x"},
            {"name": "c", "type": "symlink", "linkname": "/nowhere"},
            {"name": "d", "type": "dir", "mode": 0o700},
            {"name": "d/keep", "data": b"k"},
            {"name": "e", "data": b"e"},
        ]
    )
    upper = build(
        [
            {"name": ".", "type": "dir"},
            {"name": "a", "type": "dir", "mode": 0o750},  # dir replaces file
            {"name": "c", "data": b"now a file"},  # file replaces symlink
            {"name": "d", "type": "dir", "mode": 0o755, "mtime": 1_500_000_000},  # merge
            {"name": "d/new", "data": b"n"},
            {"name": "dup", "data": b"first"},
            {"name": "dup", "data": b"second, longer"},  # last wins
            {"name": "dup2", "type": "symlink", "linkname": "x"},
            {"name": "dup2", "data": b"file wins"},
            {"name": "e", "type": "symlink", "linkname": "a"},
        ]
    )
    ours, theirs = apply_both(tmp_path, [lower, upper])
    # GNU tar refuses a file over a non-empty dir; that case is checked alone.
    mf.assert_same(mf.manifest(ours), mf.manifest(theirs))


def test_handed_over_files_meet_later_entries(tmp_path: Path) -> None:
    """Small new files in directories the layer made are created by the
    writer thread; later entries that name one of them (a duplicate, a dir
    or symlink in its place, a hard link to it, a path through it) must
    see it exactly as if it had been made in order."""
    many = [{"name": f"n/f{i:03}", "data": bytes([i]) * (i % 300)} for i in range(200)]
    entries = [
        {"name": ".", "type": "dir"},
        {"name": "n", "type": "dir"},
        *many,
        {"name": "n/f003", "data": b"last one wins"},
        {"name": "n/f190", "data": b"last one wins too"},
        {"name": "n/f004", "type": "dir", "mode": 0o750},
        {"name": "n/f004/inside", "data": b"x"},
        {"name": "n/f195", "type": "symlink", "linkname": "f003"},
        {"name": "n/link", "type": "link", "linkname": "n/f196"},
        {"name": "toplink", "type": "link", "linkname": "n/f197"},
        {"name": "o", "type": "dir"},
        *[{"name": f"o/g{i:03}", "data": b"g" * i} for i in range(100)],
        {"name": "o/g099", "data": b"replaced right after"},
    ]
    ours, theirs = apply_both(tmp_path, [build(entries)])
    mf.assert_same(mf.manifest(ours), mf.manifest(theirs))
    assert (ours / "n/link").stat().st_ino == (ours / "n/f196").stat().st_ino


def test_whiteout_of_a_handed_over_file(tmp_path: Path) -> None:
    dst = tmp_path / "d"
    dst.mkdir()
    names = [f"n/f{i:03}" for i in range(100)]
    entries = [{"name": "n", "type": "dir"}, *[{"name": n, "data": b"x"} for n in names]]
    lamina.apply_layer(dst, build([*entries, {"name": "n/.wh.f050"}, {"name": "n/.wh.f099"}]))
    left = sorted(p.name for p in (dst / "n").iterdir())
    assert left == sorted(n.split("/")[1] for n in names if n not in ("n/f050", "n/f099"))


def test_file_onto_directory_removes_it(tmp_path: Path) -> None:
    dst = tmp_path / "d"
    dst.mkdir()
    lamina.apply_layer(dst, build([{"name": "b", "type": "dir"}, {"name": "b/c/d", "data": b"x"}]))
    lamina.apply_layer(dst, build([{"name": "b", "data": b"file now"}]))
    assert (dst / "b").read_bytes() == b"file now"


def test_sources_and_compression(tmp_path: Path) -> None:
    data = build(tree("gnu"), tarfile.GNU_FORMAT)
    want = mf.manifest(apply_both(tmp_path, [data])[1])
    variants: dict[str, object] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "fileobj": io.BytesIO(data),
        "gzip-path": gzip.compress(data),
        "gzip-fileobj": io.BytesIO(gzip.compress(data)),
    }
    if shutil.which("zstd"):
        variants["zstd"] = subprocess.run(
            ["zstd", "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    for name, src in variants.items():
        dst = tmp_path / name
        dst.mkdir()
        if name.endswith("path"):
            p = tmp_path / f"{name}.bin"
            assert isinstance(src, bytes)
            p.write_bytes(src)
            src = str(p)
        n, diff_id, _ = _lamina._apply_layer_report(dst, src)
        assert n == len(data)
        assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
        mf.assert_same(mf.manifest(dst), want)


def test_fileobj_errors_propagate(tmp_path: Path) -> None:
    class Boom(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lamina.apply_layer(tmp_path, Boom())


def test_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(lamina.ArchiveError):
        lamina.apply_layer(tmp_path, b"not a tar at all" * 64)
    with pytest.raises(FileNotFoundError):
        lamina.apply_layer(tmp_path, tmp_path / "missing.tar")
    with pytest.raises(TypeError):
        lamina.apply_layer(tmp_path, 42)  # type: ignore[arg-type]
    good = build([{"name": "f", "data": os.urandom(100_000)}])
    with pytest.raises(lamina.ArchiveError, match="corrupt compressed layer"):
        lamina.apply_layer(tmp_path, gzip.compress(good)[:-2000])
    with pytest.raises(lamina.ArchiveError, match="not supported"):
        lamina.apply_layer(tmp_path, b"BZh91AY&SY" + b"\0" * 600)
