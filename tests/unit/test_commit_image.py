"""Graph.commit_image: a container's changes as a layer on its image, the
image's config inherited and changed as `docker commit --change` reads it,
one history entry appended. Docker itself is the oracle in
tests/integration/test_commit_image_docker.py; here the store's own
records are checked against what went in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support.layers import tar_of

BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Cmd": ["bash"],
        "Labels": {"base": "1"},
        "WorkingDir": "/srv",
    },
    "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "base step"}],
}


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[lamina.Graph]:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        base = g.register(tar_of({"etc/motd": b"hi\n", "etc/keep": b"k\n"}))
        g.tag(base, "base:1", config=BASE_CONFIG)
        yield g


def _step(g: lamina.Graph, on: lamina.Image | lamina.Layer) -> lamina.Layer:
    box = g.create(on, init=True)
    with box.mounted() as root:
        Path(root, "etc/y").write_text("x\n")
        os.unlink(Path(root, "etc/motd"))
    return box


def test_inherits_changes_and_appends_history(
    graph: lamina.Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    base = graph.image("base:1")
    box = _step(graph, base)
    img = graph.commit_image(
        box,
        "app:1",
        changes=[
            "ENV LANG=C.UTF-8 GREETING='hello world'",
            'CMD ["/bin/sh", "-c", "echo $GREETING"]',
            "LABEL org.example.step=2",
            "WORKDIR app",
            "USER 1000",
            "EXPOSE 8080 53/udp",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ],
        created_by="/bin/sh -c echo x > /etc/y; rm /etc/motd",
        author="me <me@example.org>",
        comment="a step",
    )
    assert img.name == "app:1"
    assert img.env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "GREETING": "hello world"}
    assert img.cmd == ["/bin/sh", "-c", "echo $GREETING"]
    assert img.entrypoint is None
    assert img.labels == {"base": "1", "org.example.step": "2"}
    assert img.workdir == "/srv/app"
    assert img.user == "1000"
    cfg = img.config
    assert cfg["config"]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["config"]["Volumes"] == {"/data": {}}
    assert cfg["config"]["StopSignal"] == "SIGINT"
    assert cfg["architecture"] == "amd64" and cfg["author"] == "me <me@example.org>"
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert img.history == [
        BASE_CONFIG["history"][0],
        {
            "created": "2023-11-14T22:13:20Z",
            "created_by": "/bin/sh -c echo x > /etc/y; rm /etc/motd",
            "author": "me <me@example.org>",
            "comment": "a step",
        },
    ]
    # rootfs extended by the new layer, whose diff is the container's.
    base_ids = [lay.diff_id for lay in base.layers]
    assert cfg["rootfs"]["diff_ids"] == [*base_ids, img.layer.diff_id]
    assert [lay.diff_id for lay in img.layers][:-1] == base_ids
    with tarfile.open(fileobj=io.BytesIO(img.layer.diff())) as t:
        assert sorted(t.getnames()) == ["etc", "etc/.wh.motd", "etc/y"]
    # The base image is untouched.
    assert graph.image("base:1").config == base.config
    # Stored byte for byte: the manifest names the config's digest.
    assert img.manifest["config"]["digest"].startswith("sha256:")


def test_dict_changes_and_entrypoint_resets_inherited_cmd(graph: lamina.Graph) -> None:
    box = _step(graph, graph.image("base:1"))
    img = graph.commit_image(box, "app:2", changes=['ENTRYPOINT ["/init"]', {"User": "nobody"}])
    assert img.entrypoint == ["/init"]
    assert img.cmd is None
    assert img.user == "nobody"
    assert img.history[-1]["created_by"] == ""


def test_base_found_by_layer_without_create_from_image(graph: lamina.Graph) -> None:
    box = _step(graph, graph.image("base:1").layer)
    img = graph.commit_image(box, "app:3", changes="ENV A=1")
    assert img.env["A"] == "1" and img.env["PATH"] == "/usr/bin:/bin"
    assert len(img.history) == 2


@pytest.mark.parametrize(
    ("changes", "exc", "match"),
    [
        (["RUN make"], ValueError, "RUN cannot be a commit change"),
        (["EXPOSE 70000"], ValueError, "is not a port"),
        (["ENV"], ValueError, "ENV needs an argument"),
        ([1], TypeError, "not int"),
        (42, TypeError, "not int"),
        ([{"Cmd": (1, 2)}], TypeError, "tuple"),
    ],
)
def test_bad_changes_write_nothing(
    graph: lamina.Graph, tmp_path: Path, changes: object, exc: type[Exception], match: str
) -> None:
    box = _step(graph, graph.image("base:1"))
    before = len(graph), [i.name for i in graph.images()]
    with pytest.raises(exc, match=match):
        graph.commit_image(box, "bad:1", changes=changes)  # type: ignore[arg-type]
    assert (len(graph), [i.name for i in graph.images()]) == before


def test_a_read_only_layer_is_refused(graph: lamina.Graph) -> None:
    with pytest.raises(ValueError, match="commit_image takes a container"):
        graph.commit_image(graph.image("base:1").layer, "x:1")


def test_cli_commit_with_changes(graph: lamina.Graph, tmp_path: Path) -> None:
    box = _step(graph, graph.image("base:1")).id
    root = graph.root
    graph.close()
    flags = ["-c", "ENV A=1", "--change", "CMD echo hi", "-m", "from the cli", "-a", "me"]
    run = subprocess.run(
        [sys.executable, "-m", "lamina", "--root", root, "commit", box, "cli:1", *flags],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    name, digest = run.stdout.split()
    with lamina.Graph(root) as g:
        img = g.image("cli:1")
        assert (name, digest) == ("cli:1", img.digest)
        assert img.cmd == ["/bin/sh", "-c", "echo hi"]
        assert img.env["A"] == "1"
        assert img.history[-1]["comment"] == "from the cli"
        assert json.loads(json.dumps(img.config))["author"] == "me"
