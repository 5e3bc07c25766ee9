"""The exploring verbs of the command line (``tree REF``, ``analyze``) and
the progress bars: drawn when stderr is a terminal (a pty here), silent in
pipes and with ``--quiet``."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.display import percent
from support.layers import open_graph, tar_of

BASE = tar_of({"etc/": "", "etc/os-release": "ID=x\n", "etc/big": "b" * 5000, "bin/": ""})
TOP = tar_of(
    {"etc/": "", "etc/big": "c" * 6000, "etc/os-release": None, "bin/": "", "bin/sh": "#!"}
)


def _cli(root: Path, *args: str, stderr_tty: bool = False) -> tuple[int, str, str]:
    cmd = [sys.executable, "-m", "lamina", "--root", str(root), "--driver", "vfs", *args]
    if not stderr_tty:
        r = subprocess.run(cmd, capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, text=True)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.returncode, p.stdout, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        base = g.register(BASE)
        top = g.register(TOP, parent=base)
        return root, top.id


def test_analyze_table_json_and_ci(store: tuple[Path, str]) -> None:
    root, top = store
    with open_graph(root, "vfs") as g:
        report = g[top].analyze()
    rc, out, _ = _cli(root, "analyze", top[:12])
    assert rc == 0
    assert f"efficiency:           {percent(report.efficiency)}" in out
    assert "/etc/big" in out and top[:12] in out
    rc, out, _ = _cli(root, "analyze", top, "--json")
    assert rc == 0 and json.loads(out) == report.to_dict()
    verdict = {r.status for r in report.ci()}
    rc, out, _ = _cli(root, "analyze", top, "--ci")
    assert (rc == 1) == ("fail" in verdict) and ("FAIL" in out) == ("fail" in verdict)
    rc, out, _ = _cli(
        root,
        "analyze",
        top,
        "--ci",
        "--lowest-efficiency",
        "0",
        "--highest-user-wasted-percent",
        "disabled",
        "--highest-wasted-bytes",
        "1MB",
    )
    assert rc == 0 and "result: PASS" in out
    rc, out, _ = _cli(root, "analyze", top, "--ci", "--json", "--highest-wasted-bytes", "1")
    assert rc == 1 and json.loads(out)["ci"]["pass"] is False
    rc, _, err = _cli(root, "analyze", "f" * 12)
    assert rc == 1 and "no layer" in err


def test_tree_of_a_layer(store: tuple[Path, str]) -> None:
    root, top = store
    rc, out, _ = _cli(root, "tree", top[:10], "/etc")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "/etc"
    assert lines[1].startswith("└── big") and "6.0 kB" in lines[1] and f"[{top[:12]}]" in lines[1]
    rc, out, _ = _cli(root, "tree")
    assert rc == 0 and top[:12] in out
    rc, out, _ = _cli(root, "tree", top, "/", "--depth", "1")
    assert rc == 0 and [ln.split()[1] for ln in out.splitlines()[1:]] == ["bin", "etc"]


def test_progress_bars_on_a_terminal_only(store: tuple[Path, str], tmp_path: Path) -> None:
    root, top = store
    tar = tmp_path / "layer.tar"
    tar.write_bytes(tar_of({f"f{i}": "x" * 3000 for i in range(50)}))
    rc, _, err = _cli(root, "register", str(tar), stderr_tty=True)
    assert rc == 0 and "register layer.tar [" in err and "100%" in err
    rc, _, err = _cli(root, "-q", "register", str(tar), stderr_tty=True)
    assert rc == 0 and "register" not in err
    out_file = tmp_path / "out.tar"
    rc, _, err = _cli(root, "diff", top, "-o", str(out_file), stderr_tty=True)
    assert rc == 0 and f"diff {top[:12]} [" in err and "100%" in err
    assert out_file.read_bytes() == TOP
    rc, _, err = _cli(root, "diff", top, "-o", str(out_file))
    assert rc == 0 and err == ""
    rc, _, err = _cli(root, "--quiet", "diff", top, "-o", str(out_file), stderr_tty=True)
    assert rc == 0 and err == ""
    # To stdout (a pipe here), with the bar on the terminal.
    rc, _, err = _cli(root, "diff", top, stderr_tty=True)
    assert rc == 0 and "100%" in err


def test_commit_and_check_draw_bars_on_a_terminal_only(
    store: tuple[Path, str], tmp_path: Path
) -> None:
    root, top = store
    rc, out, _ = _cli(root, "create", top)
    assert rc == 0
    cont = out.strip()
    with open_graph(root, "vfs") as g:
        merged = Path(g[cont].mount())
        (merged / "new").write_bytes(b"n" * 4000)
        g[cont].unmount()
    rc, out, err = _cli(root, "commit", cont, stderr_tty=True)
    assert rc == 0 and f"commit {cont[:12]} [" in err, err
    committed = out.strip()
    rc, out, err = _cli(root, "commit", cont, "img:1", stderr_tty=True)
    assert rc == 0 and out.startswith("img:1 sha256:") and f"commit {cont[:12]} [" in err, err
    rc, _, err = _cli(root, "-q", "commit", cont, stderr_tty=True)
    assert rc == 0 and "commit" not in err
    for verb in ("check", "repair"):
        rc, _, err = _cli(root, verb, stderr_tty=True)
        assert rc == 0 and f"{verb} [" in err and "problem(s)" in err, err
        rc, _, err = _cli(root, verb)
        assert rc == 0 and "[" not in err and "problem(s)" in err, err
    with open_graph(root, "vfs") as g:
        assert g[committed].read("/new") == b"n" * 4000
