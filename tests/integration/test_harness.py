"""The test container itself: mounts stay inside it, and a leak fails a run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from support.mounts import host_mount_points, mount_points

REPO = Path(__file__).resolve().parents[2]


def test_runs_in_private_mount_and_pid_namespace() -> None:
    assert os.environ.get("LAMINA_IN_TEST_CONTAINER") == "1"
    # pid namespace: the launcher is pid 1 here.
    assert Path("/proc/1/cmdline").read_bytes().split(b"\0")[1].endswith(b"container_init.py")
    host = host_mount_points()
    assert host is not None and "/" in host
    # The suite's tmpfs TMPDIR exists here only.
    tmpdir = os.environ["TMPDIR"]
    assert tmpdir in mount_points() and tmpdir not in host


def test_mount_made_here_never_reaches_the_host(tmp_path: Path) -> None:
    target = tmp_path / "probe"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        assert str(target) in mount_points()
        assert str(target) not in (host_mount_points() or [])
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert str(target) not in mount_points()


def test_leaked_mount_fails_the_run_and_stays_contained(tmp_path: Path) -> None:
    marker = tmp_path / "leak-target"
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess
            def test_leak():
                os.makedirs({str(marker)!r}, exist_ok=True)
                subprocess.run(["mount", "-t", "tmpfs", "leaked", {str(marker)!r}], check=True)
            """
        )
    )
    # A nested container, launched exactly as `make test` launches ours.
    r = subprocess.run(
        ["bash", str(REPO / "tests/run_integration.sh"), str(leaky)],
        cwd=REPO,
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout, r.stdout
    assert "leaked by the suite" in r.stderr and str(marker) in r.stderr, r.stderr
    # Neither this container nor the host ever saw the leaked mount.
    assert str(marker) not in mount_points()
    assert str(marker) not in (host_mount_points() or [])
