"""The graph's notebook tree nests each layer inside its parent's element,
escapes what it shows and stays bounded; the analysis displays explain a
user wasted percent over 100% (dive's formula, checked here against the
Python port of dive) and say nothing when it is under."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lamina
from lamina.display import WASTED_NOTE, graph_html
from support import dive_reference
from support.layers import open_graph, tar_of

EVIL = "<script>alert(1)</script>"


class _Tree(HTMLParser):
    """For each ``<li data-layer>``, the ``data-layer`` of every ``<li>`` it
    is inside; fails on a close tag that does not match the open one."""

    VOID = frozenset({"rect", "br", "img", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.inside: dict[str, list[str]] = {}
        self.order: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        layer = dict(attrs).get("data-layer") if tag == "li" else None
        if layer is not None:
            self.inside[layer] = [x for t, x in self.stack if t == "li" and x is not None]
            self.order.append(layer)
        self.stack.append((tag, layer))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../>

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1][0] == tag, (tag, self.stack[-3:])
        self.stack.pop()


def _parse(html: str) -> _Tree:
    t = _Tree()
    t.feed(html)
    t.close()
    assert t.stack == [], "unclosed elements"
    return t


def _layer(n: int) -> bytes:
    return tar_of({f"f{n}": "x" * n})


Branching = tuple[lamina.Graph, dict[str, lamina.Layer]]


@pytest.fixture
def branching(tmp_path: Path) -> Iterator[Branching]:
    """base -> a -> (b -> d, c); other (a second base); a container on c."""
    root = tmp_path / EVIL / "store"
    with open_graph(root, "vfs") as g:
        base = g.register(_layer(1))
        a = g.register(_layer(2), parent=base)
        b = g.register(_layer(3), parent=a)
        c = g.register(_layer(4), parent=a)
        d = g.register(_layer(5), parent=b)
        other = g.register(_layer(6))
        box = g.create(c)
        g.tag(d, "app:1")
        yield g, {"base": base, "a": a, "b": b, "c": c, "d": d, "other": other, "box": box}


def test_graph_html_nests_children_in_their_parents(branching: Branching) -> None:
    g, ls = branching
    html = g._repr_html_()
    tree = _parse(html)
    assert sorted(tree.order) == sorted(lay.id for lay in g.layers())
    parent_of = {lay.id: (lay.parent.id if lay.parent else None) for lay in g.layers()}
    for layer, outer in tree.inside.items():
        # Inside exactly its ancestors, innermost last.
        chain = []
        p = parent_of[layer]
        while p is not None:
            chain.append(p)
            p = parent_of[p]
        assert outer == chain[::-1], layer
    assert tree.inside[ls["box"].id][-1] == ls["c"].id
    assert ls["b"].id not in tree.inside[ls["c"].id]  # siblings are not nested
    assert tree.inside[ls["other"].id] == []
    # Names are escaped: the store's path holds markup.
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "image app:1" in html and "rw" in html and "ro" in html


def test_graph_html_is_bounded(branching: Branching) -> None:
    g, ls = branching
    tree = _parse(graph_html(g, limit=3))
    assert len(tree.order) == 3  # parents first: base, a, b
    assert tree.order == [ls["base"].id, ls["a"].id, ls["b"].id]
    assert "and 4 more layers" in graph_html(g, limit=3)
    # Past max_depth a layer is listed beside its ancestor at that depth,
    # marked with its parent, and the markup stays well formed.
    flat = graph_html(g, max_depth=1)
    tree = _parse(flat)
    assert tree.inside[ls["d"].id] == [ls["base"].id]
    assert f"on {ls['b'].id[:12]}" in flat
    assert tree.inside[ls["a"].id] == [ls["base"].id]


def _dive_pct(tmp_path: Path, tars: list[bytes]) -> float:
    paths = []
    for i, t in enumerate(tars):
        paths.append(tmp_path / f"l{i}.tar")
        paths[-1].write_bytes(t)
    return dive_reference.analyze(list(paths)).user_wasted_percent


BIG = 50_000
OVER = [  # a big file of the base rewritten twice above it: 3 copies wasted over 2
    tar_of({"big": "a" * BIG}),
    tar_of({"big": "b" * BIG}),
    tar_of({"big": "c" * BIG}),
]
PAST_IMAGE = [  # directory whiteouts count what they remove: wasted > image size
    tar_of({"dir/": "", "dir/f": "a" * BIG}),
    tar_of({"dir": None}),
    tar_of({"dir/": "", "dir/f": "b" * BIG}),
    tar_of({"dir": None}),
]
UNDER = [  # a small file rewritten beside a big new one
    tar_of({"small": "a" * 10}),
    tar_of({"small": "b" * 10, "big": "c" * BIG}),
]


@pytest.mark.parametrize(
    ("tars", "over"),
    [(OVER, True), (PAST_IMAGE, True), (UNDER, False)],
    ids=["over", "past-image", "under"],
)
def test_a_wasted_percent_over_100_is_explained(
    tars: list[bytes], over: bool, tmp_path: Path
) -> None:
    want = _dive_pct(tmp_path, tars)
    assert (want > 1) is over  # the oracle agrees this case is over (or under) 100%
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        top = None
        for t in tars:
            top = g.register(t, parent=top)
        assert top is not None
        report = top.analyze()
        assert report.user_wasted_percent == pytest.approx(want)
        if tars is PAST_IMAGE:
            assert report.wasted_bytes > report.size_bytes
        html = report._repr_html_()
        text = repr(report)
        top_id = top.id
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "--root", str(root), "analyze", top_id],
        capture_output=True,
        text=True,
        check=True,
    )
    for shown in (html, text, r.stdout):
        assert ("every copy of a path present in two or more layers" in shown) is over, shown
    if over:
        assert WASTED_NOTE in text and WASTED_NOTE in r.stdout
        assert "can exceed" in html
