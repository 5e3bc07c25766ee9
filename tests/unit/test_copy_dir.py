"""copy_dir against the oracle ``cp -a --preserve=all``, as root and as an
unprivileged user (tests/run_unprivileged.sh runs this file as nobody)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

import lamina
from support.manifest import assert_same, identity, manifest

ROOT = os.geteuid() == 0
# Fixed mtimes in the past with odd nanoseconds, atimes an hour ahead: under
# relatime an atime moves on read only while it is <= mtime or <= ctime (and
# every copy's ctime is "now"), so future atimes stay put while the trees
# are read and compared.
MTIME_NS = 1_600_000_000_123_456_789


def _xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def _stamp(root: Path) -> None:
    """Give every path a distinct ns mtime, children before their parents."""
    atime = time.time_ns() + 3600 * 10**9
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, p in enumerate([*paths, root]):
        os.utime(p, ns=(atime + i, MTIME_NS + i * 1_000_003), follow_symlinks=False)


def make_tree(root: Path) -> None:
    """Every file type a user may create, holes, links, modes and xattrs."""
    root.mkdir()
    (root / "d/e/f").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "file").write_bytes(b"hello\n")
    (root / "empty").write_bytes(b"")
    (root / "d/big").write_bytes(os.urandom(300_000))
    with open(root / "d/sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"data in the middle")
        f.truncate(32 << 20)
    os.link(root / "file", root / "d/e/hardlink")
    os.link(root / "file", root / "d/e/f/hardlink2")
    os.symlink("../file", root / "d/rel-link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "dangling", root / "d/dangling-hardlink", follow_symlinks=False)
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "sock", 0o755 | stat.S_IFSOCK)
    modes = [("setuid", 0o4755), ("setgid", 0o2750), ("ro", 0o444), ("none", 0o000)]
    for name, _ in modes:
        (root / "d" / name).write_bytes(name.encode())
    (root / "d/sticky").mkdir()
    os.chmod(root / "d/sticky", 0o1777)
    for i in range(300):
        (root / "d/e/f" / f"n{i:03}").write_bytes(b"x" * i)
    if _xattrs_supported(root):
        os.setxattr(root / "file", "user.comment", b"a comment")
        os.setxattr(root / "d/ro", "user.on-read-only", b"\x00\x01binary")
        os.setxattr(root / "d", "user.dir", b"on a dir")
        os.setxattr(root / "d/e/f/n001", "user.big", os.urandom(4000))
        if shutil.which("setfacl"):
            acl = "u:12345:r-x,g:54321:rw-"
            subprocess.run(["setfacl", "-m", acl, str(root / "d/big")], check=True)
            subprocess.run(["setfacl", "-d", "-m", "u:12345:rwx", str(root / "d/e")], check=True)
    # After the xattrs: a user may not write user.* on a 0444 file.
    for name, mode in modes:
        os.chmod(root / "d" / name, mode)
    # An unreadable file can only be copied by root; the non-root copy of it
    # is the error test below.
    if not ROOT:
        os.chmod(root / "d/none", 0o600)
    os.chmod(root / "d/e", 0o555)
    _stamp(root)


@pytest.fixture
def tree(tmp_path: Path):
    src = tmp_path / "src"
    make_tree(src)
    yield src
    for p in tmp_path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, 0o755)


def cp_a(src: Path, dst: Path, *flags: str) -> None:
    subprocess.run(["cp", "-a", "--preserve=all", *flags, str(src), str(dst)], check=True)


def test_full_copy_matches_cp(tree: Path, tmp_path: Path) -> None:
    before = manifest(tree, atime=True)
    lamina.copy_dir(tree, tmp_path / "lamina")
    cp_a(tree, tmp_path / "cp")
    got = manifest(tmp_path / "lamina", atime=True)
    assert_same(got, manifest(tmp_path / "cp", atime=True))
    # Nothing of the source moved, atimes included (O_NOATIME reads).
    assert_same(before, manifest(tree, atime=True))
    assert_same(got, before)


def test_hardlink_copy(tree: Path, tmp_path: Path) -> None:
    before_ids = identity(tree)
    before = manifest(tree, atime=True)
    lamina.copy_dir(str(tree), str(tmp_path / "lamina"), hardlink=True)
    after_ids = identity(tree)
    after = manifest(tree, atime=True)
    # cp -l links symlinks and special files to the source too, where
    # lamina makes new ones (only regular files share data); the manifests
    # (which leave inode numbers out) are still the same.
    cp_a(tree, tmp_path / "cp", "-l")
    dst = tmp_path / "lamina"
    assert_same(manifest(dst, atime=True), manifest(tmp_path / "cp", atime=True))
    for rel, rec in manifest(dst, content=False).items():
        src_st = os.lstat(tree / rel.lstrip("/"))
        if rec.type == "file":
            assert rec.ino == src_st.st_ino, rel
        else:
            assert rec.ino != src_st.st_ino, rel
    # The source is untouched: same inodes, modes, owners, xattrs, times.
    # linkat(2) itself stamps the linked inode's ctime (cp -al's does too),
    # so regular files' ctimes are the one thing expected to move.
    assert_same(before, after)
    for rel, (ino, ctime, mode) in before_ids.items():
        if before[rel].type == "file":
            assert after_ids[rel][0::2] == (ino, mode), rel
        else:
            assert after_ids[rel] == (ino, ctime, mode), rel


def test_holes_stay_holes(tree: Path, tmp_path: Path) -> None:
    lamina.copy_dir(tree, tmp_path / "lamina")
    st = os.stat(tmp_path / "lamina/d/sparse")
    assert st.st_size == 32 << 20
    assert st.st_blocks * 512 <= os.stat(tree / "d/sparse").st_blocks * 512 + 64 * 1024


def test_dst_may_be_an_empty_dir(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    lamina.copy_dir(tree, dst)
    cp_a(tree, tmp_path / "cp")
    assert_same(manifest(dst), manifest(tmp_path / "cp"))


def test_dst_not_empty(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "x").write_bytes(b"")
    with pytest.raises(OSError) as e:
        lamina.copy_dir(tree, dst)
    assert e.value.errno == errno.ENOTEMPTY
    assert os.fspath(e.value.filename) == str(dst)


def test_missing_parent_names_dst(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "no/such/dir"
    with pytest.raises(FileNotFoundError) as e:
        lamina.copy_dir(tree, dst)
    assert os.fspath(e.value.filename) == str(dst)


def test_into_itself(tree: Path) -> None:
    with pytest.raises(ValueError):
        lamina.copy_dir(tree, tree / "d/inside")


@pytest.mark.skipif(ROOT, reason="root reads every file (CAP_DAC_OVERRIDE)")
def test_unreadable_file_fails_with_its_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a/ok").write_bytes(b"ok")
    (src / "a/secret").write_bytes(b"secret")
    os.chmod(src / "a/secret", 0)
    with pytest.raises(PermissionError) as e:
        lamina.copy_dir(src, tmp_path / "dst")
    assert e.value.errno == errno.EACCES
    assert os.fspath(e.value.filename) == str(src / "a/secret")
    assert not (tmp_path / "dst/a/secret").exists()


@pytest.mark.skipif(ROOT, reason="root may write anywhere")
def test_read_only_destination(tree: Path, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    os.chmod(parent, 0o555)
    with pytest.raises(PermissionError) as e:
        lamina.copy_dir(tree, parent / "dst")
    assert os.fspath(e.value.filename) == str(parent / "dst")


@pytest.mark.skipif(not ROOT, reason="only root may give files to other owners")
def test_owners_and_setuid_of_other_users(tree: Path, tmp_path: Path) -> None:
    for i, p in enumerate(sorted(tree.rglob("*"))):
        os.chown(p, 1000 + i % 7, 2000 + i % 5, follow_symlinks=False)
    for name, mode in [("setuid", 0o4755), ("setgid", 0o2750)]:
        os.chmod(tree / "d" / name, mode)  # chown cleared them
    _stamp(tree)
    lamina.copy_dir(tree, tmp_path / "lamina")
    cp_a(tree, tmp_path / "cp")
    assert_same(manifest(tmp_path / "lamina", atime=True), manifest(tmp_path / "cp", atime=True))
    assert os.stat(tmp_path / "lamina/d/setuid").st_mode & 0o7777 == 0o4755


@pytest.mark.skipif(ROOT, reason="needs an unprivileged caller")
def test_unprivileged_keeps_own_setuid(tree: Path, tmp_path: Path) -> None:
    lamina.copy_dir(tree, tmp_path / "lamina")
    assert os.stat(tmp_path / "lamina/d/setuid").st_mode & 0o7777 == 0o4755
