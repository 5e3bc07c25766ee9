"""Run a test's body as ``nobody`` from a root test run.

The child gets no capabilities, no supplementary groups and no way to regain
either (``setpriv``); it imports copies of the built package, of ``support`` and of
the calling test module, staged where ``nobody`` can read them, because pytest's
own directories and a venv under /root are out of its reach."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import lamina


def staging_dir(under: str = "/dev/shm") -> Path:
    """A fresh directory ``nobody`` may write in (the caller removes it)."""
    base = Path(tempfile.mkdtemp(prefix="lamina-nobody-", dir=under))
    base.chmod(0o777)
    return base


def run_as_nobody(base: Path, module: str, function: str, *args: str) -> None:
    """Call ``module.function(*args)`` as ``nobody``; fail with its stderr."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    stage = base / "stage"
    shutil.copytree(Path(lamina.__file__).resolve().parent, stage / "lamina")
    shutil.copytree(
        Path(__file__).resolve().parent,
        stage / "support",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(module, stage / "nobody_case.py")
    subprocess.run(["chmod", "-R", "a+rX", str(stage)], check=True)
    code = f"import nobody_case, sys; nobody_case.{function}(*sys.argv[1:])"
    run = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            f"PYTHONPATH={stage}",
            "PYTHONDONTWRITEBYTECODE=1",
            sys.executable,
            "-c",
            code,
            *args,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-4000:]
