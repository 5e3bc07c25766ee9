"""A real Debian root filesystem (``debootstrap --variant=minbase``), built
once and cached between runs, for tests that need a tree made by real tools.

The mirror is the one this machine's apt already uses, read from its sources,
so nothing here names a host.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("LAMINA_TEST_CACHE", "/var/tmp/lamina-test-cache"))


def _apt_source() -> tuple[str, str]:
    """(mirror URL, suite) of the machine's Debian sources."""
    suite = None
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            suite = line.split("=", 1)[1].strip('"')
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        m = re.search(r"^URIs:\s*(\S+)", deb822.read_text(), re.M)
        if m:
            return m.group(1), suite or "stable"
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                url = next(p for p in parts[1:] if "://" in p)
                return url, suite or parts[parts.index(url) + 1]
    raise RuntimeError("no Debian mirror in this machine's apt sources")


def debian_rootfs() -> Path:
    """The cached minbase rootfs (built on first use; needs root)."""
    mirror, suite = _apt_source()
    target = CACHE / f"rootfs-{suite}-minbase"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "etc/debian_version").exists():
            return target
        stage = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", suite, str(stage), mirror],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
            )
            if target.exists():
                shutil.rmtree(target)
            stage.rename(target)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    return target
