"""``make bench``: run every benchmark in bench/ in turn (each makes its own
filesystems and prints its own table; see bench/README.md for results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    rc = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n### {script.name}", flush=True)
        rc |= subprocess.run([sys.executable, str(script), *sys.argv[1:]]).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
