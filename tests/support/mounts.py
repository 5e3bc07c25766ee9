"""Mount tables: this namespace's, and the host's as seen through the fd the
test launcher opened before it unshared (see tests/run_integration.sh)."""

from __future__ import annotations

import os


def _parse(text: str) -> list[str]:
    # Field 5 is the mount point, with spaces etc. as octal escapes.
    return [line.split()[4].encode().decode("unicode_escape") for line in text.splitlines() if line]


def mount_points() -> list[str]:
    """Mount points of the calling process's mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return _parse(f.read())


def host_mount_points() -> list[str] | None:
    """Mount points of the host namespace, or None outside the test container."""
    fd = os.environ.get("LAMINA_HOST_MOUNTINFO_FD")
    if fd is None:
        return None
    n = int(fd)
    os.lseek(n, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(n, 1 << 16):
        chunks.append(chunk)
    return _parse(b"".join(chunks).decode())
