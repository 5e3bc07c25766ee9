"""``lamina demo`` / ``make demo``: build a small layered tree and show each step.

1. a full copy of a real directory of this machine (the base layer's tree),
2. a hard-link copy of that base (how the seed's overlay driver starts every
   child layer: file data shared, metadata never written through),
3. an ``-init`` layer made by ``setup_init_layer``.
"""

from __future__ import annotations

import os
import shutil
import stat
import sysconfig
import tempfile
import time
from pathlib import Path

import lamina


def _count(root: Path) -> tuple[int, int, int]:
    """(entries, regular files, bytes of regular files) under root."""
    entries = files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return entries, files, size


def _shared_inodes(a: Path, b: Path) -> int:
    shared = 0
    for dirpath, _, filenames in os.walk(b):
        for name in filenames:
            p = os.path.join(dirpath, name)
            q = os.path.join(a, os.path.relpath(p, b))
            sp, sq = os.lstat(p), os.lstat(q)
            if stat.S_ISREG(sp.st_mode) and (sp.st_dev, sp.st_ino) == (sq.st_dev, sq.st_ino):
                shared += 1
    return shared


def _step(title: str) -> float:
    print(f"\n== {title}")
    return time.perf_counter()


def _default_source() -> str:
    # As root, /etc is the most container-like tree; others may not read all of it.
    return "/etc" if os.geteuid() == 0 else sysconfig.get_paths()["stdlib"]


def run(source: str | None = None, keep: bool = False) -> int:
    src = Path(source or _default_source())
    work = Path(tempfile.mkdtemp(prefix="lamina-demo-"))
    print(f"lamina {lamina.__version__}: layered tree demo in {work}")
    try:
        base = work / "layers/base/root"
        base.parent.mkdir(parents=True)
        t = _step(f"base layer: full copy of {src} (reflink/copy_file_range, holes kept)")
        lamina.copy_dir(src, base)
        entries, files, size = _count(base)
        print(
            f"   {entries} entries, {files} files, {size / 1e6:.1f} MB "
            f"in {time.perf_counter() - t:.3f}s"
        )

        child = work / "layers/child/root"
        child.parent.mkdir(parents=True)
        t = _step("child layer: hard-link copy of the base (the seed's overlay ApplyDiff start)")
        lamina.copy_dir(base, child, hardlink=True)
        shared = _shared_inodes(base, child)
        took = time.perf_counter() - t
        print(f"   {shared} of {files} files share the base's inode, in {took:.3f}s")

        init = work / "layers/child-init/root"
        init.mkdir(parents=True)
        t = _step("init layer: setup_init_layer (what `docker create` adds under a container)")
        lamina.setup_init_layer(init)
        for _kind, path, *target in lamina.INIT_LAYER_ENTRIES:
            st = os.lstat(init / path.lstrip("/"))
            extra = f" -> {target[0]}" if target else ""
            print(f"   {stat.filemode(st.st_mode)}  {path}{extra}")

        _step("the layered tree")
        for layer in sorted((work / "layers").iterdir()):
            e, f, s = _count(layer / "root")
            print(f"   {layer.name:<12} {e:>7} entries {f:>7} files {s / 1e6:>8.1f} MB")
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work)
    return 0
