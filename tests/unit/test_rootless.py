"""Rootless (issue 12): a user without root registers layers with what it
cannot apply — other owners, device nodes, setuid bits, file capabilities,
modes that lock the owner out — recorded in user xattrs; the layer's diff
is byte-exact and a diff computed from its tree says what the tar said.

The oracle is the layer tar itself, read with ``tarfile``. These tests do
their work as an unprivileged user: in the suite's ``nobody`` pass directly,
and as root through a child dropped to ``nobody`` with ``setpriv``."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

import lamina
from support.unprivileged import run_as_nobody, staging_dir

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


def _rootless_round_trip(root: str) -> None:
    """What runs as nobody: register, diff, export the tree, commit."""
    layer_tar = hostile_layer()
    with lamina.Graph(root, driver="vfs") as g:
        assert os.geteuid() != 0
        layer = g.register(layer_tar)
        assert layer.diff() == layer_tar  # byte-exact (tar-split)
        tree = Path(root, "layers", layer.id, "root")
        # A diff computed from the tree reads back what was recorded.
        exported = lamina.export_diff(None, tree)
        assert members(exported) == members(layer_tar)
        # A container: unchanged files are not in its commit, new ones are.
        box = g.create(layer)
        with box.mounted() as r:
            Path(r, "new").write_text("n\n")
        assert [c.path for c in box.changes()] == ["/", "/new"] or [
            c.path for c in box.changes()
        ] == ["/new"]
        img = g.commit(box)
        got = members(img.diff())
        assert set(got) <= {"new", ""} and "new" in got
        assert g.check()["problems"] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="the nobody pass runs it directly")
def test_rootless_register_diff_commit(tmp_path: Path) -> None:
    _rootless_round_trip(str(tmp_path / "s"))


@pytest.mark.skipif(os.geteuid() != 0, reason="root drops to nobody for it")
def test_rootless_as_nobody_from_root() -> None:
    # pytest's tmp_path sits under a 0700 directory of root's.
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "_rootless_round_trip", str(base / "s"))
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="a privileged apply")
def test_a_privileged_tree_keeps_record_xattrs_as_data(tmp_path: Path) -> None:
    """A tar may carry ``user.containers.override_stat`` itself: applied
    with privilege it is an xattr like any other, exported as it came."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("f")
        info.mode, info.uid, info.mtime = 0o644, 3, 1_700_000_000
        info.pax_headers = {"SCHILY.xattr.user.containers.override_stat": "5:5:4755"}
        t.addfile(info, io.BytesIO(b""))
    with lamina.Graph(str(tmp_path / "s"), driver="vfs") as g:
        layer = g.register(buf.getvalue())
        tree = tmp_path / "s" / "layers" / layer.id / "root"
        with tarfile.open(fileobj=io.BytesIO(lamina.export_diff(None, tree))) as t:
            m = t.getmember("f")
    assert (m.mode, m.uid) == (0o644, 3)
    assert m.pax_headers["SCHILY.xattr.user.containers.override_stat"] == "5:5:4755"
