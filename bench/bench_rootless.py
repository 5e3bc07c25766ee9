"""Rootless containers (issue 17), run as an unprivileged user: create +
mount + unmount of a container of a real image on overlay2 (kernel overlay
in lamina's user namespace) vs vfs (a full copy per container), and the
disk used by 10 containers of each.

    python bench/bench_rootless.py DOCKER_SAVE_DIR [ROUNDS]

DOCKER_SAVE_DIR is a `docker save` directory (manifest.json + layer tars)
readable by the user. Prints one line per measurement; ratios, not
absolute times, are what compares across machines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lamina


def _register(g: lamina.Graph, save: Path) -> lamina.Layer:
    manifest = json.loads((save / "manifest.json").read_text())[0]
    parent = None
    for tar in manifest["Layers"]:
        with open(save / tar, "rb") as f:
            parent = g.register(f, parent=parent)
    assert parent is not None
    return parent


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) * 1024


def main() -> None:
    save = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"uid {os.geteuid()}, kernel {os.uname().release}, rounds {rounds}")
    for driver in ("overlay2", "vfs"):
        root = Path(tempfile.mkdtemp(prefix=f"bench-rootless-{driver}-", dir="/dev/shm"))
        try:
            with lamina.Graph(str(root), driver=driver) as g:
                print(f"{driver}: mount = {g.status()['mount']}")
                image = _register(g, save)
                before = _du(root)
                times = []
                for _ in range(rounds):
                    t = time.perf_counter()
                    c = g.create(parent=image, init=True)
                    Path(c.mount(), "bin/sh").stat()
                    c.unmount()
                    times.append(time.perf_counter() - t)
                    g.delete(c)
                best = min(times)
                print(f"{driver}: create+mount+unmount best {best * 1000:.1f} ms of {rounds}")
                for _ in range(10):
                    g.create(parent=image, init=True)
                print(f"{driver}: 10 containers use {(_du(root) - before) / 2**20:.1f} MiB")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
