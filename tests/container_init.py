"""pid 1 of the privileged test container (see run_integration.sh).

Gives the suite a private tmpfs as TMPDIR (heavy test trees stay off the
root filesystem), runs pytest, stops the project's Docker engine if the suite
started it here and left it running, then compares the namespace's mount table
with the one it started from: any mount left behind fails the run. The
engine's own mounts are in its own mount namespace (support/engine.py), so
they are never in this table: nothing is excluded from the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from support import engine


def mounts() -> set[str]:
    """Mount points of this namespace (field 5 of mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def reap_orphans() -> None:
    """Collect exited processes that were reparented to us (we are pid 1)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


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
    try:
        # Normally the pytest session stopped it; not if pytest was killed.
        if engine.stop():
            print("container_init: stopped the Docker engine the suite left running")
    except engine.EngineError as e:
        print(f"container_init: {e}", file=sys.stderr)
        rc = rc or 1
    reap_orphans()
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
