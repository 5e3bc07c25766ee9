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
from support.rootless_layers import hostile_layer, members
from support.unprivileged import run_as_nobody, staging_dir


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
        # mount() hands out the tree itself, and says so.
        assert g.status()["mount"] == "directory"
        with box.mounted() as r:
            assert Path(r) == Path(root, "layers", box.id, "root").resolve()
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


def _auto_makes_rootless_overlay2(root: str) -> None:
    """What runs as nobody: a new store with driver="auto" is overlay2,
    mounted through the rootless helper, wherever that works here."""
    layer_tar = hostile_layer()
    with lamina.Graph(root, driver="auto") as g:
        assert os.geteuid() != 0
        assert g.driver == "overlay2", g.status()["mount"]
        s = g.status()
        assert s["mount"] == "kernel overlay in a user namespace (rootless helper)"
        # The probe speaks for the helper's mounts, as the driver does.
        plus = s["mount_api"].startswith("fsconfig")
        assert s["overlay_lowerdir_plus"] is plus, s
        layer = g.register(layer_tar)
        assert layer.diff() == layer_tar
        box = g.create(layer)
        with box.mounted() as r:
            helper = Path(r).parts[2]
            assert Path(r).parts[1] == "proc" and helper.isdigit(), r
            # The merged tree is the kernel's overlay in the helper's
            # namespace (not a copy): the mount is in its table.
            inside = "/" + str(Path(r).relative_to("/proc", helper, "root"))
            mounts = [
                (line.split()[4], line.split(" - ")[1].split()[0])
                for line in Path(f"/proc/{helper}/mountinfo").read_text().splitlines()
            ]
            assert (inside, "overlay") in mounts, mounts
            Path(r, "new").write_text("n\n")
        assert "/new" in [c.path for c in box.changes()]
        assert "new" in members(g.commit(box).diff())
    # The store keeps its driver when opened again with "auto".
    with lamina.Graph(root, driver="auto") as g:
        assert g.driver == "overlay2"
    assert not Path(f"/proc/{helper}").exists() or "lamina._helper" not in Path(
        f"/proc/{helper}/cmdline"
    ).read_bytes().decode(errors="replace")


@pytest.mark.skipif(os.geteuid() == 0, reason="the nobody pass runs it directly")
def test_auto_makes_rootless_overlay2(tmp_path: Path) -> None:
    _auto_makes_rootless_overlay2(str(tmp_path / "s"))


@pytest.mark.skipif(os.geteuid() != 0, reason="root drops to nobody for it")
def test_auto_makes_rootless_overlay2_as_nobody_from_root() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "_auto_makes_rootless_overlay2", str(base / "s"))
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
