"""The ``lamina`` command line (DESIGN.md §5)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lamina.errors import LaminaError


def default_root() -> str:
    """``$LAMINA_ROOT``, else ``/var/lib/lamina`` for root, else under XDG."""
    if env := os.environ.get("LAMINA_ROOT"):
        return env
    if os.geteuid() == 0:
        return "/var/lib/lamina"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(data, "lamina")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina", description="A container image layer store.")
    p.add_argument("--root", default=None, help="store directory (default: %(default)s)")
    p.add_argument("--driver", default="auto", help="overlay | overlay2 | vfs | auto")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    demo = verbs.add_parser("demo", help="build a small layered tree and show each step")
    demo.add_argument("--keep", action="store_true", help="keep the demo's work directory")
    demo.add_argument("--source", default="/etc", help="real directory to hard-link-copy")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "demo":
            from lamina.demo import run

            return run(source=args.source, keep=args.keep)
    except (LaminaError, OSError) as e:
        print(f"lamina: {e}", file=sys.stderr)
        return 1
    return 2
