"""pid 1 of the project's Docker engine (see support/engine.py, which starts
it through ``unshare --mount --net --pid --fork``).

It finishes setting up the namespaces (``lo`` up; a tmpfs over
``/run/containerd``, so that dockerd starts its own containerd rather than
use a system one whose socket it finds there, and the shims' sockets stay
inside), records its pid namespace for ``engine.stop()`` to find it, runs
dockerd, reaps every child (shims are re-parented to pid 1), and passes
SIGTERM on to dockerd. When dockerd exits it exits, and the kernel kills
whatever is left in the namespace.

It holds ``engine.lock`` (inherited from the starter) for its whole life.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from support.engine import DATA_ROOT, DOCKER_HOST, RUN, STATE, SYSTEM_PATH, which


def dockerd_argv() -> list[str]:
    """dockerd on the engine's own paths; overlay2 by name, no network set-up."""
    return [
        which("dockerd", "docker.io"),
        "--config-file",  # ours, empty: a system /etc/docker/daemon.json does not apply
        str(RUN / "daemon.json"),
        "--data-root",
        str(DATA_ROOT),
        "--exec-root",
        str(RUN / "exec"),
        "--pidfile",
        str(RUN / "dockerd.pid"),
        "--host",
        DOCKER_HOST,
        "--storage-driver",
        "overlay2",
        "--bridge",
        "none",
        "--iptables=false",
        "--ip6tables=false",
        "--cgroup-parent",
        "lamina-docker",
        "--shutdown-timeout",
        "5",
    ]


def main(lock_fd: int) -> int:
    """pid 1 of the engine's namespaces: set them up, run dockerd, reap, pass SIGTERM on."""
    dockerd = 0
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if dockerd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(dockerd, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    os.set_inheritable(lock_fd, False)  # the lock is the init's, not dockerd's
    _loopback_up()
    os.makedirs("/run/containerd", exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0711,size=64m", "lamina-docker", "/run/containerd"],
        check=True,
    )
    (RUN / "daemon.json").write_text("{}\n")
    # What a killed engine left: pidfiles name pids of its dead namespace,
    # which in ours are live processes (dockerd itself), so dockerd would
    # refuse to start, or wait for a containerd that is not there. Holding
    # engine.lock, we know no other engine uses this run dir.
    (RUN / "dockerd.pid").unlink(missing_ok=True)
    shutil.rmtree(RUN / "exec", ignore_errors=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pidns": os.readlink("/proc/self/ns/pid"), "started": time.time()}))
    tmp.rename(STATE)
    argv = dockerd_argv()
    dockerd = os.posix_spawn(argv[0], argv, {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
    if stopping:
        os.kill(dockerd, signal.SIGTERM)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == dockerd:
            code = os.waitstatus_to_exitcode(status)
            print(f"lamina engine: dockerd exited ({code})", file=sys.stderr)
            return 0 if stopping else (code or 1)


def _loopback_up() -> None:
    # ``ip link set lo up`` without iproute2: SIOCGIFFLAGS, | IFF_UP, SIOCSIFFLAGS.
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
