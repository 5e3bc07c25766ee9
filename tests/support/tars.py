"""Building tars for tests: with Python's ``tarfile`` (real formats), or
block by block (``header``/``pax``/``member``) for archives no honest tool
writes: bad checksums, lying sizes, NUL bytes, overlay metadata.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

PRIVILEGED = os.geteuid() == 0


def pad(data: bytes) -> bytes:
    """``data`` padded to a whole number of 512-byte blocks."""
    return data + b"\0" * (-len(data) % 512)


def header(
    name: bytes,
    *,
    type: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_600_000_000,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    size_field: bytes | None = None,
    checksum_delta: int = 0,
) -> bytes:
    """One ustar header block (name up to 100 bytes)."""
    h = bytearray(512)
    h[0 : len(name[:100])] = name[:100]
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % uid
    h[116:124] = b"%07o\0" % gid
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[156:157] = type
    h[157 : 157 + len(linkname[:100])] = linkname[:100]
    h[257:265] = b"ustar\x0000"
    h[329:337] = b"%07o\0" % devmajor
    h[337:345] = b"%07o\0" % devminor
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % (sum(h) + checksum_delta)
    return bytes(h)


def pax(records: dict[bytes, bytes], *, type: bytes = b"x") -> bytes:
    """A PAX extended header (``x``) carrying ``records``."""
    data = b""
    for k, v in records.items():
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n = len(str(n)) + len(body)
        data += str(n).encode() + body
    return header(b"././@PaxHeader", type=type, size=len(data)) + pad(data)


def member(name: bytes, data: bytes = b"", **kw: object) -> bytes:
    """A header and its padded payload."""
    kw.setdefault("size", len(data))
    return header(name, **kw) + pad(data)  # type: ignore[arg-type]


def archive(*parts: bytes, end: bool = True) -> bytes:
    """Concatenated entries plus the two end-of-archive blocks."""
    return b"".join(parts) + (b"\0" * 1024 if end else b"")


def build(entries: list[dict], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar from entry dicts with ``tarfile``: ``name``, ``type`` (file,
    dir, symlink, link, fifo, char, block), ``data``, ``mode``, ``uid``,
    ``gid``, ``mtime``, ``linkname``, ``xattrs``, ``dev``."""
    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "link": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "char": tarfile.CHRTYPE,
        "block": tarfile.BLKTYPE,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = types[e.get("type", "file")]
            data = e.get("data", b"")
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            ti.mode = e.get("mode", 0o755 if ti.type == tarfile.DIRTYPE else 0o644)
            ti.uid = e.get("uid", 0)
            ti.gid = e.get("gid", 0)
            ti.mtime = e.get("mtime", 1_600_000_000)
            ti.linkname = e.get("linkname", "")
            if "dev" in e:
                ti.devmajor, ti.devminor = e["dev"]
            if "xattrs" in e:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def gnu_tar_extract(tar: Path, dst: Path) -> None:
    """The oracle: GNU tar, keeping everything it can for this user."""
    args = ["tar", "-p", "--xattrs", "--xattrs-include=*", "-xf", str(tar), "-C", str(dst)]
    if PRIVILEGED:
        args[1:1] = ["--same-owner", "--numeric-owner"]
    subprocess.run(args, check=True, capture_output=True)


def sha256_file(p: Path) -> str:
    """``sha256:<hex>`` of a file."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
