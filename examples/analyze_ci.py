"""Fail a CI job when an image wastes space, as ``dive --ci`` does, from
Python: ``python examples/analyze_ci.py STORE LAYER [--max-wasted 20MB]``.

Prints each layer's account and dive's numbers, and exits 1 when one of
dive's rules fails (lowest efficiency 0.9, highest user wasted ratio 0.1,
highest wasted bytes as given).
"""

from __future__ import annotations

import argparse
import sys

import lamina
from lamina.display import human


def main(argv: list[str] | None = None) -> int:
    """Analyse the layer and check dive's CI rules; the exit status."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("store", help="the lamina store")
    p.add_argument("layer", help="the image's top layer (id or prefix)")
    p.add_argument("--max-wasted", default="disabled", help="e.g. 20MB (default: disabled)")
    args = p.parse_args(argv)
    with lamina.Graph(args.store) as g:
        report = g.get(args.layer).analyze()
    for i, layer in enumerate(report.layers):
        print(
            f"{i:2} {layer.id[:12]} {human(layer.size):>9} "
            f"+{len(layer.added)} ~{len(layer.modified)} -{len(layer.removed)} "
            f"hidden {human(layer.hidden_bytes)}"
        )
    print(f"efficiency {report.efficiency:.2%}, wasted {human(report.wasted_bytes)}")
    for ineff in report.largest_inefficiencies(5):
        print(f"  {ineff.count} x {ineff.path}: {human(ineff.bytes)}")
    results = report.ci(highest_wasted_bytes=args.max_wasted)
    for r in results:
        print(f"{r.status.upper():8} {r.rule}: {r.message}")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
