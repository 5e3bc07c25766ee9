"""pid 1 of the privileged test container (see run_integration.sh).

Gives the suite a private tmpfs as TMPDIR (heavy test trees stay off the
root filesystem), runs pytest, then compares the namespace's mount table with
the one it started from: any mount left behind fails the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def mounts() -> set[str]:
    """Mount points of this namespace (field 5 of mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def main() -> int:
    args = sys.argv[1:] or ["tests/integration"]
    tmp = tempfile.mkdtemp(prefix="lamina-it-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16g", "tmpfs", tmp], check=True)
    before = mounts()
    env = {**os.environ, "TMPDIR": tmp, "LAMINA_IN_TEST_CONTAINER": "1"}
    host_fd = os.environ.get("LAMINA_HOST_MOUNTINFO_FD")
    keep = (int(host_fd),) if host_fd else ()
    cmd = [sys.executable, "-m", "pytest", "-q", *args]
    rc = subprocess.run(cmd, env=env, pass_fds=keep).returncode
    leaked = sorted(mounts() - before)
    if leaked:
        print(f"\nFAILED: {len(leaked)} mount(s) leaked by the suite:", file=sys.stderr)
        for m in leaked:
            print(f"  {m}", file=sys.stderr)
        rc = rc or 1
        # Clean up so the tmpfs itself can go; the namespace dies with us anyway.
        for m in sorted(leaked, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
    subprocess.run(["umount", "-l", tmp], check=False)
    os.rmdir(tmp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
