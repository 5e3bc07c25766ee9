"""Graph benchmarks (issue 4), per driver, on a loop-mounted ext4 image:

- register time of each layer of a 20-layer image whose layers together hold
  the files of one image (same total content);
- mount + unmount latency of a read-only layer and of a container layer;
- ``changes()`` of a container layer with 10 changed files over that image
  (overlay: O(changes), target under 10 ms; vfs: a walk of both trees);
- inodes the store uses.

Run as root: ``.venv/bin/python bench/bench_graph.py [FILES]``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lamina

LAYERS = 20
REPEAT = 20


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


def main() -> None:
    reexec_in_namespace()
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    per_layer = files // LAYERS
    with tempfile.TemporaryDirectory(prefix="lamina-bench-graph-") as tmp:
        base = Path(tmp)
        run("mount", "-t", "tmpfs", "-o", "size=8g,mode=0755", "tmpfs", str(base))
        img = base / "ext4.img"
        with open(img, "wb") as f:
            f.truncate(6 << 30)
        run("mkfs.ext4", "-q", "-F", "-N", "4000000", str(img))
        fs = base / "ext4"
        fs.mkdir()
        run("mount", "-o", "loop", str(img), str(fs))
        try:
            tars = [layer_tar(n, per_layer) for n in range(LAYERS)]
            print(
                f"{LAYERS} layers of {per_layer} files ({files} in the image), ext4 on a loop "
                f"device on tmpfs; {os.cpu_count()} cores, Linux {os.uname().release}"
            )
            for driver in ("overlay", "vfs"):
                r = bench_driver(driver, fs, tars)
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
        finally:
            run("umount", "-l", str(fs))
            run("umount", "-l", str(base))


if __name__ == "__main__":
    main()
