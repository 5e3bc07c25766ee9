"""Graph.check() and Graph.repair() (issue 12): a store damaged in each way
lamina can tell, checked (nothing changes) then repaired; the oracle for a
layer's health is its own tar, reassembled and hashed against its diff ID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lamina
from support.layers import open_graph, tar_of

BASE = tar_of({"etc/": "", "etc/os-release": "ID=lamina\n", "bin/": "", "bin/sh": "#!\n"})
MID = tar_of({"etc/app.conf": "a=1\n"})
TOP = tar_of({"etc/top": "t\n"})


def _chain(g: lamina.Graph) -> tuple[lamina.Layer, lamina.Layer, lamina.Layer]:
    base = g.register(BASE)
    mid = g.register(MID, parent=base)
    top = g.register(TOP, parent=mid)
    return base, mid, top


def _layer_dir(g: lamina.Graph, layer: lamina.Layer) -> Path:
    return Path(g.root, "layers", layer.id)


def test_a_healthy_store_has_no_problems(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        _chain(g)
        g.create(g.layers()[-1], init=True)
        report = g.check()
        assert report == {"layers": 5, "problems": []}
        repaired = g.repair()
        assert repaired["problems"] == [] and repaired["layers"] == 5


def test_changed_file_is_found_and_its_layer_removed_with_children(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base, mid, top = _chain(g)
        changed = _layer_dir(g, mid) / "root/etc/app.conf"
        changed.write_text("a=2\n")
        report = g.check()
        assert len(report["problems"]) == 1
        p = report["problems"][0]
        assert p["layer"] == mid.id and p["path"] == str(changed)
        assert "changed" in p["what"]
        assert mid.id in g and len(g) == 3  # check changes nothing
        repaired = g.repair()
        assert repaired["problems"] == []
        removed = {a["layer"] for a in repaired["actions"] if a["what"].startswith("removed")}
        assert removed == {mid.id, top.id}
        assert [layer.id for layer in g.layers()] == [base.id]
        assert base.diff() == BASE


def test_wrong_size_records_are_rebuilt(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base, _, _ = _chain(g)
        record = _layer_dir(g, base) / "layer.json"
        rec = json.loads(record.read_text())
        right = (rec["size"], rec["tar_size"])
        rec["size"], rec["tar_size"] = 1, None
        record.write_text(json.dumps(rec))
        (problem,) = g.check()["problems"]
        assert problem["layer"] == base.id and "size records" in problem["what"]
        repaired = g.repair()
        assert repaired["problems"] == [] and len(g) == 3
        assert (g[base.id].size, g[base.id].tar_size) == right


def test_incomplete_and_orphaned_layers_are_removed(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base, _mid, top = _chain(g)
        (_layer_dir(g, top) / "layer.json").unlink()
        shutil.rmtree(_layer_dir(g, base) / "root")
        problems = {(p["layer"], p["what"].split(":")[0]) for p in g.check()["problems"]}
        assert (top.id, "incomplete") in problems and (base.id, "incomplete") in problems
        repaired = g.repair()
        assert repaired["problems"] == [] and len(g) == 0
        assert os.listdir(Path(g.root, "layers")) == []


def test_corrupt_record_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base, _, _ = _chain(g)
        (_layer_dir(g, base) / "layer.json").write_text("{broken")
        (problem,) = [p for p in g.check()["problems"] if p["layer"] == base.id]
        assert "unparsable" in problem["what"]
        assert g.repair()["problems"] == []


def test_cli_check_and_repair(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        _, mid_layer, _ = _chain(g)
        (_layer_dir(g, mid_layer) / "root/etc/app.conf").write_text("a=2\n")
        mid = mid_layer.id

    def cli(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lamina", "--root", str(root), verb],
            capture_output=True,
            text=True,
        )

    r = cli("check")
    assert r.returncode == 1 and r.stdout.startswith(f"problem {mid[:12]} ")
    assert "3 layer(s), 1 problem(s)" in r.stderr
    r = cli("repair")
    assert r.returncode == 0 and f"repaired {mid[:12]}" in r.stdout
    assert cli("check").returncode == 0
