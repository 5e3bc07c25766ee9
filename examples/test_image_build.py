"""What a build tool's test suite writes with lamina's pytest plugin (run
it with ``pytest examples/test_image_build.py``): build an image layer
the way the tool does, then assert on the files it holds and on what it
changed, with no daemon and no root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lamina
from lamina.pytest_plugin import File, Symlink, assert_changes, assert_layer_tree


def build_app(graph: lamina.Graph, base: lamina.Layer, src: Path) -> lamina.Layer:
    """The build step under test: copy the app in, add a launcher, drop
    the motd; committed as a read-only layer."""
    box = graph.create(base)
    with box.mounted() as root:
        app = Path(root, "app")
        app.mkdir()
        (app / "main.py").write_text((src / "main.py").read_text())
        (app / "run").write_text("#!/bin/sh\nexec python3 /app/main.py\n")
        os.chmod(app / "run", 0o755)
        os.symlink("/app/run", Path(root, "usr/bin/app"))
        os.remove(Path(root, "etc/motd"))
    layer = graph.commit(box)
    graph.delete(box)
    return layer


def test_the_app_layer(
    lamina_graph: lamina.Graph,
    lamina_layer_from_dir: Callable[..., lamina.Layer],
    tmp_path: Path,
) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc/motd").write_text("welcome\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("print('hello')\n")

    app = build_app(lamina_graph, lamina_layer_from_dir(rootfs), src)

    assert_layer_tree(
        app,
        {"main.py": "print('hello')\n", "run": File(mode=0o755)},
        path="/app",
    )
    assert_layer_tree(app, {"/usr/bin/app": Symlink("/app/run")}, exact=False)
    assert_changes(
        app,
        added=["/app", "/app/main.py", "/app/run", "/usr/bin/app"],
        deleted=["/etc/motd"],
    )
    # The base layer still carries the motd the app layer deletes: dive
    # counts those bytes as wasted.
    report = app.analyze()
    assert report.wasted_bytes == len("welcome\n")
    assert [i.path for i in report.inefficiencies] == ["/etc/motd"]
