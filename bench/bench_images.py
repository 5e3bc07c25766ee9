"""Image benchmarks (issue 10), side by side in one run:

- ``Graph.load`` of a docker save archive vs ``docker load`` of the same
  archive, and of an OCI layout (gzip, made by skopeo) vs ``umoci unpack``;
- ``Graph.save`` (docker archive, uncompressed) vs ``docker save``;
- GNU tar extracting the image's layer tars one after the other, the floor;
- peak memory (``ru_maxrss`` of a fresh process, GNU ``time``) of a load of
  the big image and of a small one: it must not grow with the image.

The image: a base imported from the debootstrap rootfs (with a marker file,
so that its layer is the bench's own and ``docker rmi`` really removes it)
and three ``RUN`` layers — a copy of ``/usr/lib`` (many small files), 64 MB
of random bytes, a copy of ``/usr/share`` — built by the project's Docker
engine (tests/support/engine.py). lamina's store, the archives and umoci's
bundle live on a loop-mounted ext4 the script makes in its own mount
namespace; Docker's own data root is the engine's (ext4 on the same disk).

Run as root: ``.venv/bin/python bench/bench_images.py [--reps N] [--driver NAME]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import engine  # noqa: E402
from support.images import skopeo  # noqa: E402
from support.rootfs import debian_rootfs  # noqa: E402

BASE = "lamina-bench-base:1"
IMAGE = "lamina-bench-image:1"
DOCKERFILE = f"""\
FROM {BASE}
RUN cp -a /usr/lib /opt/lib-copy
RUN head -c 64000000 /dev/urandom > /opt/random.bin
RUN cp -a /usr/share /opt/share-copy && rm -rf /opt/lib-copy/x86_64-linux-gnu/perl-base
"""


def sh(*cmd: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


def reexec_in_namespace() -> None:
    if os.environ.get("LAMINA_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_images.py needs root (loop mounts, docker, overlay mounts)")
    env = {**os.environ, "LAMINA_BENCH_NS": "1"}
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
    os.execvpe("unshare", cmd, env)


def build_image(env: dict[str, str]) -> None:
    """The bench image in the engine (rebuilt each run: its base is removed
    by the ``docker load`` measurement)."""
    inspect = subprocess.run(["docker", "image", "inspect", IMAGE], env=env, capture_output=True)
    if inspect.returncode == 0:
        return
    with tempfile.TemporaryDirectory() as ctx:
        marker = Path(ctx, "marker")
        marker.mkdir()
        Path(marker, ".lamina-bench").write_text("bench\n")
        tar = subprocess.Popen(
            [
                "tar",
                "--numeric-owner",
                "-c",
                "-C",
                str(debian_rootfs()),
                ".",
                "-C",
                str(marker),
                ".lamina-bench",
            ],
            stdout=subprocess.PIPE,
        )
        engine.docker("import", "-", BASE, env=env, stdin=tar.stdout)
        assert tar.wait() == 0
        Path(ctx, "Dockerfile").write_text(DOCKERFILE)
        engine.docker("build", "-q", "-t", IMAGE, ctx, env={**env, "DOCKER_BUILDKIT": "0"})


def drop_image(env: dict[str, str]) -> None:
    for name in (IMAGE, BASE):
        subprocess.run(["docker", "rmi", "-f", name], env=env, capture_output=True)


def timed(fn: Callable[[], object], reset: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        reset()
        sh("sync")
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_rss_mb(script: str, *args: str) -> float:
    """Peak RSS (MB) of a fresh Python running ``script``."""
    r = sh("/usr/bin/time", "-f", "%M", sys.executable, "-c", script, *args)
    return int(r.stderr.decode().split()[-1]) / 1024


LOAD = (
    "import lamina, sys; g = lamina.Graph(sys.argv[1], driver=sys.argv[3]); "
    "g.load(sys.argv[2]); g.close()"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", default="6G", help="size of the ext4 image")
    ap.add_argument("--driver", default="auto", help="lamina's driver (default: the host's best)")
    args = ap.parse_args()
    reexec_in_namespace()
    import lamina

    work = Path(tempfile.mkdtemp(prefix="lamina-bench-images-", dir="/var/tmp"))
    mnt = work / "ext4"
    try:
        img = work / "ext4.img"
        sh("truncate", "-s", args.size, str(img))
        sh("mkfs.ext4", "-q", "-F", str(img))
        mnt.mkdir()
        sh("mount", "-o", "loop", str(img), str(mnt))
        with engine.use() as env:
            build_image(env)
            archive = mnt / "image.tar"
            sh("docker", "save", "-o", str(archive), IMAGE, env=env)
            layout = mnt / "oci-gzip"
            skopeo(
                "copy",
                "--dest-compress",
                "--dest-compress-format",
                "gzip",
                f"docker-archive:{archive}",
                f"oci:{layout}:bench",
            )
            manifest = json.loads(sh("tar", "-xOf", str(archive), "manifest.json").stdout)[0]
            layers_dir = mnt / "layers"
            layers_dir.mkdir()
            for p in manifest["Layers"]:
                sh("tar", "-C", str(layers_dir), "-xf", str(archive), p)
            layer_tars = [layers_dir / p for p in manifest["Layers"]]
            size = archive.stat().st_size
            n_layers = len(layer_tars)

            store = mnt / "store"

            def fresh_store() -> None:
                shutil.rmtree(store, ignore_errors=True)

            def lamina_load(src: Path) -> Callable[[], None]:
                def go() -> None:
                    with lamina.Graph(store, driver=args.driver) as g:
                        g.load(src)

                return go

            t_load = timed(lamina_load(archive), fresh_store, args.reps)
            t_load_oci = timed(lamina_load(layout), fresh_store, args.reps)
            with lamina.Graph(store, driver=args.driver) as g:
                driver = g.driver

            def docker_load() -> None:
                sh("docker", "load", "-i", str(archive), env=env)

            t_docker_load = timed(docker_load, lambda: drop_image(env), args.reps)
            bundle = mnt / "bundle"

            def umoci_unpack() -> None:
                sh("umoci", "unpack", "--image", f"{layout}:bench", str(bundle))

            t_umoci = timed(
                umoci_unpack, lambda: shutil.rmtree(bundle, ignore_errors=True), args.reps
            )
            untar = mnt / "untar"

            def gnu_tar() -> None:
                for t in layer_tars:
                    sh("tar", "-C", str(untar), "--numeric-owner", "-xpf", str(t))

            def fresh_untar() -> None:
                shutil.rmtree(untar, ignore_errors=True)
                untar.mkdir()

            t_tar = timed(gnu_tar, fresh_untar, args.reps)

            # From a pipe: docker save's order (metadata last: spooled), and
            # lamina's own (metadata first: applied as it arrives).
            stdin_load = (
                "import lamina, sys; g = lamina.Graph(sys.argv[1], driver=sys.argv[2]); "
                "g.load(sys.stdin.buffer); g.close()"
            )

            def piped(src: Path) -> Callable[[], None]:
                def go() -> None:
                    cat = subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE)
                    sh(sys.executable, "-c", stdin_load, str(store), args.driver, stdin=cat.stdout)
                    assert cat.wait() == 0

                return go

            t_pipe = timed(piped(archive), fresh_store, args.reps)
            own = mnt / "own.tar"
            with lamina.Graph(store, driver=args.driver) as g:
                g.load(archive)
                g.save(IMAGE, own, format="docker-archive", compression=None)
            t_pipe_own = timed(piped(own), fresh_store, args.reps)
            own.unlink()

            # save: lamina's store has the image; docker has it (loaded above).
            fresh_store()
            with lamina.Graph(store, driver=args.driver) as g:
                g.load(archive)
            out = mnt / "saved.tar"

            def lamina_save() -> None:
                with lamina.Graph(store, driver=args.driver) as g:
                    g.save(IMAGE, out, format="docker-archive", compression=None)

            def docker_save() -> None:
                sh("docker", "save", "-o", str(out), IMAGE, env=env)

            def no_out() -> None:
                out.unlink(missing_ok=True)

            t_save = timed(lamina_save, no_out, args.reps)
            t_docker_save = timed(docker_save, no_out, args.reps)

            # Peak memory: the big image, and its 64 MB layer alone as an image.
            fresh_store()
            rss_big = peak_rss_mb(LOAD, str(store), str(archive), args.driver)
            small = mnt / "small.tar"
            with lamina.Graph(store, driver=args.driver) as g:
                base = g.register(layer_tars[2])
                g.tag(base, "small:1")
                g.save("small:1", small, format="docker-archive", compression=None)
            fresh_store()
            rss_small = peak_rss_mb(LOAD, str(store), str(small), args.driver)
            small_size = small.stat().st_size
            drop_image(env)

        load1, load5, _ = os.getloadavg()
        print(
            f"image: {n_layers} layers, docker save archive {size / 1e6:.0f} MB; "
            f"lamina driver {driver}; best of {args.reps}; load average {load1:.2f}/{load5:.2f}"
        )
        rows = [
            ("load (docker save archive)", t_load, "docker load", t_docker_load),
            ("load (OCI layout, gzip)", t_load_oci, "umoci unpack", t_umoci),
            ("save (docker archive)", t_save, "docker save", t_docker_save),
            ("load (docker save archive)", t_load, "GNU tar -x of the layers", t_tar),
            ("load from a pipe (docker save's order)", t_pipe, "docker load", t_docker_load),
            ("load from a pipe (lamina's order)", t_pipe_own, "docker load", t_docker_load),
        ]
        print("| lamina | time | against | time | ratio |")
        print("|---|---|---|---|---|")
        for a, ta, b, tb in rows:
            print(f"| {a} | {ta:.2f} s | {b} | {tb:.2f} s | {ta / tb:.2f}x |")
        print(
            f"\npeak RSS of a load: {rss_big:.0f} MB for the {size / 1e6:.0f} MB image, "
            f"{rss_small:.0f} MB for a {small_size / 1e6:.0f} MB one"
        )
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
        engine.stop_if_started_here()
    return 0


if __name__ == "__main__":
    sys.exit(main())
