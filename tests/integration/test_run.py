"""Layer.run (issue 17): a command in a container's tree, checked against
``docker run`` of the same image. Docker is the oracle for what the command
sees (``/dev``, the network, ``id`` of a user, the environment, ``$$``) and
for what it leaves (``docker diff`` of the same step); the same step run as
``nobody`` (rootless: the helper's user namespace on overlay2, a new one on
vfs) leaves the same changes. A timeout and a Ctrl-C kill the whole tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import lamina
from support import engine
from support.images import RealImage, real_image
from support.layers import open_graph
from support.unprivileged import run_as_nobody, staging_dir

STEP = "echo x > /etc/y; rm -f /etc/motd; mkdir -p /srv/new; id -u"

# name -> (user, shell command): what the command sees, compared with docker's.
PROBES: dict[str, tuple[str | None, str]] = {
    "dev": (None, "ls -A /dev"),
    "net": (None, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"),
    "pid": (None, "echo $$"),
    "env": (None, "env | grep -v ^HOSTNAME= | sort"),
    "nobody": ("nobody", "id; echo $HOME"),
    "daemon": ("daemon", "id; echo $HOME"),
    "ids": ("1:2", "id; echo $HOME"),
    "proc": (None, "cat /proc/1/cmdline | tr '\\0' ' '"),
}


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


@pytest.fixture(scope="module")
def docker_says(image: RealImage) -> dict[str, Any]:
    """What ``docker run --network none`` prints for each probe, and what
    ``docker diff`` lists after the step."""
    out: dict[str, Any] = {}
    with engine.use() as env:
        engine.docker("load", "-i", str(image.docker_save), env=env)
        for name, (user, cmd) in PROBES.items():
            argv = ["run", "--rm", "--network", "none"]
            if user:
                argv += ["-u", user]
            out[name] = engine.docker(*argv, image.name, "sh", "-c", cmd, env=env).stdout.decode()
        cid = engine.docker("create", image.name, "sh", "-c", STEP, env=env).stdout.decode().strip()
        try:
            out["step"] = engine.docker("start", "-a", cid, env=env).stdout.decode()
            out["diff"] = sorted(engine.docker("diff", cid, env=env).stdout.decode().split("\n"))
        finally:
            engine.docker("rm", "-f", cid, env=env)
    return out


def _changes(layer: lamina.Layer) -> list[str]:
    return sorted(f"{c.kind} {c.path}" for c in layer.changes())


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_run_sees_what_docker_run_sees(
    image: RealImage, docker_says: dict[str, Any], driver: str, tmp_path: Path
) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        box = g.create(g.load(image.docker_save)[0], init=True)
        for name, (user, cmd) in PROBES.items():
            if user and driver == "vfs":
                # The test image's `/` is 0700 (docker import of a mkdtemp
                # directory): on overlay2 the container's upper dir (0755)
                # hides that, as in Docker; a full copy keeps it, and no
                # other user can reach anything.
                continue
            r = box.run(["sh", "-c", cmd], user=user, capture_output=True, text=True)
            assert r.returncode == 0, (name, r.stderr)
            if name == "proc":
                assert r.stdout == "sh -c " + cmd + " "
            else:
                assert r.stdout == docker_says[name], name
        assert box.changes() == []
        assert box.mount_count == 0


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_a_step_leaves_what_docker_diff_lists_and_commits(
    image: RealImage, docker_says: dict[str, Any], driver: str, tmp_path: Path
) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        box = g.create(g.load(image.docker_save)[0], init=True)
        r = box.run(["sh", "-c", STEP], stdout=subprocess.PIPE)
        assert (r.returncode, r.stdout.decode()) == (0, docker_says["step"])
        assert [d for d in _changes(box)] == [d for d in docker_says["diff"] if d]
        layer = g.commit(box)
        assert _changes(layer) == _changes(box)


def _rootless_case(root: str, tar: str, driver: str, out: str) -> None:
    """As nobody: the same step and probes; results to ``out`` as JSON."""
    g = lamina.Graph(root, driver=driver)
    try:
        with open(tar, "rb") as f:
            box = g.create(g.register(f), init=True)
        step = box.run(["sh", "-c", STEP], capture_output=True, text=True)
        probes = {
            n: box.run(["sh", "-c", c], capture_output=True, text=True).stdout
            for n, (u, c) in PROBES.items()
            if u is None
        }
        changes = sorted(f"{c.kind} {c.path}" for c in box.changes())
        try:
            box.run(["sh", "-c", "sleep 977.25 & sleep 977.25"], timeout=0.5)
        except subprocess.TimeoutExpired:
            timed_out = True
        else:
            timed_out = False
        data = {
            "mount": g.status()["mount"],
            "step": [step.returncode, step.stdout, step.stderr],
            "probes": probes,
            "changes": changes,
            "timed_out": timed_out,
            "count": box.mount_count,
        }
    finally:
        g.close()
    Path(out).write_text(json.dumps(data))


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_rootless_run_leaves_the_same_changes(
    image: RealImage, docker_says: dict[str, Any], driver: str
) -> None:
    base = staging_dir()
    try:
        tar = base / "rootfs.tar"
        tar.write_bytes(image.exported.read_bytes())
        tar.chmod(0o644)
        out = base / "out.json"
        run_as_nobody(
            base, __file__, "_rootless_case", str(base / "store"), str(tar), driver, str(out)
        )
        got = json.loads(out.read_text())
        assert got["step"] == [0, "0\n", ""]
        assert got["changes"] == [d for d in docker_says["diff"] if d]
        for name in ("dev", "net", "pid", "env"):
            assert got["probes"][name] == docker_says[name], name
        assert got["timed_out"] and got["count"] == 0
        if driver == "overlay2":
            assert "user namespace" in got["mount"]
        assert _pids("sleep 977.25") == []
        assert _pids("lamina._helper") == []
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _pids(pattern: str) -> list[int]:
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split() if int(p) != os.getpid()]


@pytest.fixture
def box(image: RealImage, tmp_path: Path) -> Any:
    with open_graph(tmp_path / "s", "overlay2") as g:
        yield g.create(g.load(image.docker_save)[0], init=True)


def test_exit_status_input_and_missing_programs_behave_as_subprocess(box: Any) -> None:
    assert box.run(["sh", "-c", "exit 3"]).returncode == 3
    with pytest.raises(subprocess.CalledProcessError) as e:
        box.run(["false"], check=True)
    assert e.value.returncode == 1
    r = box.run(["tr", "a-z", "A-Z"], input="hello", capture_output=True, text=True)
    assert r.stdout == "HELLO"
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        box.run(["no-such-program"])
    r = box.run(["pwd"], cwd="/work/dir", env={"A": "1"}, capture_output=True, text=True)
    assert r.stdout == "/work/dir\n"
    assert box.run(["sh", "-c", 'test "$A" = 1'], env={"A": "1"}).returncode == 0
    with pytest.raises(ValueError, match="user"):
        box.run(["true"], user="no-such-user")
    assert box.mount_count == 0


def test_a_timeout_kills_the_whole_tree(box: Any) -> None:
    script = "sleep 977.5 & (setsid sleep 977.5 &); sleep 977.5"
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        box.run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - t < 15
    assert _pids("sleep 977.5") == []
    assert box.mount_count == 0


def test_ctrl_c_kills_the_tree_and_gives_the_mount_back(box: Any, tmp_path: Path) -> None:
    code = (
        "import lamina, sys\n"
        "g = lamina.Graph(sys.argv[1])\n"
        "try:\n"
        "    g.get(sys.argv[2]).run(['sh', '-c', 'sleep 977.75 & sleep 977.75'])\n"
        "except KeyboardInterrupt:\n"
        "    print(g.get(sys.argv[2]).mount_count, flush=True)\n"
        "    sys.exit(42)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "s"), box.id], stdout=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while len(_pids("sleep 977.75")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert (p.returncode, out) == (42, b"0\n")
    assert _pids("sleep 977.75") == []


def test_binds_network_host_and_hostname(box: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("from the host\n")
    missing = [t for t in ("/data", "/rw") if box.run(["test", "-e", t]).returncode]
    assert "/rw" in missing
    r = box.run(
        ["sh", "-c", "cat /data/f; touch /data/g"],
        mounts=[f"{data}:/data:ro"],
        capture_output=True,
        text=True,
    )
    assert r.stdout == "from the host\n" and "Read-only file system" in r.stderr
    r = box.run(["sh", "-c", "echo w > /rw/g"], mounts=[(data, "/rw")])
    assert r.returncode == 0 and (data / "g").read_text() == "w\n"
    host_ifaces = sorted(
        line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]
    )
    r = box.run(["cat", "/proc/net/dev"], network="host", capture_output=True, text=True)
    assert sorted(line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]) == host_ifaces
    r = box.run(
        ["sh", "-c", "hostname; cat /etc/hostname"], hostname="builder", capture_output=True
    )
    assert r.stdout == b"builder\nbuilder\n"
    # The binds and Docker's files leave nothing in the container, but the
    # bind targets it had to make, as docker run -v does.
    assert _changes(box) == [f"A {t}" for t in missing]
    with pytest.raises(ValueError, match="absolute"):
        box.run(["true"], mounts=[(data, "relative")])


def test_cli_run_relays_the_status_and_options(box: Any, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "lamina", "-q", "--root", str(tmp_path / "s")]
    step = ["sh", "-c", 'echo "$A $(pwd) $(id -u)"; exit 7']
    r = subprocess.run(
        [*cli, "run", "-e", "A=1", "-w", "/tmp", "-u", "nobody", box.id, "--", *step],
        capture_output=True,
        text=True,
    )
    assert (r.returncode, r.stdout) == (7, "1 /tmp 65534\n"), r.stderr
    r = subprocess.run([*cli, "run", "--timeout", "0.5", box.id, "sleep", "977.125"])
    assert r.returncode == 124 and _pids("sleep 977.125") == []


def _unshare_case(root: str, tar: str, out: str) -> None:
    """As nobody: ``lamina unshare`` shows a mount at its ordinary path."""
    cli = [sys.executable, "-m", "lamina", "-q", "--root", root, "--driver", "overlay2"]
    base = subprocess.run([*cli, "register", tar], check=True, capture_output=True, text=True)
    box = subprocess.run(
        [*cli, "create", "--init", base.stdout.strip()], check=True, capture_output=True, text=True
    ).stdout.strip()
    script = (
        f'p=$({" ".join(cli)} mount {box}); id -u; echo "$p"; cat "$p/greeting"; echo; '
        f'grep -c " $p " /proc/self/mountinfo; {" ".join(cli)} umount {box}; '
        f'grep -c " $p " /proc/self/mountinfo || true'
    )
    r = subprocess.run([*cli, "unshare", "--", "sh", "-c", script], capture_output=True, text=True)
    Path(out).write_text(json.dumps([r.returncode, r.stdout, r.stderr, box]))


def test_unshare_mounts_at_the_ordinary_paths() -> None:
    base = staging_dir()
    try:
        tar = base / "t.tar"
        (base / "src").mkdir()
        (base / "src" / "greeting").write_text("hello")
        subprocess.run(["tar", "-cf", str(tar), "-C", str(base / "src"), "greeting"], check=True)
        tar.chmod(0o644)
        out = base / "out.json"
        run_as_nobody(base, __file__, "_unshare_case", str(base / "store"), str(tar), str(out))
        code, stdout, stderr, box = json.loads(out.read_text())
        assert code == 0, stderr
        uid, path, greeting, mounted, after = stdout.split("\n")[:5]
        assert uid == "0" and path == str(base / "store" / "layers" / box / "merged")
        assert (greeting, mounted, after) == ("hello", "1", "0")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
