"""What lamina pushes, Docker pulls and runs (issue 16): ``docker pull`` from
the local registry gets lamina's manifest digest and diff ids, ``docker
run`` starts it, and ``docker export`` of it equals ``docker export`` of the
image lamina loaded. The project's engine lives in a network namespace of
its own, so the registry, the push and the pull run there (``nsenter
--net``), where dockerd reaches the registry on loopback as an insecure
127.0.0.0/8 registry, as bench/bench_registry.py does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lamina
from support import engine
from support import manifest as mf
from support.docker_image import exported_records
from support.images import RealImage, real_image
from support.registry import Registry

REPO = "lamina/pushed:1"


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


def _push_pull_run(work: str, docker_save: str) -> None:
    """In the engine's network namespace: push with lamina, pull and run
    with docker; what was seen goes to ``work/out.json``."""
    w = Path(work)
    reg = Registry(w / "registry").start()
    env = engine.docker_env(dict(os.environ))
    ref = f"{reg.host}/{REPO}"
    try:
        g = lamina.Graph(w / "store", driver="overlay2")
        try:
            img = g.load(docker_save)[0]
            digest = g.push(img, ref, format="docker")
            diff_ids = [lay.diff_id for lay in img.layers]
        finally:
            g.close()
        engine.docker("pull", "-q", ref, env=env)
        try:
            inspect = json.loads(engine.docker("image", "inspect", ref, env=env).stdout)[0]
            run = engine.docker("run", "--rm", ref, "sh", "-c", "echo ran; id -u", env=env)
            cid = engine.docker("create", ref, "true", env=env).stdout.decode().strip()
            try:
                engine.docker("export", "-o", str(w / "pulled.tar"), cid, env=env)
            finally:
                engine.docker("rm", "-f", cid, env=env)
        finally:
            subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True)
    finally:
        reg.stop()
    out = {
        "digest": digest,
        "diff_ids": diff_ids,
        "repo_digests": inspect["RepoDigests"],
        "layers": inspect["RootFS"]["Layers"],
        "run": run.stdout.decode(),
    }
    (w / "out.json").write_text(json.dumps(out))


def test_docker_pulls_and_runs_what_lamina_pushed(image: RealImage, tmp_path: Path) -> None:
    with engine.use() as env:
        init = engine._find_init()
        assert init is not None, "the engine's init is not visible from here"
        tests = str(Path(__file__).resolve().parents[1])
        code = (
            "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
            "import test_registry_docker as t; t._push_pull_run(sys.argv[3], sys.argv[4])"
        )
        r = subprocess.run(
            ["nsenter", f"--net=/proc/{init}/ns/net", "--", sys.executable, "-c", code,
             tests, str(Path(__file__).parent), str(tmp_path), str(image.docker_save)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["repo_digests"] == [f"{got['repo_digests'][0].split('@')[0]}@{got['digest']}"]
    assert got["layers"] == got["diff_ids"]
    assert got["run"] == "ran\n0\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mf.assert_same(
        exported_records(tmp_path / "pulled.tar", tmp_path / "a"),
        exported_records(image.exported, tmp_path / "b"),
    )
