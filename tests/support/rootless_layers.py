"""A layer with what a user without root cannot make — other owners,
device nodes, setuid bits, file capabilities, modes that lock the owner
out — and the metadata of a tar's members, to compare trees by."""

from __future__ import annotations

import io
import tarfile

CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep


def hostile_layer() -> bytes:
    """What a Debian base layer has that a user cannot make."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:

        def add(
            name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, **kw: object
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
            info.mtime = 1_700_000_000
            data = kw.pop("data", b"")
            assert isinstance(data, bytes)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

        add("dev", tarfile.DIRTYPE, 0o755)
        add("dev/full", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=7)
        add("dev/sda", tarfile.BLKTYPE, 0o660, gid=6, devmajor=8, devminor=0)
        add("usr", tarfile.DIRTYPE, 0o755)
        add("usr/bin", tarfile.DIRTYPE, 0o755)
        add("usr/bin/su", tarfile.REGTYPE, 0o4755, data=b"#!su\n")
        add(
            "usr/bin/ping",
            tarfile.REGTYPE,
            0o755,
            data=b"#!ping\n",
            pax_headers={"SCHILY.xattr.security.capability": CAP.decode("latin-1")},
        )
        add("etc", tarfile.DIRTYPE, 0o755)
        add("etc/shadow", tarfile.REGTYPE, 0o640, gid=42, data=b"root:*:\n")
        add("etc/locked", tarfile.REGTYPE, 0o000, data=b"nobody reads me\n")
        add("srv", tarfile.DIRTYPE, 0o555, uid=1001, gid=1001)
        add("srv/f", tarfile.REGTYPE, 0o444, uid=1001, gid=1001, data=b"f\n")
        add("tmp", tarfile.DIRTYPE, 0o1777)
    return buf.getvalue()


def members(tar: bytes) -> dict[str, tuple[object, ...]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            caps = m.pax_headers.get("SCHILY.xattr.security.capability")
            name = m.name.rstrip("/").removeprefix("./")
            out["" if name == "." else name] = (
                m.type,
                m.mode,
                m.uid,
                m.gid,
                (m.devmajor, m.devminor) if m.ischr() or m.isblk() else None,
                caps,
            )
    out.pop("", None)
    return out
