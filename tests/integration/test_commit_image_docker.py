"""Images built with Graph.commit_image, checked by Docker: `docker load`
takes them, `docker run` uses their Cmd and Env, `docker history` shows
the entry; and `docker commit --change` of the same step on the same image
gives the same config fields."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import engine
from support.images import NAME, RealImage, real_image
from support.layers import open_graph

CHANGES = [
    "ENV GREETING=hello LANG=C.UTF-8",
    'CMD ["/bin/sh", "-c", "echo $GREETING; cat /etc/y"]',
    "LABEL org.example.step=two",
    "WORKDIR /etc",
    "USER 0",
    "EXPOSE 8080 53/udp",
    "VOLUME /data",
    "STOPSIGNAL SIGINT",
]
STEP = "echo x > /etc/y; rm -f /etc/motd"
FIELDS = ["Env", "Cmd", "Entrypoint", "Labels", "WorkingDir", "User", "ExposedPorts", "Volumes"]


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


@pytest.fixture(autouse=True)
def _give_back_space(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def _inspect(ref: str, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    return json.loads(engine.docker("image", "inspect", ref, env=env).stdout)[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_docker_runs_what_commit_image_made(image: RealImage, driver: str, tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        base = g.load(image.docker_save)[0]
        box = g.create(base, init=True)
        with box.mounted() as root:
            Path(root, "etc/y").write_text("x\n")
            Path(root, "etc/motd").unlink(missing_ok=True)
        built = g.commit_image(
            box, "lamina-built:1", changes=CHANGES, created_by=f"/bin/sh -c {STEP}"
        )
        archive = tmp_path / "built.tar"
        g.save("lamina-built:1", archive, format="docker-archive")
        base_layers = [lay.diff_id for lay in base.layers]
        new_diff = built.layer.diff_id

    with engine.use() as env:
        engine.docker("load", "-i", str(image.docker_save), env=env)
        engine.docker("load", "-i", str(archive), env=env)
        cid = ""
        try:
            ours = _inspect("lamina-built:1", env)
            assert ours["RootFS"]["Layers"] == [*base_layers, new_diff]
            run = engine.docker("run", "--rm", "lamina-built:1", env=env)
            assert run.stdout == b"hello\nx\n"
            history = engine.docker(
                "history", "--no-trunc", "--format", "{{.CreatedBy}}", "lamina-built:1", env=env
            ).stdout.decode()
            assert history.splitlines()[0] == f"/bin/sh -c {STEP}"

            # The oracle: Docker's own commit of the same step.
            made = engine.docker("create", NAME, "/bin/sh", "-c", STEP, env=env)
            cid = made.stdout.decode().strip()
            engine.docker("start", "-a", cid, env=env)
            argv = ["commit"]
            # Docker's commit takes no STOPSIGNAL ("not a valid change
            # command"); lamina's does, as a Dockerfile does.
            for c in CHANGES:
                if not c.startswith("STOPSIGNAL"):
                    argv += ["--change", c]
            engine.docker(*argv, cid, "lamina-docker-built:1", env=env)
            theirs = _inspect("lamina-docker-built:1", env)
            for f in FIELDS:
                assert ours["Config"].get(f) == theirs["Config"].get(f), f
            assert ours["Config"]["StopSignal"] == "SIGINT"
            diff = engine.docker("diff", cid, env=env).stdout.decode().split("\n")
            assert "A /etc/y" in diff
            assert ("D /etc/motd" in diff) == (b".wh.motd" in _layer_names(archive, new_diff))
        finally:
            if cid:
                engine.docker("rm", "-f", cid, env=env)
            for ref in ("lamina-built:1", "lamina-docker-built:1"):
                subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True)


def _layer_names(archive: Path, diff_id: str) -> bytes:
    """The names in the archive's layer with `diff_id` (through GNU tar)."""
    out = archive.parent / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(archive)], check=True)
    m = json.loads((out / "manifest.json").read_text())[0]
    cfg = json.loads((out / m["Config"]).read_text())
    layer = m["Layers"][cfg["rootfs"]["diff_ids"].index(diff_id)]
    return subprocess.run(
        ["tar", "-tf", str(out / layer)], check=True, capture_output=True, env=dict(os.environ)
    ).stdout
