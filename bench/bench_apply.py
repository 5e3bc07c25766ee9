"""Benchmark: applying a layer.

lamina.apply_layer (extract + sha256 diff ID + tar-split record) vs GNU
``tar -x`` vs Python's ``tarfile.extractall``, on the same uncompressed
tars, on filesystems this script makes: loop-mounted ext4 and xfs images and
a tmpfs, inside its own mount namespace (it re-executes itself under
``unshare --mount --propagation private``, so nothing leaks to the host).
Then the peak memory (``ru_maxrss`` of a child process) of applying a
256 MiB and a 1 GiB layer.

Run as root: ``.venv/bin/python bench/bench_apply.py [--reps 3] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

GNU_TAR = ["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-p", "--numeric-owner", "-xf"]


def reexec_in_namespace() -> None:
    if os.environ.get("LAMINA_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_apply.py needs root (loop mounts, owners, device nodes)")
    env = {**os.environ, "LAMINA_BENCH_NS": "1"}
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
    os.execvpe("unshare", cmd, env)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_filesystems(work: Path) -> dict[str, Path]:
    fss: dict[str, Path] = {}
    for kind in ("ext4", "xfs"):
        img = work / f"{kind}.img"
        with open(img, "wb") as f:
            f.truncate(12 << 30)
        sh(f"mkfs.{kind}", "-q", *(["-F"] if kind == "ext4" else ["-f"]), str(img))
        mnt = work / kind
        mnt.mkdir()
        sh("mount", "-o", "loop", str(img), str(mnt))
        fss[kind] = mnt
    mnt = work / "tmpfs"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=6g", "tmpfs", str(mnt))
    fss["tmpfs"] = mnt
    return fss


def small_files_tar(path: Path, n: int = 100_000) -> None:
    """n small files (0-2 KiB) in n/100 directories, PAX format."""
    payload = os.urandom(4096)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in range(n // 100):
            ti = tarfile.TarInfo(f"d{d:04}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            t.addfile(ti)
            for i in range(100):
                size = (d * 100 + i) * 37 % 2048
                ti = tarfile.TarInfo(f"d{d:04}/f{i:03}")
                ti.size, ti.mode, ti.mtime = size, 0o644, 1_600_000_000
                t.addfile(ti, io.BytesIO(payload[:size]))


class Repeat(io.RawIOBase):
    """`size` bytes of a repeated random block, read in chunks (no memory)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.left, len(self.block))
        b[:n] = self.block[:n]
        self.left -= n
        return n


def big_layer_tar(path: Path, total: int) -> None:
    """A layer of `total` bytes: a few big files plus 10,000 small ones."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        big = total * 9 // 10 // 4
        for i in range(4):
            ti = tarfile.TarInfo(f"big{i}")
            ti.size = big
            t.addfile(ti, io.BufferedReader(Repeat(big)))
        for i in range(10_000):
            ti = tarfile.TarInfo(f"small/{i // 100}/f{i}")
            ti.size = (total // 10) // 10_000 - 512
            t.addfile(ti, io.BufferedReader(Repeat(ti.size)))


def clear(dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir()
    os.sync()


def run_lamina(tar: Path, dst: Path) -> float:
    import lamina

    t = time.perf_counter()
    lamina.apply_layer(dst, tar, tar_split=dst.parent / "tar-split.zst")
    return time.perf_counter() - t


def run_gnu(tar: Path, dst: Path) -> float:
    t = time.perf_counter()
    subprocess.run([*GNU_TAR, str(tar), "-C", str(dst)], check=True)
    return time.perf_counter() - t


def run_tarfile(tar: Path, dst: Path) -> float:
    t = time.perf_counter()
    with tarfile.open(tar) as tf:
        if hasattr(tarfile, "fully_trusted_filter"):  # 3.12+, and backports
            tf.extractall(dst, numeric_owner=True, filter="fully_trusted")
        else:
            tf.extractall(dst, numeric_owner=True)
    return time.perf_counter() - t


TOOLS = {"lamina": run_lamina, "gnu tar": run_gnu, "tarfile": run_tarfile}


def child_maxrss(code: str, *args: str) -> int:
    """Peak RSS (KiB) of a fresh Python running `code`.

    Measured by GNU time around it: Linux keeps the RSS high-water mark of
    the image a process had before execve (exec_mmap records the old mm's
    hiwater), so a child forked from this large process would report ours.
    """
    out = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss=%M", sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    return int(out.rsplit("maxrss=", 1)[1].split()[0])


def peak_rss(tar: Path, dst: Path) -> int:
    """Peak RSS (KiB) of a process applying `tar` with tar-split."""
    code = "import lamina, sys; lamina.apply_layer(sys.argv[1], sys.argv[2], tar_split=sys.argv[3])"
    return child_maxrss(code, str(dst), str(tar), str(dst.parent / "ts.zst"))


def baseline_rss() -> int:
    return child_maxrss("import lamina")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--markdown", type=Path, help="write the result table here")
    ap.add_argument("--no-memory", action="store_true")
    # Iterating on one case is quicker than a full run of every filesystem.
    ap.add_argument("--fs", action="append", choices=["ext4", "xfs", "tmpfs"], help="only these")
    args = ap.parse_args()
    reexec_in_namespace()
    from support.rootfs import debian_rootfs

    work = Path(tempfile.mkdtemp(prefix="lamina-bench-", dir="/var/tmp"))
    lines: list[str] = []
    try:
        fss = make_filesystems(work)
        src = work / "src"
        src.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=3g", "tmpfs", str(src))
        tars = {"debian rootfs": src / "rootfs.tar", "100k small files": src / "small.tar"}
        sh(
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cf",
            str(tars["debian rootfs"]),
            "-C",
            str(debian_rootfs()),
            ".",
        )
        small_files_tar(tars["100k small files"])
        lines.append(
            "| filesystem | tar | lamina (+sha256 +tar-split) | GNU tar -x | tarfile "
            "| lamina / GNU tar | tarfile / lamina |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for fs, mnt in fss.items():
            if args.fs and fs not in args.fs:
                continue
            for tname, tar in tars.items():
                best: dict[str, float] = {}
                for tool, fn in TOOLS.items():
                    times = []
                    for _ in range(args.reps):
                        dst = mnt / "dst"
                        clear(dst)
                        times.append(fn(tar, dst))
                    clear(mnt / "dst")
                    best[tool] = min(times)
                lam, gnu, tf = best["lamina"], best["gnu tar"], best["tarfile"]
                size = f"{tar.stat().st_size / 1e6:.0f} MB"
                row = (
                    f"| {fs} | {tname} ({size}) | {lam:.3f} s | {gnu:.3f} s | {tf:.3f} s "
                    f"| {lam / gnu:.2f}x | {tf / lam:.1f}x |"
                )
                print(row, flush=True)
                lines.append(row)
        if not args.no_memory:
            mnt = fss["ext4"]
            lines.append("")
            lines.append("| layer (ext4, with tar-split) | peak RSS of the applying process |")
            lines.append("|---|---|")
            lines.append(f"| none (python + import lamina) | {baseline_rss() / 1024:.0f} MiB |")
            for size in (256 << 20, 1 << 30):
                tar = mnt / "big.tar"
                big_layer_tar(tar, size)
                dst = mnt / "dst"
                clear(dst)
                rss = peak_rss(tar, dst)
                row = f"| {tar.stat().st_size / (1 << 20):.0f} MiB | {rss / 1024:.0f} MiB |"
                print(row, flush=True)
                lines.append(row)
                clear(dst)
                tar.unlink()
    finally:
        for m in ("src", "tmpfs", "xfs", "ext4"):
            subprocess.run(["umount", "-l", str(work / m)], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    header = (
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; best of {args.reps}."
    )
    text = header + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
