"""Test trees for the export suites: a parent with every kind of entry, and
the mutations that make a child of it (every kind of change)."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

ROOT = os.geteuid() == 0
LONG = "a-directory-name-long-enough-that-the-whole-path-cannot-fit-a-ustar-name-field-" + "x" * 40
T0 = 1_600_000_000_123_456_789  # a time with nanoseconds


def cp_a(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def setxattr(p: Path, key: str, value: bytes) -> None:
    os.setxattr(p, key, value, follow_symlinks=False)


def build_parent(p: Path) -> None:
    """A tree with every kind of entry the export must carry."""
    (p / "etc").mkdir(parents=True)
    (p / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (p / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (p / "etc/group").write_text("root:x:0:\n")
    (p / "usr/bin").mkdir(parents=True)
    (p / "usr/lib").mkdir()
    (p / "usr/bin/tool").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    (p / "usr/bin/tool").chmod(0o755)
    os.link(p / "usr/bin/tool", p / "usr/bin/tool2")
    os.symlink("usr/lib", p / "lib")
    (p / "var/cache/apt/archives").mkdir(parents=True)
    for i in range(5):
        (p / f"var/cache/apt/archives/pkg{i}.deb").write_bytes(b"deb" * i)
    (p / "home/user").mkdir(parents=True)
    (p / "home/user/notes").write_text("notes")
    setxattr(p / "home/user/notes", "user.origin", b"parent")
    (p / "data").mkdir()
    (p / "data/same").write_text("AAAA")
    (p / "data/ts").write_text("time")
    os.utime(p / "data/ts", ns=(T0, T0))
    (p / "run").mkdir()
    os.mkfifo(p / "run/fifo")
    (p / "deep" / LONG).mkdir(parents=True)
    (p / "deep" / LONG / "file").write_text("deep")
    (p / "opt").write_text("a file that becomes a directory")
    (p / "srv/www").mkdir(parents=True)
    (p / "srv/www/index.html").write_text("<html>")
    os.utime(p / "etc/passwd", ns=(T0, T0))


def mutate(c: Path) -> None:
    """Every kind of change; content-only ones keep size and mtime."""
    (c / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n"
    )
    os.utime(c / "etc/passwd", ns=(T0 + 5, T0 + 5))
    (c / "etc/hosts").chmod(0o600)
    setxattr(c / "etc/group", "user.note", b"added")
    with open(c / "usr/bin/tool", "r+b") as f:  # in place: tool2 sees it too
        f.write(b"\x7fELF-patched")
    (c / "usr/bin/new1").write_text("a new hard-linked pair")
    os.link(c / "usr/bin/new1", c / "usr/bin/new2")
    shutil.rmtree(c / "var/cache/apt")
    (c / "lib").unlink()
    os.symlink("usr/lib64", c / "lib")
    setxattr(c / "home/user/notes", "user.origin", b"child")
    (c / "deep" / LONG / ("a-new-file-with-a-long-name-" + "y" * 60)).write_text("long")
    (c / "opt").unlink()
    (c / "opt").mkdir()
    (c / "opt/app").write_text("app")
    shutil.rmtree(c / "srv")
    (c / "srv").write_text("a directory that became a file")
    os.utime(c / "usr/lib", ns=(T0, T0))  # a directory whose only change is its time
    os.utime(c / "data/ts", ns=(T0 + 1, T0 + 1))
    st = os.stat(c / "data/same")
    (c / "data/same").write_text("BBBB")
    os.utime(c / "data/same", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.mkfifo(c / "run/fifo2")
    (c / "empty").mkdir()
    if ROOT:
        os.chown(c / "etc/passwd", 1000, 1000)
        (c / "dev").mkdir()
        os.mknod(c / "dev/tty0", stat.S_IFCHR | 0o620, os.makedev(4, 0))
        os.mknod(c / "dev/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
        (c / "usr/bin/ping").write_bytes(b"ping")
        # v2 file capabilities: effective, CAP_NET_RAW (13) permitted.
        setxattr(
            c / "usr/bin/ping",
            "security.capability",
            struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0),
        )
