"""The native diff of a real overlayfs upper dir.

A real overlay is mounted (lower, upper, work on the suite's tmpfs), changed
through the merged view — write, delete, ``rm -rf`` + recreate (opaque),
chmod, chown, rename, xattrs — and snapshotted with ``cp -a`` before the
unmount. Oracles: ``upper_changes(upper, lower)`` equals the naive
``changes(lower, snapshot)``, and the upper-dir tar applied onto a copy of
lower gives the snapshot's manifest.

Run with ``bash tests/run_integration.sh tests/integration/test_upper_diff.py``
(root, private mount namespace).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support.export_trees import build_parent, cp_a
from support.gnu_tar_apply import gnu_tar_apply
from support.manifest import assert_same, manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")

# redirect_dir and metacopy put data outside the upper dir (lamina refuses
# them); index=off keeps copy-up from needing an index dir.
OPTS = "redirect_dir=off,metacopy=off,index=off"


class Overlay:
    def __init__(self, base: Path) -> None:
        self.lower, self.upper = base / "lower", base / "upper"
        self.work, self.merged = base / "work", base / "merged"
        for d in (self.upper, self.work, self.merged):
            d.mkdir()
        self.mounted = False

    def mount(self) -> None:
        opts = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work},{OPTS}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)], check=True
        )
        self.mounted = True

    def umount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.merged)], check=True)
            self.mounted = False


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Overlay]:
    ov = Overlay(tmp_path)
    build_parent(ov.lower)
    ov.mount()
    try:
        yield ov
    finally:
        ov.umount()


def change_through_merged(m: Path) -> None:
    (m / "etc/passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    (m / "etc/hosts").unlink()
    (m / "etc/new.conf").write_text("new")
    shutil.rmtree(m / "var/cache/apt")  # rm -rf and recreate: opaque
    (m / "var/cache/apt").mkdir()
    (m / "var/cache/apt/fresh.deb").write_text("fresh")
    (m / "usr/bin/tool").chmod(0o700)
    os.chown(m / "etc/group", 1000, 1000)
    os.rename(m / "data/same", m / "data/renamed")
    subprocess.run(["mv", str(m / "srv"), str(m / "srv2")], check=True)  # dir: EXDEV, copy
    os.setxattr(m / "home/user/notes", "user.origin", b"merged", follow_symlinks=False)
    (m / "newdir/sub").mkdir(parents=True)
    (m / "newdir/sub/f").write_text("f")
    os.symlink("../etc/passwd", m / "newdir/link")
    os.link(m / "newdir/sub/f", m / "newdir/hard")
    os.mkfifo(m / "run/fifo2")
    (m / "opt").unlink()
    (m / "opt").mkdir()  # a file replaced by a directory: opaque too


def test_upper_changes_equal_naive_changes(overlay: Overlay, tmp_path: Path) -> None:
    change_through_merged(overlay.merged)
    snap = tmp_path / "snap"
    cp_a(overlay.merged, snap)
    overlay.umount()

    got = [(c.path, c.kind) for c in lamina.upper_changes(overlay.upper, overlay.lower)]
    want = [(c.path, c.kind) for c in lamina.changes(overlay.lower, snap)]
    assert got == want
    kinds = dict(got)
    assert kinds["/etc/hosts"] == "D" and kinds["/var/cache/apt/fresh.deb"] == "A"
    assert kinds["/srv"] == "D" and kinds["/srv2"] == "A"


def test_upper_diff_round_trip(overlay: Overlay, tmp_path: Path) -> None:
    """Applied with GNU tar + whiteouts until lamina.apply_layer is merged."""
    change_through_merged(overlay.merged)
    snap = tmp_path / "snap"
    cp_a(overlay.merged, snap)
    overlay.umount()

    data = lamina.export_upper_diff(overlay.upper, overlay.lower)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        pax_keys = {k for m in tf.getmembers() for k in m.pax_headers}
    assert "var/cache/apt/.wh..wh..opq" in names
    assert "etc/.wh.hosts" in names
    assert not any("trusted.overlay" in k for k in pax_keys)
    assert data == lamina.export_upper_diff(overlay.upper, overlay.lower)

    # lamina's own apply, and GNU tar plus whiteout handling as the oracle.
    for name, apply in (("lamina", lambda d, t: lamina.apply_layer(t, d)), ("gnu", gnu_tar_apply)):
        target = tmp_path / f"target-{name}"
        cp_a(overlay.lower, target)
        apply(data, target)
        assert_same(manifest(target), manifest(snap))


def test_untouched_lower_is_not_reported(overlay: Overlay) -> None:
    """Only what the upper dir holds is reported, however big the lower
    (the cost side is measured in bench/bench_export.py)."""
    (overlay.merged / "etc/passwd").write_text("x")
    overlay.umount()
    for i in range(5_000):
        (overlay.lower / "data" / f"f{i}").touch()
    got = [(c.path, c.kind) for c in lamina.upper_changes(overlay.upper, overlay.lower)]
    assert got == [("/etc", "C"), ("/etc/passwd", "C")]


def test_whiteout_named_upper_file_is_refused(overlay: Overlay) -> None:
    overlay.umount()
    (overlay.upper / ".wh.passwd").write_text("")
    with pytest.raises(lamina.UnsafeArchive):
        lamina.upper_changes(overlay.upper, overlay.lower)
    with pytest.raises(lamina.UnsafeArchive):
        lamina.export_upper_diff(overlay.upper, overlay.lower)


@pytest.mark.parametrize("key", ["trusted.overlay.redirect", "trusted.overlay.metacopy"])
def test_redirect_and_metacopy_are_refused(overlay: Overlay, key: str) -> None:
    overlay.umount()
    target = overlay.upper / ("d" if key.endswith("redirect") else "f")
    if key.endswith("redirect"):
        target.mkdir()
    else:
        target.write_text("")
    os.setxattr(target, key, b"/elsewhere" if key.endswith("redirect") else b"")
    with pytest.raises(ValueError, match=r"redirect|metacopy"):
        lamina.upper_changes(overlay.upper, overlay.lower)


def test_whiteout_inside_opaque_dir(overlay: Overlay) -> None:
    """A 0/0 device under an opaque directory is a whiteout too, never a
    device entry; a real .wh.* name there is refused like anywhere else."""
    overlay.umount()
    d = overlay.upper / "etc"
    d.mkdir()
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    os.mknod(d / "passwd", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (d / "kept").write_text("kept")
    kinds = dict((c.path, c.kind) for c in lamina.upper_changes(overlay.upper, overlay.lower))
    assert kinds["/etc/passwd"] == "D" and kinds["/etc/kept"] == "A"
    data = lamina.export_upper_diff(overlay.upper, overlay.lower)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert names == [".", "etc", "etc/.wh..wh..opq", "etc/kept"]
    (d / ".wh.sneaky").write_text("")
    with pytest.raises(lamina.UnsafeArchive):
        lamina.upper_changes(overlay.upper, overlay.lower)
