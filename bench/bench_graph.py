"""Graph benchmarks (issues 4 and 9), per driver, on loop-mounted filesystems:

``graph`` (ext4): a 20-layer image whose layers together hold the files of
one image (same total content):

- register time of each layer;
- mount + unmount latency of a read-only layer and of a container layer;
- ``changes()`` of a container layer with 10 changed files over that image
  (O(changes) on the overlay drivers, target under 10 ms; vfs: a walk of
  both trees);
- inodes the store uses.

``depth`` (ext4, xfs, tmpfs), overlay against overlay2 on the same layers: a
200-layer chain (each layer its own directory of ``CHAIN_FILES`` files), and
on the layer at depth 1, 10, 50, 100 and 200 a probe layer of
``PROBE_FILES`` files registered (best of ``ROUNDS`` rounds over the
depths): the seed's overlay copies the whole tree below first, so its time
grows with depth; overlay2 applies the probe alone. Also mount + unmount of
the layer at each depth (read-only, and a container on it) and the inodes
each driver's store uses.

Run as root: ``.venv/bin/python bench/bench_graph.py [--files N]
[--sections graph,depth] [--fs ext4,xfs,tmpfs]``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lamina

LAYERS = 20
REPEAT = 20
DEPTHS = (1, 10, 50, 100, 200)
CHAIN_FILES = 100
PROBE_FILES = 5000
ROUNDS = 5


def reexec_in_namespace() -> None:
    if os.environ.get("LAMINA_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_graph.py needs root (it mounts an ext4 image and overlays)")
    env = {**os.environ, "LAMINA_BENCH_NS": "1"}
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
    os.execvpe("unshare", cmd, env)


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def layer_tar(n: int, files: int) -> bytes:
    """Layer ``n``: its own directory of ``files`` small files (0..2 KiB)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(files // 100):
            dir_info = tarfile.TarInfo(f"l{n:02}/d{d:03}")
            dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(dir_info)
            for i in range(100):
                data = b"x" * ((d * 100 + i) % 2048)
                info = tarfile.TarInfo(f"l{n:02}/d{d:03}/f{i:02}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def inodes_used(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


@dataclass
class Result:
    register: list[float] = field(default_factory=list)
    inodes: int = 0
    mount_ro: float = 0.0
    mount_rw: float = 0.0
    changes: float = 0.0
    changed: int = 0


def bench_driver(driver: str, fs: Path, tars: list[bytes]) -> Result:
    root = fs / f"store-{driver}"
    before = inodes_used(fs)
    out = Result()
    with lamina.Graph(root, driver=driver) as g:
        parent = None
        for data in tars:
            t = time.perf_counter()
            parent = g.register(data, parent=parent)
            out.register.append(time.perf_counter() - t)
        out.inodes = inodes_used(fs) - before
        assert parent is not None

        def latency(layer: lamina.Layer) -> float:
            t = time.perf_counter()
            for _ in range(REPEAT):
                layer.mount()
                layer.unmount()
            return (time.perf_counter() - t) / REPEAT

        out.mount_ro = latency(parent)
        box = g.create(parent)
        out.mount_rw = latency(box)
        with box.mounted() as rootfs:
            for i in range(10):
                Path(rootfs, f"l{i:02}/d000/f{i:02}").write_text("changed\n")
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            changes = box.changes()
            best = min(best, time.perf_counter() - t)
        out.changes = best
        out.changed = len(changes)
    return out


def make_fs(kind: str, work: Path, size_gb: int, inodes: int) -> Path:
    """A fresh loop-mounted ``kind`` filesystem (or a tmpfs) under ``work``."""
    mnt = work / kind
    mnt.mkdir()
    if kind == "tmpfs":
        run("mount", "-t", "tmpfs", "-o", f"size={size_gb}g,mode=0755", "tmpfs", str(mnt))
        return mnt
    img = work / f"{kind}.img"
    with open(img, "wb") as f:
        f.truncate(size_gb << 30)
    if kind == "ext4":
        run("mkfs.ext4", "-q", "-F", "-N", str(inodes), str(img))
    else:
        run("mkfs.xfs", "-q", "-f", str(img))
    run("mount", "-o", "loop", str(img), str(mnt))
    return mnt


def graph_section(base: Path, files: int) -> None:
    per_layer = files // LAYERS
    tars = [layer_tar(n, per_layer) for n in range(LAYERS)]
    print(
        f"{LAYERS} layers of {per_layer} files ({files} in the image), ext4 on a loop "
        f"device on tmpfs, a fresh one per driver; {os.cpu_count()} cores, "
        f"Linux {os.uname().release}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for driver in ("overlay", "overlay2", "vfs"):
        work = base / driver
        work.mkdir()
        fs = make_fs("ext4", work, 8, 4_000_000)
        try:
            r = bench_driver(driver, fs, tars)
        finally:
            run("umount", "-l", str(fs))
            (work / "ext4.img").unlink()
        reg = r.register
        print(f"\n{driver}:")
        print("  register s, layer 1..20: " + " ".join(f"{t:.2f}" for t in reg))
        print(f"  register total: {sum(reg):.1f} s")
        print(f"  mount+unmount read-only layer: {r.mount_ro * 1e3:.2f} ms")
        print(f"  mount+unmount container layer: {r.mount_rw * 1e3:.2f} ms")
        print(
            f"  changes() of a container with 10 changed files: "
            f"{r.changes * 1e3:.2f} ms ({r.changed} entries)"
        )
        print(f"  store inodes: {r.inodes}")


def chain_tar(n: int, files: int) -> bytes:
    """Chain layer ``n``: a directory of its own, ``files`` files of 0..1 KiB."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(f"c{n:03}")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for i in range(files):
            data = b"c" * ((n * files + i) % 1024)
            info = tarfile.TarInfo(f"c{n:03}/f{i:04}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Depth:
    register: dict[int, float] = field(default_factory=dict)
    mount_ro: dict[int, float] = field(default_factory=dict)
    mount_rw: dict[int, float] = field(default_factory=dict)
    inodes: int = 0
    chain: float = 0.0


def best_of(n: int, f: Callable[[], float]) -> float:
    return min(f() for _ in range(n))


def register_probe(g: lamina.Graph, parent: lamina.Layer, probe: bytes) -> float:
    t = time.perf_counter()
    # An id of its own: the same tar on the same parent would otherwise be
    # found, not registered again.
    layer = g.register(probe, parent=parent, id=os.urandom(32).hex())
    took = time.perf_counter() - t
    g.delete(layer)
    return took


def mount_unmount(layer: lamina.Layer) -> float:
    t = time.perf_counter()
    layer.mount()
    layer.unmount()
    return time.perf_counter() - t


def bench_depth(driver: str, fs: Path, chain: list[bytes], probe: bytes) -> Depth:
    out = Depth()
    before = inodes_used(fs)
    with lamina.Graph(fs / f"depth-{driver}", driver=driver) as g:
        layers: list[lamina.Layer] = []
        t = time.perf_counter()
        for data in chain:
            layers.append(g.register(data, parent=layers[-1] if layers else None))
        out.chain = time.perf_counter() - t
        out.inodes = inodes_used(fs) - before
        # Rounds over every depth rather than one depth at a time, so that
        # other load on the machine falls on every depth alike; the best
        # round counts.
        for _ in range(ROUNDS):
            for d in DEPTHS:
                took = register_probe(g, layers[d - 1], probe)
                out.register[d] = min(out.register.get(d, took), took)
        for d in DEPTHS:
            parent = layers[d - 1]
            out.mount_ro[d] = best_of(REPEAT, lambda p=parent: mount_unmount(p))
            box = g.create(parent)
            out.mount_rw[d] = best_of(REPEAT, lambda b=box: mount_unmount(b))
            g.delete(box)
    return out


def depth_section(base: Path, kinds: list[str]) -> None:
    chain = [chain_tar(n, CHAIN_FILES) for n in range(max(DEPTHS))]
    probe = layer_tar(99, PROBE_FILES)
    print(
        f"\ndepth: a chain of {max(DEPTHS)} layers of {CHAIN_FILES} files each; a probe "
        f"layer of {PROBE_FILES} files registered on the layer at each depth (best of "
        f"{ROUNDS} rounds); "
        f"{os.cpu_count()} cores, Linux {os.uname().release}, "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for kind in kinds:
        work = base / kind
        work.mkdir()
        fs = make_fs(kind, work, 8, 4_000_000)
        try:
            results = {d: bench_depth(d, fs, chain, probe) for d in ("overlay", "overlay2")}
        finally:
            run("umount", "-l", str(fs))
            if kind != "tmpfs":
                (work / f"{kind}.img").unlink()
        print(f"\n{kind}:")
        print("| | " + " | ".join(f"depth {d}" for d in DEPTHS) + " | 200 / 1 |")
        print("|---" * (len(DEPTHS) + 2) + "|")
        for what, attr, unit in (
            ("register probe", "register", 1.0),
            ("mount+unmount ro", "mount_ro", 1e3),
            ("mount+unmount container", "mount_rw", 1e3),
        ):
            for driver, r in results.items():
                row = getattr(r, attr)
                cells = " | ".join(
                    f"{row[d] * unit:.3f} {'s' if unit == 1.0 else 'ms'}" for d in DEPTHS
                )
                ratio = row[max(DEPTHS)] / row[1]
                print(f"| {what}, {driver} | {cells} | {ratio:.2f}x |")
        for driver, r in results.items():
            print(
                f"{driver}: {max(DEPTHS)}-layer chain registered in {r.chain:.1f} s, "
                f"{r.inodes} inodes used"
            )
    print(f"load at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    reexec_in_namespace()
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--sections", default="graph,depth")
    ap.add_argument("--fs", default="ext4,xfs,tmpfs")
    args = ap.parse_args()
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="lamina-bench-graph-") as tmp:
        base = Path(tmp)
        run("mount", "-t", "tmpfs", "-o", "size=18g,mode=0755", "tmpfs", str(base))
        try:
            if "graph" in sections:
                (base / "graph").mkdir()
                graph_section(base / "graph", args.files)
            if "depth" in sections:
                (base / "depth").mkdir()
                depth_section(base / "depth", args.fs.split(","))
        finally:
            run("umount", "-l", str(base))


if __name__ == "__main__":
    main()
