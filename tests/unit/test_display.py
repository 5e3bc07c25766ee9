"""The notebook displays: well-formed SVG charts with a bar per layer, the
numbers of the objects they show, and names from a layer escaped (a layer
is a stranger's data: a file named like markup must stay text)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from lamina.display import changes_html, human, percent
from support.layers import open_graph, tar_of

SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"
BASE = tar_of({"etc/": "", "etc/a": "a" * 3000, "etc/b": "b"})
TOP = tar_of({"etc/": "", "etc/a": "A" * 4000, "etc/b": None, f"etc/{EVIL}": "x"})


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


def test_displays(tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        base = g.register(BASE)
        top = g.register(TOP, parent=base)
        box = g.create(top)
        graph = g._repr_html_()
        for layer in (base, top, box):
            assert layer.id[:12] in graph
        assert "rw" in graph and "ro" in graph
        layer = top._repr_html_()
        assert top.id in layer and top.diff_id is not None and top.diff_id in layer
        (chart,) = _svgs(layer)
        assert float(chart.get("width", 0)) > 0 and float(chart.get("height", 0)) > 0
        rects = chart.iter(f"{SVG}rect")
        bars = [r for r in rects if r.find("*") is not None]
        assert len(bars) == 2  # one per layer of the chain
        changes = top.changes()
        html = changes._repr_html_()
        assert html == changes_html(changes)
        assert EVIL not in html and "&lt;script&gt;" in html
        assert f"<b>{len(changes)} changes</b>" in html
        report = top.analyze()
        html = report._repr_html_()
        assert percent(report.efficiency) in html and human(report.wasted_bytes) in html
        assert EVIL not in html
        (chart,) = [s for s in _svgs(html) if "lamina-chart" in s.get("class", "")]
        titles = [t.text or "" for t in chart.iter(f"{SVG}title")]
        # The chart's title, then per layer its size and its hidden bytes.
        assert len(titles) == 1 + 2 * len(report.layers)
        assert f"{human(report.layers[0].hidden_bytes)}" in titles[2]
