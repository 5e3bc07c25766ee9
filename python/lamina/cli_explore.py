"""The exploring verbs of the ``lamina`` command line: ``tree REF`` (a
layer's merged file tree) and ``analyze REF`` (dive's analysis, as a table,
as JSON, or as dive's CI check)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lamina.analysis import DEFAULT_RULES, Report, analyze
from lamina.display import human, layer_rows, percent, short, wasted_note

__all__ = ["add_analyze", "add_tree_args", "run_analyze", "run_file_tree"]


def add_tree_args(v: argparse.ArgumentParser) -> None:
    """``tree [REF [PATH]] [--depth N]``."""
    v.add_argument("ref", nargs="?", help="a layer: show its merged file tree (default: the graph)")
    v.add_argument("path", nargs="?", default="/", help="where in the layer to start (default /)")
    v.add_argument("--depth", type=int, default=None, help="levels to show below PATH")


def add_analyze(verbs: Any) -> None:
    """The ``analyze`` verb."""
    v = verbs.add_parser(
        "analyze", help="dive's analysis of a layer's chain: efficiency, wasted bytes"
    )
    v.add_argument("ref", help="the top layer (id or prefix), or an image name")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument(
        "--ci",
        action="store_true",
        help="check dive's CI rules; exit 1 when one fails (as `dive --ci`)",
    )
    v.add_argument(
        "--lowest-efficiency",
        default=DEFAULT_RULES["lowestEfficiency"],
        help="fail below this efficiency, 0-1 (default 0.9; 'disabled' turns it off)",
    )
    v.add_argument(
        "--highest-wasted-bytes",
        default=DEFAULT_RULES["highestWastedBytes"],
        help="fail above these wasted bytes, e.g. 20MB (default disabled)",
    )
    v.add_argument(
        "--highest-user-wasted-percent",
        default=DEFAULT_RULES["highestUserWastedPercent"],
        help="fail above this ratio of wasted to user bytes, 0-1 (default 0.1)",
    )
    v.add_argument("--top", type=int, default=10, help="inefficient files to list (default 10)")


def _report(graph: Any, ref: str) -> Report:
    """The report of a layer (id or prefix) or else of an image's top layer;
    a reference that names neither is the layer's error."""
    from lamina.errors import ImageNotFound, LayerNotFound

    try:
        return analyze(graph.get(ref))
    except LayerNotFound as no_layer:
        try:
            image = graph.image(ref)
        except (ImageNotFound, ValueError):
            raise no_layer from None
        return analyze(image.layer, name=ref)


def _text(report: Report, top: int, enc: str) -> str:
    from lamina.cli import escape_path, table

    header = ["#", "LAYER", "SIZE", "ADDED", "MODIFIED", "REMOVED", "HIDDEN"]
    out = [table(layer_rows(report), header), ""]
    pct = report.user_wasted_percent
    out.append(f"efficiency:           {percent(report.efficiency)}")
    out.append(f"wasted bytes:         {report.wasted_bytes} ({human(report.wasted_bytes)})")
    note = wasted_note(report)
    out.append(f"user wasted percent:  {percent(pct)}" + (" (*)" if note else ""))
    out.append(f"image size:           {report.size_bytes} ({human(report.size_bytes)})")
    if note:
        out.append(f"(*) {note}")
    ineff = report.largest_inefficiencies(top)
    out.append("")
    if ineff:
        out.append(f"largest inefficient files ({len(report.inefficiencies)} in all):")
        out.append(
            table(
                [[str(i.count), human(i.bytes), escape_path(i.path, enc)] for i in ineff],
                ["COUNT", "WASTED", "PATH"],
            )
        )
    else:
        out.append("inefficient files: none")
    return "\n".join(out)


def run_analyze(graph: Any, args: argparse.Namespace) -> int:
    """``lamina analyze``: 0, or with ``--ci`` 1 when a rule fails."""
    report = _report(graph, args.ref)
    results = (
        report.ci(
            lowest_efficiency=args.lowest_efficiency,
            highest_wasted_bytes=args.highest_wasted_bytes,
            highest_user_wasted_percent=args.highest_user_wasted_percent,
        )
        if args.ci
        else []
    )
    failed = any(r.status == "fail" for r in results)
    if args.json:
        data = report.to_dict()
        if args.ci:
            data["ci"] = {
                "pass": not failed,
                "rules": [
                    {"rule": r.rule, "status": r.status, "message": r.message} for r in results
                ],
            }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_text(report, args.top, sys.stdout.encoding or "utf-8"))
        if args.ci:
            print()
            for r in results:
                print(f"  {r.status.upper():8}  {r.rule}: {r.message}")
            print("\nresult: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def run_file_tree(graph: Any, args: argparse.Namespace) -> int:
    """``lamina tree REF [PATH]``: the layer's merged view as a tree, each
    entry with its size and the layer that provides it."""
    from lamina.cli import escape_path

    layer = graph.get(args.ref)
    enc = sys.stdout.encoding or "utf-8"
    entries = iter(layer.walk(args.path))
    top = next(entries)
    base = top.path.rstrip("/")
    print(escape_path(top.path, enc))
    # Siblings come sorted, parents first: a line's prefix needs to know
    # whether each ancestor is the last of its siblings, so the walk is
    # read one directory level ahead.
    rows = []
    for e in entries:
        rel = e.path[len(base) + 1 :] if base else e.path[1:]
        depth = rel.count("/")
        if args.depth is not None and depth >= args.depth:
            continue
        rows.append((rel.split("/"), e))
    last_at: dict[tuple[str, ...], str] = {}
    for parts, _ in rows:
        last_at[tuple(parts[:-1])] = parts[-1]
    for parts, e in rows:
        prefix = "".join(
            "    " if last_at.get(tuple(parts[:i])) == parts[i] else "│   "
            for i in range(len(parts) - 1)
        )
        mark = "└── " if last_at[tuple(parts[:-1])] == parts[-1] else "├── "
        what = ""
        if e.type == "symlink":
            what = f" -> {e.linkname}"
        elif e.type == "hardlink":
            what = f" => {e.linkname}"
        size = f"  {human(e.size)}" if e.type == "file" else ""
        from_layer = f"  [{short(e.layer)}]" if e.layer else ""
        line = f"{prefix}{mark}{parts[-1]}{what}{size}{from_layer}"
        print(escape_path(line, enc))
    return 0
