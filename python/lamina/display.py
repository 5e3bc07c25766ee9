"""Notebook displays: the ``_repr_html_`` of :class:`lamina.Graph`,
:class:`lamina.Layer`, a layer's changes and an analysis report.

Plain HTML with inline SVG charts: no script, no stylesheet from the
network, no plotting library, so the output renders the same in Jupyter,
in an exported HTML page and on GitHub.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from lamina._lamina import Change, Graph, Layer
    from lamina.analysis import Report

__all__ = [
    "GRAPH_DEPTH",
    "GRAPH_LIMIT",
    "WASTED_NOTE",
    "ChangeList",
    "changes_html",
    "graph_html",
    "human",
    "layer_html",
    "percent",
    "report_html",
    "tree_rows",
    "wasted_note",
]

KIND_COLORS = {"A": "#2e7d32", "C": "#b26a00", "D": "#c62828"}
KIND_NAMES = {"A": "added", "C": "modified", "D": "removed"}
BAR = "#4f7cac"
WASTE = "#d9534f"
FONT = "font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px"


def human(n: float) -> str:
    """``n`` bytes as a short decimal size: ``"1.2 MB"``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover - unreachable


def percent(ratio: float) -> str:
    """``ratio`` as a percentage with two decimals, or as many more as it
    takes not to round a ratio below 1 up to 100% (``"99.99999%"``);
    ``"inf"`` for an infinite one."""
    if math.isinf(ratio):
        return "inf"
    for digits in range(2, 12):
        text = f"{ratio:.{digits}%}"
        if ratio >= 1 or float(text[:-1]) < 100:
            return text
    return f"{ratio:.12%}"


WASTED_NOTE = (
    "over 100%: wasted bytes count every copy of a path present in two or more "
    "layers (the base layer's too, as dive counts them), so they can exceed the "
    "size of the layers above the base, and even the image's size"
)
"""Why a user wasted percent can pass 100%: dive's formula (see
:mod:`lamina.analysis`)."""


def wasted_note(report: Report) -> str | None:
    """:data:`WASTED_NOTE` when ``report``'s user wasted percent is over
    100% (or infinite: no bytes above the base), else ``None``."""
    return WASTED_NOTE if report.user_wasted_percent > 1 else None


def short(layer_id: str) -> str:
    """The 12-character form of an id (``-init`` kept)."""
    init = "-init" if layer_id.endswith("-init") else ""
    return layer_id[:12] + init


def layer_rows(report: Report) -> list[list[str]]:
    """A line of text cells per layer of ``report``: its index, short id,
    size, what it adds, modifies and removes (count and bytes), and its
    bytes hidden by later layers."""
    return [
        [
            str(i),
            short(lay.id),
            human(lay.size),
            f"{len(lay.added)} ({human(lay.added_bytes)})",
            f"{len(lay.modified)} ({human(lay.modified_bytes)})",
            f"{len(lay.removed)} ({human(lay.removed_bytes)})",
            human(lay.hidden_bytes),
        ]
        for i, lay in enumerate(report.layers)
    ]


def _children(layers: Iterable[Layer]) -> dict[str | None, list[Layer]]:
    """Each layer's children (``None``: the base layers), oldest first."""
    children: dict[str | None, list[Layer]] = {}
    for layer in layers:
        parent = layer.parent
        children.setdefault(parent.id if parent else None, []).append(layer)
    for kids in children.values():
        kids.sort(key=lambda lay: (lay.created, lay.id))
    return children


def _preorder(children: dict[str | None, list[Layer]]) -> Iterator[tuple[int, Layer]]:
    """``(depth, layer)``, parents before children, siblings oldest first.
    Iterative: a chain of any depth is a loop, not a recursion."""
    todo = [(0, layer) for layer in reversed(children.get(None, []))]
    while todo:
        depth, layer = todo.pop()
        yield depth, layer
        todo.extend((depth + 1, kid) for kid in reversed(children.get(layer.id, [])))


def tree_rows(layers: Iterable[Layer]) -> list[tuple[str, Layer]]:
    """The layers as tree lines, parents before children: ``(prefix,
    layer)`` with ``prefix`` drawn as ``├── `` / ``└── ``. Iterative: a
    chain of any depth is a loop, not a recursion."""
    children = _children(layers)
    out: list[tuple[str, Layer]] = []
    todo: list[tuple[Layer, str, str]] = []

    def push(parent: str | None, prefix: str) -> None:
        below = children.get(parent, [])
        for i, layer in reversed(list(enumerate(below))):
            last = i == len(below) - 1
            todo.append(
                (
                    layer,
                    prefix + ("└── " if last else "├── "),
                    prefix + ("    " if last else "│   "),
                )
            )

    push(None, "")
    while todo:
        layer, line, inner = todo.pop()
        out.append((line, layer))
        push(layer.id, inner)
    return out


def _scale(values: Sequence[float]) -> float:
    return math.log10(1 + max(values, default=0)) or 1.0


def bar_chart(
    rows: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[tuple[str, str]],
    *,
    title: str,
    log: bool = True,
) -> str:
    """A horizontal bar chart as inline SVG: one group of bars per row
    (``(label, values)``), one bar per series (``(name, colour)``), each
    labelled with its size. ``log``: bar lengths on a log scale, so a
    5-byte layer stays visible beside a 200 MB one."""
    label_w, bar_w, value_w, bar_h, gap = 150, 330, 80, 12, 8
    group_h = bar_h * len(series) + gap
    legend_h = 22
    height = legend_h + group_h * max(len(rows), 1) + 4
    width = label_w + bar_w + value_w
    scale = _scale([v for _, vals in rows for v in vals])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" style="{FONT}" class="lamina-chart">',
        f"<title>{escape(title)}</title>",
    ]
    x = label_w
    for name, colour in series:
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="13">{escape(name)}</text>')
        x += 20 + 7 * len(name)
    if log:
        parts.append(f'<text x="{width - 4}" y="13" text-anchor="end" fill="#777">log scale</text>')
    for i, (label, vals) in enumerate(rows):
        y0 = legend_h + i * group_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + bar_h * len(series) / 2 + 4:.0f}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        for j, (v, (_, colour)) in enumerate(zip(vals, series)):
            frac = (math.log10(1 + v) / scale) if log else (v / (10**scale - 1 or 1))
            w = max(bar_w * frac, 1.5 if v > 0 else 0)
            y = y0 + j * bar_h
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                f'fill="{colour}"><title>{escape(label)}: {human(v)}</title></rect>'
            )
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}">{human(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table style='{FONT}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _layer_bytes(layer: Layer) -> int:
    """A layer's size for a chart: its tar's content bytes, or for a layer
    made by ``create`` (size 0) the bytes its changes add."""
    if layer.size or not layer.writable:
        return layer.size
    try:
        return layer.diff_size()
    except OSError:  # pragma: no cover - a layer removed meanwhile
        return 0


GRAPH_LIMIT = 400
"""At most this many layers in ``Graph._repr_html_``: a big store stays a
page (``graph.layers()`` lists them all)."""
GRAPH_DEPTH = 64
"""Nesting stops at this depth: deeper layers are listed under their
ancestor at that depth, each marked with its parent, so a long chain does
not run off the right of the page (or past a browser's nesting limit)."""
_UL = "list-style:none;margin:0;padding-left:1.4em;border-left:1px solid #ccc"


def graph_html(graph: Graph, *, limit: int = GRAPH_LIMIT, max_depth: int = GRAPH_DEPTH) -> str:
    """``Graph._repr_html_``: the store's layers as a tree, each layer a
    list item (``<li data-layer=ID>``) holding its children's list; per
    layer its short id, ``ro`` (read-only) or ``rw`` (a container), size
    with a bar, creation time and the images it is the top layer of. At
    most ``limit`` layers are drawn, parents first, and nesting stops at
    ``max_depth`` (see :data:`GRAPH_LIMIT`, :data:`GRAPH_DEPTH`)."""
    layers = graph.layers()
    order = list(itertools.islice(_preorder(_children(layers)), limit))
    head = (
        f"<div style='{FONT}'><b>lamina.Graph</b> {escape(graph.root)} "
        f"(driver {escape(graph.driver)}, {len(layers)} layers)</div>"
    )
    if not order:
        return head + f"<div style='{FONT}'>(empty store)</div>"
    tops: dict[str, list[str]] = {}
    for image in graph.images():
        tops.setdefault(image.layer.id, []).append(image.name)
    # Sizes only of what is drawn: a container's is a walk of its changes.
    sizes = [_layer_bytes(layer) for _, layer in order]
    scale = _scale(sizes)
    out = [f"<ul class='lamina-tree' style='{FONT};list-style:none;margin:0;padding-left:0'>"]
    prev = -1
    for (depth, layer), size in zip(order, sizes):
        shown = min(depth, max_depth)
        # Pre-order: the next item is a child (one deeper), a sibling, or
        # the sibling of an ancestor; close what it is not inside.
        if shown > prev:
            if prev >= 0:
                out.append(f"<ul style='{_UL}'>")
        else:
            out.append("</li>" + "</ul></li>" * (prev - shown))
        prev = shown
        label = _graph_label(layer, depth, max_depth, size, scale, tops)
        out.append(f"<li data-layer='{escape(layer.id)}'>{label}")
    out.append("</li>" + "</ul></li>" * prev + "</ul>")
    if len(order) < len(layers):
        out.append(
            f"<div style='{FONT}'>... and {len(layers) - len(order)} more layers "
            "(graph.layers() lists them all)</div>"
        )
    return head + "".join(out)


def _graph_label(
    layer: Layer, depth: int, max_depth: int, size: int, scale: float, tops: dict[str, list[str]]
) -> str:
    frac = math.log10(1 + size) / scale
    bar = (
        f'<svg width="120" height="10" role="img"><rect width="{max(120 * frac, 1):.1f}" '
        f'height="10" fill="{BAR}"/></svg>'
    )
    mode = (
        "<span title='writable: a container'>rw</span>"
        if layer.writable
        else "<span title='read-only'>ro</span>"
    )
    parts = []
    if depth > max_depth:
        parent = layer.parent
        on = short(parent.id) if parent else "-"
        parts.append(f"<span title='depth {depth}'>&#8627; on {escape(on)}</span>")
    parts += [
        f"<b>{escape(short(layer.id))}</b>",
        mode,
        escape(human(size).rjust(8)),  # siblings' bars line up (white-space:pre)
        bar,
        escape(layer.created.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    names = tops.get(layer.id, [])
    if names:
        more = f" +{len(names) - 3}" if len(names) > 3 else ""
        listed = ", ".join(escape(n) for n in names[:3])
        parts.append(f"<span style='color:{KIND_COLORS['A']}'>image {listed}{more}</span>")
    return "<span style='white-space:pre'>" + " ".join(parts) + "</span>"


def layer_html(layer: Layer) -> str:
    """``Layer._repr_html_``: a summary, and a size bar per layer of its
    chain."""
    parent = layer.parent
    facts = [
        ("id", layer.id),
        ("parent", parent.id if parent else "-"),
        ("mode", "writable" if layer.writable else "read-only"),
        ("created", layer.created.isoformat()),
        ("size", f"{human(layer.size)} ({layer.size} bytes)"),
        ("tar size", "-" if layer.tar_size is None else human(layer.tar_size)),
        ("diff id", layer.diff_id or "-"),
        ("chain id", layer.chain_id or "-"),
    ]
    if layer.metadata:
        facts.append(("metadata", ", ".join(f"{k}={v!r}" for k, v in layer.metadata.items())))
    summary = _table(["", ""], [[escape(k), escape(str(v))] for k, v in facts])
    chain = layer.chain
    rows = [(f"{i} {short(lay.id)}", [float(_layer_bytes(lay))]) for i, lay in enumerate(chain)]
    chart = bar_chart(rows, [("layer size", BAR)], title=f"the chain of {short(layer.id)}")
    return (
        f"<div style='{FONT}'><b>lamina.Layer</b> {escape(short(layer.id))}</div>"
        + summary
        + f"<div style='{FONT}'>chain, base first ({len(chain)} layers)</div>"
        + chart
    )


class ChangeList(list["Change"]):
    """The list :meth:`lamina.Layer.changes` returns: a plain ``list`` of
    :class:`lamina.Change`, drawn in a notebook as a tree coloured by kind
    (added, modified, removed)."""

    def _repr_html_(self) -> str:
        return changes_html(self)


def changes_html(changes: Sequence[Change], *, limit: int = 400) -> str:
    """A list of changes as a tree, each name coloured by its kind (green
    added, amber modified, red removed; grey: only on the way to one). At
    most ``limit`` lines are drawn."""
    counts = {k: 0 for k in KIND_COLORS}
    kinds: dict[str, str] = {}
    for c in changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
        kinds[c.path] = c.kind
    # Every changed path and the directories on the way to it, sorted so
    # parents come first.
    paths: set[str] = set()
    for p in kinds:
        parts = p.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            paths.add("/" + "/".join(parts[:i]))
    lines: list[str] = []
    for p in sorted(paths, key=lambda s: s.split("/")):
        if len(lines) == limit:
            lines.append(f"<div>... and {len(paths) - limit} more</div>")
            break
        depth = p.count("/") - 1
        name = p.rsplit("/", 1)[-1]
        kind = kinds.get(p)
        colour = KIND_COLORS.get(kind or "", "#888")
        mark = f"{kind} " if kind else "  "
        style = f"color:{colour};padding-left:{depth * 1.2:.1f}em;white-space:pre"
        deco = ";text-decoration:line-through" if kind == "D" else ""
        lines.append(f"<div style='{style}{deco}' title='{escape(p)}'>{mark}{escape(name)}</div>")
    legend = ", ".join(
        f"<span style='color:{KIND_COLORS[k]}'>{counts[k]} {KIND_NAMES[k]}</span>"
        for k in KIND_COLORS
    )
    return f"<div style='{FONT}'><b>{len(changes)} changes</b>: {legend}{''.join(lines)}</div>"


def report_html(report: Report, *, top: int = 10) -> str:
    """``Report._repr_html_``: dive's numbers, a chart of each layer's size
    and wasted (hidden) bytes, the largest inefficient files, and each
    layer's account."""
    name = f" {escape(report.name)}" if report.name else ""
    pct = report.user_wasted_percent
    note = wasted_note(report)
    head = (
        f"<div style='{FONT}'><b>lamina analysis{name}</b>: "
        f"efficiency <b>{percent(report.efficiency)}</b>, "
        f"wasted <b>{human(report.wasted_bytes)}</b> "
        f"({report.wasted_bytes} bytes), user wasted "
        f"<b>{percent(pct)}</b>{'*' if note else ''}, "
        f"image {human(report.size_bytes)} in {len(report.layers)} layers</div>"
    )
    if note:
        head += f"<div style='{FONT};color:#666' class='lamina-note'>* {escape(note)}</div>"
    rows = [
        (f"{i} {short(lay.id)}", [float(lay.size), float(lay.hidden_bytes)])
        for i, lay in enumerate(report.layers)
    ]
    chart = bar_chart(
        rows,
        [("layer size", BAR), ("hidden by later layers", WASTE)],
        title="layer sizes and wasted bytes",
    )
    ineff = _table(
        ["count", "wasted", "path"],
        [
            [str(i.count), human(i.bytes), escape(i.path)]
            for i in report.largest_inefficiencies(top)
        ],
    )
    per_layer = _table(
        ["#", "layer", "size", "added", "modified", "removed", "hidden"],
        [[escape(cell) for cell in row] for row in layer_rows(report)],
    )
    ineff_title = (
        f"<div style='{FONT}'><b>largest inefficient files</b> "
        f"({len(report.inefficiencies)} in all)</div>"
    )
    return head + chart + ineff_title + ineff + per_layer
