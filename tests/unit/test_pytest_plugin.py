"""lamina's pytest plugin, run by pytest itself (``pytester``): the
fixtures, and the assertion helpers passing and failing with a readable
diff."""

from __future__ import annotations

import sys

import pytest

from support.plugin import plugin_args

pytest_plugins = ["pytester"]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess: the plugin registers options, which an in-process run
    # inside this session would register twice. vfs: a unit test mounts
    # nothing, even as root (the default there is the host's best driver).
    args = args or ("--lamina-driver", "vfs")
    return pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", *args)


BUILD_TOOL_TEST = """
import os
from pathlib import Path

import lamina
from lamina.pytest_plugin import Dir, File, Symlink, assert_changes, assert_layer_tree


def build_app(graph, base, src):
    # What an image build tool does: a container on the base, files
    # written through its mount, committed as a new layer.
    box = graph.create(base)
    with box.mounted() as root:
        app = Path(root, "app")
        app.mkdir()
        (app / "main.py").write_text(Path(src, "main.py").read_text())
        (app / "run").write_text("#!/bin/sh\\nexec python3 /app/main.py\\n")
        os.chmod(app / "run", 0o755)
        os.symlink("/app/run", Path(root, "usr/bin/app"))
        os.remove(Path(root, "etc/motd"))
    layer = graph.commit(box)
    graph.delete(box)
    return layer


def test_build(lamina_graph, lamina_layer_from_dir, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc/motd").write_text("hello\\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("print('hi')\\n")
    base = lamina_layer_from_dir(rootfs)
    assert base.read("/etc/motd") == b"hello\\n"
    app = build_app(lamina_graph, base, src)
    assert_layer_tree(
        app,
        {
            "main.py": "print('hi')\\n",
            "run": File(mode=0o755),
        },
        path="/app",
    )
    assert_layer_tree(app, {"/usr/bin/app": Symlink("/app/run"), "/etc/": None}, exact=False)
    assert_changes(
        app,
        added=["/app", "/app/main.py", "/app/run", "/usr/bin/app"],
        deleted=["/etc/motd"],
    )
    assert lamina_graph.driver in lamina.DRIVERS
"""


def test_a_build_tool_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_build=BUILD_TOOL_TEST)
    r = _run(pytester)
    r.assert_outcomes(passed=1)


FAILING = """
from pathlib import Path

from lamina.pytest_plugin import Dir, File, Symlink, assert_changes, assert_layer_tree


def _layer(lamina_layer_from_dir, tmp_path):
    (tmp_path / "t/etc").mkdir(parents=True)
    (tmp_path / "t/etc/app.conf").write_text("port = 80\\nhost = a\\n")
    (tmp_path / "t/extra").write_text("x")
    return lamina_layer_from_dir(tmp_path / "t")


def test_tree(lamina_layer_from_dir, tmp_path):
    layer = _layer(lamina_layer_from_dir, tmp_path)
    assert_layer_tree(
        layer,
        {"/etc/app.conf": "port = 8080\\nhost = a\\n", "/etc/missing": None, "/extra": Dir()},
    )


def test_changes(lamina_layer_from_dir, tmp_path):
    layer = _layer(lamina_layer_from_dir, tmp_path)
    assert_changes(layer, added=["/etc", "/etc/app.conf", "/nothere"], deleted=["/old"])
"""


def test_failures_show_a_readable_diff(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fail=FAILING)
    r = _run(pytester)
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    assert "the tree under / differs from what was expected" in out
    assert "missing:    /etc/missing" in out
    assert "/extra: a file, expected a directory" in out
    # A unified diff of the text.
    assert "-port = 8080" in out and "+port = 80" in out
    assert "its changes differ from what was expected" in out
    assert "missing /nothere" in out and "unexpected /extra" in out
    assert "deleted:  missing /old" in out


def test_fixtures_clean_up(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mounts="""
import os

import pytest

import lamina

STORE = []


def test_leave_a_mount(lamina_graph, lamina_layer_from_dir, tmp_path):
    (tmp_path / "d").mkdir()
    layer = lamina_layer_from_dir(tmp_path / "d")
    box = lamina_graph.create(layer)
    box.mount(persist=True)
    box.mount()
    STORE.append((lamina_graph, box, lamina_graph.root, box.id))


def test_after():
    graph, box, root, box_id = STORE[0]
    with pytest.raises(ValueError, match="closed"):
        graph.create()
    with pytest.raises(ValueError, match="closed"):
        box.mount_count
    with lamina.Graph(root) as again:
        assert again[box_id].mount_count == 0
"""
    )
    r = _run(pytester)
    r.assert_outcomes(passed=2)


def test_driver_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_driver="""
def test_driver(lamina_graph):
    assert lamina_graph.driver == "vfs"
"""
    )
    _run(pytester, "--lamina-driver", "vfs").assert_outcomes(passed=1)


def test_plugin_is_registered() -> None:
    if not plugin_args():
        assert "lamina.pytest_plugin" in sys.modules
