"""Graph.check() mounts every layer (and leaves nothing mounted); a layer
that does not mount is a problem, and repair removes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.layers import DRIVERS, open_graph, tar_of
from support.mounts import mount_points

BASE = tar_of({"etc/": "", "etc/os-release": "ID=lamina\n"})


@pytest.mark.parametrize("driver", DRIVERS)
def test_check_mounts_every_layer_and_leaves_nothing_mounted(tmp_path: Path, driver: str) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        box = g.create(g.register(BASE), init=True)
        before = set(mount_points())
        assert g.check()["problems"] == []
        assert set(mount_points()) == before
        with box.mounted():
            # A layer mounted by its user stays mounted through a check.
            assert g.check()["problems"] == [] and box.mount_count == 1
        assert box.mount_count == 0


def test_a_layer_that_does_not_mount_is_removed_by_repair(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "overlay") as g:
        base = g.register(BASE)
        box = g.create(base)
        shutil.rmtree(Path(g.root, "layers", box.id, "work"))
        problems = g.check()["problems"]
        assert [p["layer"] for p in problems] == [box.id]
        assert "incomplete" in problems[0]["what"] or "does not mount" in problems[0]["what"]
        repaired = g.repair()
        assert repaired["problems"] == [] and box.id not in g and base.id in g
