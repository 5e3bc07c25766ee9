"""The project's Docker engine (support/engine.py) keeps its mounts, its
network and its processes to itself: a container it runs has its overlay root
mounted in the engine's mount namespace only, never in the test container's
(whose leak check would count it, issue 7) nor in the host's; the host's
network interfaces (its ``docker0`` among them) are untouched; and stopping it
takes containerd and the shims with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from support import engine
from support.engine import docker
from support.mounts import host_mount_points, mount_points


def _under(points: list[str], root: Path) -> list[str]:
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


def _fs_types(mountinfo: str) -> dict[str, str]:
    """Mount point -> filesystem type (the field after ``-``)."""
    out = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        out[fields[4]] = fields[fields.index("-") + 1]
    return out


def _pids_in(pidns: str) -> dict[int, str]:
    """Processes of a pid namespace visible here: pid -> command name."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == pidns:
                    found[int(entry)] = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
    return found


def test_engine_mounts_never_reach_the_test_container_or_the_host() -> None:
    here_before = mount_points()
    with engine.use() as env:
        image = engine.base_image()
        # Named, so that it is removed even when `docker run` fails half way;
        # a random name, as runs in other test containers share the engine
        # (and every test container's pids are the same).
        cid = f"lamina-test-engine-{uuid.uuid4().hex[:12]}"
        try:
            docker("run", "-d", "--name", cid, "-v", "/usr:/usr:ro", image, "sleep", "300", env=env)
            info = json.loads(docker("inspect", cid, env=env).stdout)[0]
            assert info["State"]["Running"]
            assert info["GraphDriver"]["Name"] == "overlay2"
            merged = info["GraphDriver"]["Data"]["MergedDir"]
            assert _under([merged], engine.DATA_ROOT)
            # The container runs on its overlay root, the host's /usr bound in
            # (bind sources resolve in the engine's copy of the mount table).
            inside = docker("exec", cid, "cat", "/proc/self/mountinfo", env=env).stdout.decode()
            assert _fs_types(inside)["/"] == "overlay"
            assert "/usr" in _fs_types(inside)
            # The engine's own namespace holds that mount (when its init is
            # visible from here, i.e. this container started it) ...
            theirs = engine.engine_mount_points()
            if theirs is not None:
                assert merged in theirs and str(engine.DATA_ROOT) in theirs
            # ... and neither this container nor the host gained any.
            assert mount_points() == here_before
            assert not _under(mount_points(), engine.DATA_ROOT)
            host = host_mount_points()
            assert host is not None
            assert not _under(host, engine.DATA_ROOT) and merged not in host
        finally:
            subprocess.run(["docker", "rm", "-f", cid], env=env, capture_output=True)
    assert mount_points() == here_before


def test_engine_has_namespaces_of_its_own_and_stops_with_them() -> None:
    if engine.answering() and engine.engine_namespaces() is None:
        pytest.skip(
            "the engine was started outside this test container (test-docker, engine.sh start)"
        )
    nets = sorted(os.listdir("/sys/class/net"))
    engine.stop()  # a fresh start: waits for other runs using the engine
    engine.start()
    try:
        ns = engine.engine_namespaces()
        assert ns is not None
        for kind in ("mnt", "net", "pid"):
            assert ns[kind] != os.readlink(f"/proc/self/ns/{kind}"), kind
        members = _pids_in(ns["pid"])
        assert {"dockerd", "containerd"} <= set(members.values()), members
        # Its network namespace is its own: the host's interfaces (docker0
        # too, where one exists) are exactly as they were.
        assert sorted(os.listdir("/sys/class/net")) == nets
    finally:
        engine.stop()
    assert not engine.answering()
    assert _pids_in(ns["pid"]) == {}


def test_killed_engine_takes_its_namespace_along_and_restarts() -> None:
    if engine.answering() and engine.engine_namespaces() is None:
        pytest.skip(
            "the engine was started outside this test container (test-docker, engine.sh start)"
        )
    engine.start()
    ns = engine.engine_namespaces()
    assert ns is not None
    init = engine.status()["init_pid"]
    assert isinstance(init, int)
    os.kill(init, signal.SIGKILL)  # what the OOM killer or a crashed run leaves
    deadline = time.monotonic() + 10
    while _pids_in(ns["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pids_in(ns["pid"]) == {}
    # The next user gets a working engine, not the dead one's pidfiles.
    try:
        with engine.use() as env:
            image = engine.base_image()
            docker("run", "--rm", "-v", "/usr:/usr:ro", image, "true", env=env)
    finally:
        engine.stop()
