"""examples/explore.ipynb, executed (nbclient + ipykernel) on the real
Docker-built image, its outputs checked against independent computations;
then rendered (nbconvert) and loaded in headless Chromium, which must draw
every SVG chart with a non-empty box and raise no script error. The
screenshot is kept; with LAMINA_UPDATE_SCREENSHOT=1 it replaces
docs/explore.png, the picture the README shows."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lamina.display import percent
from support import browser, dive_reference
from support.docker_image import docker_saved_layers

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "explore.ipynb"


def _chain_ids(diff_ids: list[str]) -> list[str]:
    """Layer ids as the store names registered layers: their OCI chain ids,
    computed here from Docker's diff ids."""
    out, chain = [], None
    for d in diff_ids:
        if chain is not None:
            d = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
        chain = d
        out.append(chain.removeprefix("sha256:"))
    return out


def _outputs(nb: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.source, o) for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    saved = docker_saved_layers()
    image_dir = saved[0].tar.parent.parent
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path_factory.mktemp("nb")
    old = os.environ.get("LAMINA_EXAMPLE_IMAGE")
    os.environ["LAMINA_EXAMPLE_IMAGE"] = str(image_dir)
    try:
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        ).execute()
    finally:
        if old is None:
            del os.environ["LAMINA_EXAMPLE_IMAGE"]
        else:
            os.environ["LAMINA_EXAMPLE_IMAGE"] = old
    return nb, saved


def test_the_notebook_runs_on_the_image(executed: Any) -> None:
    nb, saved = executed
    outs = _outputs(nb)
    assert not [o for _, o in outs if o.output_type == "error"]
    ids = _chain_ids([s.diff_id for s in saved])
    html = {src: o["data"]["text/html"] for src, o in outs if "text/html" in o.get("data", {})}
    graph_html = html["graph"]
    for i in ids:
        assert i[:12] in graph_html
    assert ids[-1] in html["top"]
    ref = dive_reference.analyze([s.tar for s in saved])
    report_html = next(h for src, h in html.items() if src.startswith("report = "))
    assert f"efficiency <b>{percent(ref.efficiency)}</b>" in report_html
    assert report_html.count("<svg") >= 1 and "/data/keep/k" in report_html
    summary = next(
        o["text"] for src, o in outs if src.startswith("summary = ") and o.output_type == "stream"
    )
    got = json.loads(summary)
    assert got == {
        "efficiency": ref.efficiency,
        "wasted_bytes": ref.wasted_bytes,
        "size_bytes": ref.size_bytes,
    }
    # The top layer's changes: what its tar lists (each entry is a change).
    with tarfile.open(saved[-1].tar) as t:
        members = [m.name.rstrip("/") for m in t]
    changes_html = html["top.changes()"]
    assert f"<b>{len(members)} changes</b>" in changes_html
    for m in members:
        assert f"title='/{m}'" in changes_html


@pytest.mark.skipif(not browser.available(), reason="Debian's chromium and chromium-driver")
def test_the_rendered_notebook_in_chromium(executed: Any, tmp_path: Path) -> None:
    nb, _ = executed
    body, _ = nbconvert.HTMLExporter(template_name="basic").from_notebook_node(nb)
    page = tmp_path / "explore.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>lamina explore</title>"
        "<style>body{font-family:sans-serif;max-width:1060px;margin:1em}</style></head>"
        f"<body>{body}</body></html>"
    )
    shot = tmp_path / "explore.png"
    seen = browser.render(page, shot)
    assert seen.title == "lamina explore"
    assert not seen.errors, seen.errors
    assert not [m for m in seen.console if m.get("level") == "SEVERE"], seen.console
    charts = [b for b in seen.svg_boxes if "lamina-chart" in b["cls"]]
    assert len(charts) >= 2, seen.svg_boxes
    for box in seen.svg_boxes:
        assert box["width"] > 0 and box["height"] > 0, box
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LAMINA_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, REPO / "docs" / "explore.png")
