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
import subprocess
import sys
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


def _raw_tree(tree: Path) -> dict[str, tuple[object, ...]]:
    """Mode, type and every xattr of each inode: what a store keeps on disk."""
    out: dict[str, tuple[object, ...]] = {}
    for p in [tree, *sorted(tree.rglob("*"))]:
        st = p.lstat()
        names = [] if p.is_symlink() else sorted(os.listxattr(p, follow_symlinks=False))
        out[str(p.relative_to(tree))] = (
            st.st_mode,
            tuple((n, os.getxattr(p, n, follow_symlinks=False)) for n in names),
        )
    return out


def _in_unshare(root: str, outside_id: str) -> None:
    """Inside ``lamina unshare``: root of a user namespace that maps only the
    caller's ids applies as the caller does outside it, never as root."""
    layer_tar = hostile_layer()
    assert os.geteuid() == 0 and Path("/proc/self/uid_map").read_text().split()[2] == "1"
    for driver, tree in [("vfs", "root"), ("overlay2", "diff")]:
        with lamina.Graph(f"{root}/{driver}", driver=driver) as g:
            layer = g.register(layer_tar)
            assert layer.diff() == layer_tar
            inside = Path(root, driver, "layers", layer.id, tree)
            assert members(lamina.export_diff(None, inside)) == members(layer_tar)
            # The layer the same user registered outside: the same tree.
            outside = Path(root, driver, "layers", outside_id, tree)
            a, b = _raw_tree(inside), _raw_tree(outside)
            differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            assert not differ, {k: (a.get(k), b.get(k)) for k in differ}
            assert g.check()["problems"] == []


def _rootless_then_unshare(root: str) -> None:
    """What runs as nobody: register outside, then again inside."""
    ids = set()
    for driver in ["vfs", "overlay2"]:
        with lamina.Graph(f"{root}/{driver}", driver=driver) as g:
            # A second layer of the same tar outside: the one inside must
            # be made anew, not found.
            ids.add(g.register(hostile_layer() + b"\0" * 1024).id)
    (outside_id,) = ids
    # This module, loaded by path: it is ``nobody_case`` when staged by
    # run_as_nobody and ``test_rootless`` in the nobody pass.
    here = Path(__file__).resolve()
    code = (
        f"import importlib.util, sys; sys.path[:0] = [{str(here.parent)!r}, "
        f"{str(here.parent.parent)!r}]; "
        f"s = importlib.util.spec_from_file_location('case', {str(here)!r}); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        f"m._in_unshare({root!r}, {outside_id!r})"
    )
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "unshare", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="root drops to nobody for it")
def test_a_layer_applied_in_lamina_unshare_is_the_one_applied_outside() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "_rootless_then_unshare", str(base / "s"))
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() == 0, reason="the nobody pass runs it directly")
def test_a_layer_applied_in_lamina_unshare_is_the_one_applied_outside_nobody(
    tmp_path: Path,
) -> None:
    _rootless_then_unshare(str(tmp_path / "s"))
