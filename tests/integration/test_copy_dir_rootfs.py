"""copy_dir as root against ``cp -a --preserve=all``: a real Debian rootfs
(debootstrap minbase) and a synthetic tree with every file type, device
nodes, capabilities, ACLs, trusted xattrs and holes. Runs in the test
container (tests/run_integration.sh), with TMPDIR on a private tmpfs."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import lamina
from support.manifest import assert_same, identity, manifest
from support.rootfs import debian_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (devices, owners, trusted.*)")

# setcap-style security.capability (VFS_CAP_REVISION_2): cap_net_raw+ep.
CAP_NET_RAW_EP = bytes.fromhex("0100000200200000000000000000000000000000")


def cp_a(src: Path, dst: Path, *flags: str) -> None:
    subprocess.run(["cp", "-a", "--preserve=all", *flags, str(src), str(dst)], check=True)


def everything_tree(root: Path) -> None:
    root.mkdir()
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev/sda", 0o660 | stat.S_IFBLK, os.makedev(8, 0))
    os.chown(root / "dev/sda", 0, 6)
    os.mkfifo(root / "fifo", 0o600)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "bound.sock"))
    (root / "bin").mkdir()
    for name, mode, owner in [
        ("su", 0o4755, (0, 0)),
        ("wall", 0o2755, (0, 5)),
        ("user-suid", 0o4750, (1000, 1000)),
    ]:
        (root / "bin" / name).write_bytes(os.urandom(5000))
        os.chown(root / "bin" / name, *owner)
        os.chmod(root / "bin" / name, mode)
    (root / "bin/ping").write_bytes(b"\x7fELF ping")
    os.chmod(root / "bin/ping", 0o755)
    os.setxattr(root / "bin/ping", "security.capability", CAP_NET_RAW_EP)
    with open(root / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(100 << 20)
        f.write(b"tail")
    with open(root / "all-hole", "wb") as f:
        f.truncate(1 << 30)
    (root / "upper/dir").mkdir(parents=True)
    os.setxattr(root / "upper/dir", "trusted.overlay.opaque", b"y")
    os.mknod(root / "upper/whiteout", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(root / "upper", "trusted.overlay.origin", os.urandom(40))
    (root / "etc").mkdir()
    (root / "etc/shadow").write_bytes(b"root:*:1:0:99999:7:::\n")
    os.chown(root / "etc/shadow", 0, 42)
    os.chmod(root / "etc/shadow", 0o640)
    os.setxattr(root / "etc/shadow", "user.note", b"x" * 3000)
    acl = "u:1000:rw-,g:100:r--,m::rw-"
    subprocess.run(["setfacl", "-m", acl, str(root / "etc/shadow")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1000:rwx", str(root / "etc")], check=True)
    for i in range(3):
        os.link(root / "bin/su", root / f"bin/su-link{i}")
    os.link(root / "fifo", root / "etc/fifo-link")
    os.link(root / "dev/null", root / "dev/null-link")
    os.symlink("../bin/su", root / "etc/su-symlink")
    os.link(root / "etc/su-symlink", root / "etc/symlink-hardlink", follow_symlinks=False)
    os.chown(root / "etc/su-symlink", 7, 8, follow_symlinks=False)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    # ns times, children before parents; atimes ahead of now so relatime
    # (atime <= mtime or <= ctime moves it on read) leaves them alone.
    atime = time.time_ns() + 3600 * 10**9
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, p in enumerate([*paths, root]):
        os.utime(p, ns=(atime + i * 7, 1_234_567_890_000_000_001 + i * 999), follow_symlinks=False)


def test_everything_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    everything_tree(src)
    before = manifest(src, atime=True)
    lamina.copy_dir(src, tmp_path / "lamina")
    cp_a(src, tmp_path / "cp")
    got = manifest(tmp_path / "lamina", atime=True)
    assert_same(got, manifest(tmp_path / "cp", atime=True))
    assert_same(got, before)
    assert_same(before, manifest(src, atime=True))
    dst = tmp_path / "lamina"
    assert stat.S_ISSOCK(os.lstat(dst / "bound.sock").st_mode)
    assert os.getxattr(dst / "bin/ping", "security.capability") == CAP_NET_RAW_EP
    assert os.stat(dst / "bin/su").st_mode & 0o7777 == 0o4755
    for name in ("sparse", "all-hole"):
        assert os.stat(dst / name).st_blocks <= os.stat(src / name).st_blocks + 64, name


# The rootfs's atimes are left out of these comparisons: debootstrap leaves
# many atimes <= mtime, so the manifest's own reads (and cp's) move them
# under relatime; atimes are compared on the synthetic tree above, whose
# atimes are chosen to stay put.
def test_rootfs_matches_cp(tmp_path: Path) -> None:
    rootfs = debian_rootfs()
    before = manifest(rootfs)
    lamina.copy_dir(rootfs, tmp_path / "lamina")
    cp_a(rootfs, tmp_path / "cp")
    got = manifest(tmp_path / "lamina")
    assert_same(got, manifest(tmp_path / "cp"))
    assert_same(got, before)
    assert len(got) > 5000


def test_rootfs_hardlink_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # On the tmpfs (a link needs one filesystem); cp -a is the oracle.
    cp_a(debian_rootfs(), src)
    everything_tree(src / "extra")
    before = manifest(src)
    before_ids = identity(src)
    lamina.copy_dir(src, tmp_path / "lamina", hardlink=True)
    after_ids = identity(src)
    assert_same(before, manifest(src))
    for rel, rec in manifest(tmp_path / "lamina", content=False).items():
        if rec.type == "file":
            assert rec.ino == before[rel].ino, rel
        else:
            assert rec.ino != before[rel].ino, rel
    # linkat(2) stamps the linked inode's ctime; nothing else may change.
    for rel, (ino, ctime, mode) in before_ids.items():
        if before[rel].type == "file":
            assert after_ids[rel][0::2] == (ino, mode), rel
        else:
            assert after_ids[rel] == (ino, ctime, mode), rel
    cp_a(src, tmp_path / "cp", "-l")
    assert_same(manifest(tmp_path / "lamina"), manifest(tmp_path / "cp"))


def test_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a/small").write_bytes(b"small")
    (src / "a/big").write_bytes(os.urandom(4 << 20))
    small = tmp_path / "small-fs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(OSError) as e:
            lamina.copy_dir(src, small / "dst")
        assert e.value.errno == errno.ENOSPC
        assert os.fspath(e.value.filename) == str(small / "dst/a/big")
        assert not (small / "dst/a/big").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_device_copy_as_nobody_fails() -> None:
    # pytest's tmp_path sits under a 0700 directory; nobody needs a way in.
    tmp_path = Path(tempfile.mkdtemp())
    os.chmod(tmp_path, 0o777)
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    code = (
        "import sys\n"
        "try:\n"
        "    import lamina\n"
        "except ImportError as e:\n"
        "    sys.exit(f'import: {e}')\n"
        "try:\n"
        f"    lamina.copy_dir({str(src)!r}, {str(tmp_path / 'dst')!r})\n"
        "except PermissionError as e:\n"
        "    print(repr(e), e.filename, file=sys.stderr)\n"
        "    sys.exit(0 if str(e.filename).endswith('dst/null') else 2)\n"
        "sys.exit(1)\n"
    )
    # The interpreter behind the venv and the package's own directory: a
    # per-user interpreter (pyenv under /root) is out of nobody's reach.
    python = os.path.realpath(sys.executable)
    package_dir = str(Path(lamina.__file__).resolve().parent.parent)
    r = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *("--inh-caps=-all", "--bounding-set=-all", python, "-c", code),
        ],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": package_dir},
        capture_output=True,
        text=True,
    )
    # A checkout under a 0700 directory (/root, a mktemp dir) is out of
    # nobody's reach: lamina does not import (exit 1 with "import: ..."), which
    # says nothing about copy_dir.
    if r.returncode not in (0, 1, 2) or r.stderr.startswith("import: "):
        pytest.skip(f"cannot run lamina as nobody here: {r.stderr.strip()[-200:]}")
    # Without CAP_MKNOD a device fails the copy, naming it, never dropped.
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "dst/null").exists()
    shutil.rmtree(tmp_path)
