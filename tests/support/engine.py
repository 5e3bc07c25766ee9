"""The project's own Docker engine, isolated from the host and from the tests.

Tests that use a real Docker engine as an oracle (``docker build``, ``save``,
``create``/``export``, ``import``) get one from here, started on demand. It
runs in namespaces of its own, made by ``unshare`` (util-linux):

- a mount namespace with private propagation: the overlay mounts dockerd and
  containerd make under the data root exist there only, never in the test
  container's mount table (whose leak check would count them, issue 7) nor in
  the host's;
- a network namespace holding only ``lo``: a second dockerd in the host's
  network namespace deletes the host's ``docker0`` bridge. ``--bridge=none``
  and no iptables: nothing is pulled, and ``RUN`` steps need no network;
- a pid namespace whose init is support/engine_init.py: it reaps
  containerd's shims, forwards SIGTERM to dockerd, and when it exits the
  kernel kills whatever is left in the namespace (containerd, shims,
  containers).

Its paths are its own, so it never collides with a system dockerd and the
client reaches it only through ``DOCKER_HOST``: data root
``$LAMINA_TEST_CACHE/docker`` (overlay2 asked for by name, so a filesystem
that cannot hold it fails loudly instead of falling back to vfs), log
``$LAMINA_TEST_CACHE/docker.log``, and socket, exec root, pidfile, config and
locks under ``/run/lamina-docker``. ``/run/containerd`` is covered by a tmpfs
inside the namespace: dockerd would use a system containerd whose socket it
finds there, and containerd's shims put their sockets there whatever their
root.

Several test runs may share the machine (and the engine), each in its own
test container, so three locks under the run dir keep it sane:
``engine.lock`` is held by the engine's init for its whole life (at most one
engine per data root, and "is one alive?" is a lock test); ``start.lock``
serialises starting and stopping; users hold ``users.lock`` shared while they
talk to the engine (``use()``), and ``stop()`` takes it exclusively, so it
waits for them. The pytest session that started the engine stops it when it
finishes (tests/integration/conftest.py); container_init.py stops one its
suite left behind.

From a shell: ``tests/engine.sh start|stop|status|env|exec CMD...|base-image``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from support.rootfs import CACHE

TESTS = Path(__file__).resolve().parents[1]
DATA_ROOT = CACHE / "docker"
LOG = CACHE / "docker.log"


def _run_dir() -> Path:
    # One run dir per cache, so two caches give two engines that never meet.
    cache = os.path.abspath(CACHE)
    if cache == "/var/tmp/lamina-test-cache":
        return Path("/run/lamina-docker")
    return Path("/run/lamina-docker-" + hashlib.sha256(cache.encode()).hexdigest()[:8])


RUN = _run_dir()
SOCKET = RUN / "docker.sock"
DOCKER_HOST = f"unix://{SOCKET}"
STATE = RUN / "engine.json"  # written by the init: its pid namespace, for finding it

# An image with an empty root whose /bin, /lib, ... point into /usr: run it
# with ``-v /usr:/usr:ro``. Made with ``docker import``, since nothing is pulled.
BASE_IMAGE = "lamina-test-base:1"

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
LEASE_WAIT = 900.0  # another run's build of the docker fixture takes a minute or two
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_started_here = False
_unshare: subprocess.Popen[bytes] | None = None
_lease: int | None = None
_lease_depth = 0


class EngineError(RuntimeError):
    """The engine did not start, or cannot be stopped from here."""


# --- the client's side -------------------------------------------------------


def docker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) pointed at our engine."""
    env = dict(os.environ if base is None else base)
    for var in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
        env.pop(var, None)
    env["DOCKER_HOST"] = DOCKER_HOST
    return env


def docker(*args: str, env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    """``docker ARGS`` against our engine (``env`` from ``use()``); raises with stderr."""
    if shutil.which("docker") is None:
        raise EngineError("docker client missing: apt-get install docker.io")
    r = subprocess.run(["docker", *args], env=env, capture_output=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise EngineError(f"docker {' '.join(args)}: exit {r.returncode}\n{r.stderr.decode()}")
    return r  # type: ignore[no-any-return]


def answering() -> bool:
    """Whether an engine answers on our socket (``GET /_ping``)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(SOCKET))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = s.recv(4096).split(b"\r\n", 1)[0]
    except OSError:
        return False
    return status.startswith(b"HTTP/1.") and status.split()[1:2] == [b"200"]


@contextlib.contextmanager
def use() -> Iterator[dict[str, str]]:
    """Hold a lease on the engine, started if none runs; yields a ``docker`` env.

    Re-entrant within a process. ``stop()`` (from any run) waits for the lease
    to end, so the engine never goes away under a user.
    """
    global _lease, _lease_depth
    if _lease_depth == 0:
        RUN.mkdir(mode=0o700, parents=True, exist_ok=True)
        _lease = _lock(RUN / "users.lock", fcntl.LOCK_SH, LEASE_WAIT, "a stop of the engine")
    _lease_depth += 1
    try:
        start()
        yield docker_env()
    finally:
        _lease_depth -= 1
        if _lease_depth == 0 and _lease is not None:
            os.close(_lease)
            _lease = None


def base_image() -> str:
    """``BASE_IMAGE`` in our engine, imported on first use; its name."""
    with use() as env:
        inspect = subprocess.run(
            ["docker", "image", "inspect", BASE_IMAGE], env=env, capture_output=True
        )
        if inspect.returncode != 0:
            docker("import", "-", BASE_IMAGE, env=env, input=_base_tar())
    return BASE_IMAGE


def _base_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("usr", "etc", "tmp", "var", "var/tmp", "proc", "sys", "dev", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d.endswith("tmp") else 0o755
            tar.addfile(info)
        for link in ("bin", "sbin", "lib", "lib64"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
    return buf.getvalue()


# --- starting and stopping ---------------------------------------------------


def start(timeout: float = START_TIMEOUT) -> None:
    """Start the engine unless one runs on our data root; return once it answers."""
    global _started_here, _unshare
    RUN.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(RUN / "start.lock", fcntl.LOCK_EX, LEASE_WAIT, "another start or stop"):
        deadline = time.monotonic() + timeout
        while (held := _try_lock(RUN / "engine.lock")) is None:
            # An engine lives (perhaps in another test container), or one
            # stopped by force is still going away.
            if answering():
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    f"an engine holds {RUN}/engine.lock but does not answer{_log_tail()}"
                )
            time.sleep(0.1)
        _reap()  # a previous engine of ours that died, before we forget it
        try:
            argv = _unshare_argv(held)
            CACHE.mkdir(parents=True, exist_ok=True)
            DATA_ROOT.mkdir(mode=0o710, exist_ok=True)
            STATE.unlink(missing_ok=True)
            with open(LOG, "ab") as log:
                log.write(f"--- {time.strftime('%F %T')} start (pid {os.getpid()})\n".encode())
                log.flush()
                # The lock goes with the init (pass_fds); ours closes below.
                _unshare = subprocess.Popen(
                    argv,
                    pass_fds=(held,),
                    cwd="/",
                    env=_init_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
        finally:
            os.close(held)
        try:
            _wait_answering(timeout, _unshare)
        except BaseException:
            _signal_engine(force=True)
            raise
        _started_here = True


def stop(*, wait_users: float = LEASE_WAIT, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the engine if this process can see it; True if one was running here.

    Waits up to ``wait_users`` seconds for other users' leases, then stops it
    anyway: SIGTERM to the init (which passes it to dockerd), and after
    ``timeout`` SIGKILL, which takes the whole pid namespace down. A dockerd on
    our data root that no init of ours runs (an earlier version's) is stopped
    the same way.
    """
    global _started_here
    if _lease_depth:
        raise EngineError("stop() while this process holds a lease (inside use())")
    if _find_init() is None and not _stray_dockerds():
        return False
    users = _lock(
        RUN / "users.lock", fcntl.LOCK_EX, wait_users, "other runs to finish with the engine", True
    )
    try:
        with _locked(RUN / "start.lock", fcntl.LOCK_EX, LEASE_WAIT, "another start or stop"):
            found = _signal_engine(force=False, timeout=timeout)
    finally:
        if users is not None:
            os.close(users)
    _started_here = False
    return found


def stop_if_started_here() -> None:
    """Stop the engine when this process started it (end of a pytest session)."""
    if _started_here:
        stop()


def status() -> dict[str, object]:
    """What a person debugging the engine wants to know, as a dict."""
    held = _try_lock(RUN / "engine.lock") if RUN.exists() else None
    if held is not None:
        os.close(held)
    init = _find_init()
    return {
        "running": RUN.exists() and held is None,
        "answering": answering(),
        "init_pid": init,  # None when it runs in a pid namespace this one cannot see
        "docker_host": DOCKER_HOST,
        "data_root": str(DATA_ROOT),
        "run_dir": str(RUN),
        "log": str(LOG),
    }


def engine_mount_points() -> list[str] | None:
    """Mount points of the engine's mount namespace, if its init is visible here."""
    init = _find_init()
    if init is None:
        return None
    with open(f"/proc/{init}/mountinfo") as f:
        return [line.split()[4] for line in f]


def engine_namespaces() -> dict[str, str] | None:
    """The engine's namespace ids (``mnt:[...]``...), if its init is visible here."""
    init = _find_init()
    if init is None:
        return None
    return {ns: os.readlink(f"/proc/{init}/ns/{ns}") for ns in ("mnt", "net", "pid")}


def _unshare_argv(lock_fd: int) -> list[str]:
    unshare = which("unshare", "util-linux")
    which("dockerd", "docker.io")
    return [
        unshare,
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",  # SIGKILL to the init (so the namespace) if unshare dies
        "--propagation",
        "private",
        "--mount-proc",
        "--",
        sys.executable,
        "-m",
        "support.engine_init",
        str(lock_fd),
    ]


def _init_env() -> dict[str, str]:
    # dockerd gets a clean environment: no proxy, no DOCKER_* of the caller.
    return {
        "PATH": SYSTEM_PATH,
        "PYTHONPATH": str(TESTS),
        "LAMINA_TEST_CACHE": os.path.abspath(CACHE),
        "LANG": "C.UTF-8",
    }


def which(cmd: str, package: str) -> str:
    found = shutil.which(cmd, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)
    if found is None:
        raise EngineError(f"{cmd} missing: apt-get install {package} (scripts/system-deps.sh)")
    return found


def _wait_answering(timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not answering():
        if proc.poll() is not None:
            raise EngineError(f"the engine exited ({proc.returncode}) while starting{_log_tail()}")
        if time.monotonic() > deadline:
            raise EngineError(
                f"the engine did not answer on {SOCKET} in {timeout:.0f} s{_log_tail()}"
            )
        time.sleep(0.1)


def _log_tail() -> str:
    try:
        lines = LOG.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    return f"; {LOG} ends:\n" + "\n".join(lines)


def _signal_engine(*, force: bool, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM (or SIGKILL) the init and stray dockerds; wait until they are gone."""
    global _unshare
    targets = [p for p in (_find_init(), *_stray_dockerds()) if p is not None]
    if force and _unshare is not None:
        targets.append(_unshare.pid)  # before its init is up, only unshare is known
    for sig in (signal.SIGKILL,) if force else (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (5 if sig == signal.SIGKILL else timeout)
        while time.monotonic() < deadline and any(_exists(p) for p in targets):
            _reap()
            time.sleep(0.1)
        if not any(_exists(p) for p in targets):
            break
    if _unshare is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _unshare.wait(timeout=5)
        _unshare = None
    if any(_exists(p) for p in targets):
        raise EngineError(f"engine processes {targets} outlived SIGKILL")
    # The unshare parent holds engine.lock too, until it has seen its child go.
    deadline = time.monotonic() + 10
    while _alive() and _find_init() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(targets)


def _reap() -> None:
    # Our own children (the unshare parent) must not linger as zombies,
    # or _exists() would see them forever.
    if _unshare is not None:
        _unshare.poll()


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _alive() -> bool:
    if not RUN.exists():
        return False
    held = _try_lock(RUN / "engine.lock")
    if held is None:
        return True
    os.close(held)
    return False


def _find_init() -> int | None:
    """The pid (in our pid namespace) of the engine's init, if we can see it."""
    try:
        pidns = json.loads(STATE.read_text())["pidns"]
    except (OSError, ValueError, KeyError):
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pidns:
                continue
            with open(f"/proc/{entry}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        # The namespace id of a dead engine can be reused by another
        # namespace (ours: the test container's init is its pid 1), so the
        # process must also be the engine's init.
        if nspid[-1] == "1" and _exists(int(entry)) and _is_engine_init(int(entry)):
            return int(entry)
    return None


def _is_engine_init(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"support.engine_init" in f.read().split(b"\0")
    except OSError:
        return False


def _stray_dockerds() -> list[int]:
    """dockerds on our data root that are not under a live init of ours."""
    init = _find_init()
    want = os.fsencode(os.path.abspath(DATA_ROOT))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"dockerd" or not _exists(int(entry)):
            continue
        ours = b"--data-root=" + want in argv or any(
            a == b"--data-root" and b == want for a, b in zip(argv, argv[1:])
        )
        if ours and (init is None or not _in_pidns_of(int(entry), init)):
            found.append(int(entry))
    return found


def _in_pidns_of(pid: int, init: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        return False


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock(path: Path, mode: int, timeout: float, what: str, give_up: bool = False) -> int | None:
    """An fd holding a flock on ``path``; waits up to ``timeout`` s, saying why.

    After the timeout: None if ``give_up``, else EngineError.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        if time.monotonic() > deadline:
            os.close(fd)
            if give_up:
                print(f"lamina engine: gave up waiting for {what}", file=sys.stderr)
                return None
            raise EngineError(f"waited {timeout:.0f} s for {what} ({path})")
        if not said:
            print(f"lamina engine: waiting for {what}", file=sys.stderr)
            said = True
        time.sleep(0.2)


@contextlib.contextmanager
def _locked(path: Path, mode: int, timeout: float, what: str) -> Iterator[None]:
    fd = _lock(path, mode, timeout, what)
    try:
        yield
    finally:
        os.close(fd)  # type: ignore[arg-type]


# --- command line ------------------------------------------------------------

USAGE = """\
usage: tests/engine.sh start | stop [--force] | status | env | exec CMD [ARG...] | base-image

  start       start the engine unless it runs; it runs until `stop`
  stop        stop it (waits for runs using it; --force: do not wait)
  status      print its state as JSON; exit 0 if it answers, 3 if not
  env         print `export DOCKER_HOST=...` and LAMINA_ENGINE_{RUN,DATA_ROOT,LOG}=
              for a shell's eval
  exec CMD    run CMD with DOCKER_HOST set, the engine started for it and
              stopped afterwards if this started it
  base-image  import the empty /usr-based test image unless present
"""


def main(argv: list[str]) -> int:
    verb, args = (argv[0], argv[1:]) if argv else ("", [])
    if verb == "start":
        start()
        print(json.dumps(status(), indent=2))
        return 0
    if verb == "stop" and args in ([], ["--force"]):
        stopped = stop(wait_users=0 if args else LEASE_WAIT)
        print("lamina engine: stopped" if stopped else "lamina engine: none running here")
        if _alive():
            print(f"lamina engine: still running in a pid namespace this one cannot see ({RUN})")
            return 1
        return 0
    if verb == "status":
        st = status()
        print(json.dumps(st, indent=2))
        return 0 if st["answering"] else 3
    if verb == "env":
        print(f"export DOCKER_HOST={shlex.quote(DOCKER_HOST)}")
        for name, value in (("RUN", RUN), ("DATA_ROOT", DATA_ROOT), ("LOG", LOG)):
            print(f"LAMINA_ENGINE_{name}={shlex.quote(str(value))}")
        return 0
    if verb == "exec" and args:
        cmd = args[1:] if args[0] == "--" else args
        try:
            with use() as env:
                rc = subprocess.run(cmd, env=env).returncode
        finally:
            stop_if_started_here()
        return rc
    if verb == "base-image":
        print(base_image())
        return 0
    print(USAGE, file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except EngineError as e:
        print(f"lamina engine: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if e.errno == errno.EPERM:
            print(f"lamina engine: {e} (it needs root)", file=sys.stderr)
            sys.exit(1)
        raise
