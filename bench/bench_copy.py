"""Benchmark: lamina.copy_dir against cp -a / cp -al and shutil.copytree.

Run as root: ``python bench/bench_copy.py [--runs N] [--fs ext4,xfs,tmpfs]``.
It re-executes itself in a private mount namespace and builds its own
filesystems there (ext4 and xfs on loop devices whose image files live on a
tmpfs, and a plain tmpfs), so the root filesystem's state never enters a
figure. On each it copies two trees: the Debian minbase rootfs of the test
suite and a generated tree of 100,000 small files.

Caches are warm: each method runs N times on the same source (its first run
already brings the source into the page cache), the best run counts, and
before every run the previous copy is removed and everything is synced, so no
writeback of an earlier run lands in a later one.

Prints a markdown table and writes it to bench/README.md under "copy_dir".
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import lamina  # noqa: E402

SMALL_FILES = 100_000
SIZE = "6g"


def reexec_in_namespace() -> None:
    if os.environ.get("LAMINA_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_copy.py needs root (loop mounts, device nodes, owners)")
    args = ["unshare", "--mount", "--propagation", "private", "--"]
    args += [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    os.execvpe("unshare", args, {**os.environ, "LAMINA_BENCH_NS": "1"})


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def make_fs(kind: str, base: Path) -> Path:
    mnt = base / kind
    mnt.mkdir()
    if kind == "tmpfs":
        sh("mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mnt))
        return mnt
    img = base / "images" / f"{kind}.img"
    with open(img, "wb") as f:
        f.truncate(int(SIZE[:-1]) << 30)
    if kind == "ext4":
        # One inode per 4 KiB: the small-file tree and two copies fit.
        sh(
            "mkfs.ext4",
            "-q",
            "-F",
            "-i",
            "4096",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            str(img),
        )
    else:
        sh("mkfs.xfs", "-q", "-f", str(img))  # reflink=1 is mkfs.xfs's default
    sh("mount", "-o", "loop", str(img), str(mnt))
    return mnt


def small_tree(root: Path, files: int = SMALL_FILES) -> None:
    """100 dirs x 10 subdirs x 100 files of 0-4 KiB, deterministic."""
    rng = random.Random(42)
    blob = rng.randbytes(8192)
    per_leaf = 100
    n = 0
    for a in range(files // (10 * per_leaf)):
        for b in range(10):
            d = root / f"d{a:03}" / f"s{b}"
            d.mkdir(parents=True)
            for c in range(per_leaf):
                size = rng.randrange(0, 4096)
                off = rng.randrange(0, 4096)
                (d / f"f{c:03}").write_bytes(blob[off : off + size])
                n += 1
    assert n == files


def skip_special(directory: str, names: list[str]) -> list[str]:
    """shutil.copytree reads a device node as a file (/dev/zero: forever);
    leave the rootfs's few device nodes and FIFOs out of its copy."""
    out = []
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            out.append(name)
    return out


METHODS: dict[str, Callable[[Path, Path], object]] = {
    "copy_dir": lambda s, d: lamina.copy_dir(s, d),
    "cp -a": lambda s, d: sh("cp", "-a", str(s), str(d)),
    "shutil.copytree": lambda s, d: shutil.copytree(s, d, symlinks=True, ignore=skip_special),
    "copy_dir(hardlink)": lambda s, d: lamina.copy_dir(s, d, hardlink=True),
    "cp -al": lambda s, d: sh("cp", "-al", str(s), str(d)),
}


def clean(path: Path) -> None:
    if path.exists():
        sh("rm", "-rf", str(path))
    os.sync()


def best_of(method: str, src: Path, dst: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        clean(dst)
        t0 = time.perf_counter()
        METHODS[method](src, dst)
        times.append(time.perf_counter() - t0)
    clean(dst)
    return min(times)


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| fs | tree | copy_dir | cp -a | shutil.copytree | copy_dir / cp -a "
        "| shutil / copy_dir | copy_dir(hardlink) | cp -al | copy_dir(hardlink) / cp -al |"
    )
    out = [head, "|" + "---|" * 10]
    for r in rows:
        t = r["t"]
        assert isinstance(t, dict)
        out.append(
            f"| {r['fs']} | {r['tree']} | {t['copy_dir']:.3f} s | {t['cp -a']:.3f} s "
            f"| {t['shutil.copytree']:.3f} s | **{t['copy_dir'] / t['cp -a']:.2f}x** "
            f"| {t['shutil.copytree'] / t['copy_dir']:.1f}x "
            f"| {t['copy_dir(hardlink)']:.3f} s | {t['cp -al']:.3f} s "
            f"| **{t['copy_dir(hardlink)'] / t['cp -al']:.2f}x** |"
        )
    return "\n".join(out)


def write_readme(md: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    start = text.find("\n## copy_dir\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end:] if end >= 0 else "\n")
    readme.write_text(text.rstrip("\n") + "\n\n" + md.rstrip("\n") + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fs", default="ext4,xfs,tmpfs")
    ap.add_argument("--files", type=int, default=SMALL_FILES)
    ap.add_argument("--no-readme", action="store_true", help="print only")
    opts = ap.parse_args()
    reexec_in_namespace()
    from support.rootfs import debian_rootfs

    rootfs = debian_rootfs()
    load = [os.getloadavg()[0]]
    base = Path(tempfile.mkdtemp(prefix="lamina-bench-"))
    rows: list[dict[str, object]] = []
    try:
        # Image files and the generated tree's staging copy live in RAM.
        (base / "images").mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=20g", "tmpfs", str(base / "images"))
        stage = base / "images" / "small"
        small_tree(stage, opts.files)
        for kind in opts.fs.split(","):
            mnt = make_fs(kind, base)
            for tree, origin in [("debian rootfs", rootfs), (f"{opts.files:,} small files", stage)]:
                src = mnt / "src"
                sh("cp", "-a", str(origin), str(src))
                t = {m: best_of(m, src, mnt / "dst", opts.runs) for m in METHODS}
                rows.append({"fs": kind, "tree": tree, "t": t})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                clean(src)
            sh("umount", str(mnt))
        load.append(os.getloadavg()[0])
    finally:
        subprocess.run(["umount", "-R", str(base / "images")], check=False)
        shutil.rmtree(base, ignore_errors=True)

    cp_version = subprocess.run(["cp", "--version"], capture_output=True, text=True).stdout
    cp_version = cp_version.splitlines()[0]
    md = "\n".join(
        [
            "## copy_dir",
            "",
            f"`python bench/bench_copy.py` on {datetime.date.today().isoformat()}: "
            f"{os.cpu_count()} cores, Linux {platform.release()}, "
            f"{cp_version}, "
            f"Python {platform.python_version()}. ext4 and xfs are loop-mounted images "
            "stored on a tmpfs; best of "
            f"{opts.runs} warm runs (source in the page cache, previous copy removed and "
            "synced before each run). Ratios below 1.00x mean copy_dir is faster. "
            "shutil.copytree(symlinks=True) skips the rootfs's device nodes (it would read "
            "/dev/zero forever). Load average (1 min) at start and end: "
            f"{load[0]:.1f}, {load[-1]:.1f}; other jobs shared the machine, so figures vary "
            "between runs by some 20%.",
            "",
            table(rows),
            "",
        ]
    )
    print()
    print(md)
    if not opts.no_readme:
        write_readme(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
