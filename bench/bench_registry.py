"""Registry benchmarks (issue 16), side by side in one run, all against the
same local registry (Debian's ``docker-registry``, Docker Distribution 2.8):

- pull: ``Graph.pull`` into a fresh store vs ``docker pull`` (image removed
  between runs) vs ``skopeo copy docker://… oci:`` followed by ``umoci
  unpack`` (what a daemonless tool does to get a tree);
- push: ``Graph.push`` of the loaded image to an empty registry vs ``docker
  push`` and ``skopeo copy docker-archive:… docker://…`` (gzip, as all three
  compress);
- peak RSS of a pull (GNU ``time`` on a fresh process).

The image is bench_images.py's (a debootstrap rootfs and three ``RUN``
layers: many small files, 64 MB of random bytes, many more small files),
built by the project's Docker engine (tests/support/engine.py). That engine
lives in a network namespace of its own with only ``lo``, so the
measurements run there (``nsenter --net``): the registry listens on that
namespace's loopback, where dockerd, lamina and skopeo all reach it, and
Docker treats it as insecure (plain HTTP) as it does any 127.0.0.0/8
registry. lamina's store, skopeo's layout, umoci's bundle and the
registry's storage live on a loop-mounted ext4 the script makes in its own
mount namespace; Docker's data root is the engine's (ext4 on the same
disk). The registry starts empty before every push.

Run as root: ``.venv/bin/python bench/bench_registry.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import bench_images  # noqa: E402
from bench_images import IMAGE, drop_image, peak_rss_mb, sh, timed  # noqa: E402

from support import engine  # noqa: E402
from support.registry import Registry  # noqa: E402

INNER = "LAMINA_BENCH_REGISTRY_INNER"
PULL = (
    "import lamina, sys; g = lamina.Graph(sys.argv[1], driver=sys.argv[3]); "
    "g.pull(sys.argv[2]); g.close()"
)


def outer(argv: list[str]) -> int:
    """Build the image in the engine, then run the measurements in the
    engine's network namespace (and a mount namespace of their own)."""
    if os.geteuid() != 0:
        sys.exit("bench_registry.py needs root (namespaces, loop mounts, docker)")
    with engine.use() as env:
        bench_images.build_image(env)
        init = engine._find_init()
        if init is None:
            sys.exit("the engine's init is not visible from here: cannot enter its network")
        cmd = [
            "nsenter", f"--net=/proc/{init}/ns/net", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            sys.executable, __file__, *argv,
        ]  # fmt: skip
        rc = subprocess.run(cmd, env={**os.environ, **env, INNER: "1"}).returncode
    engine.stop_if_started_here()
    return rc


def inner(args: argparse.Namespace) -> int:
    import lamina

    env = engine.docker_env(dict(os.environ))
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-registry-", dir="/var/tmp"))
    mnt = work / "ext4"
    reg: Registry | None = None
    try:
        img = work / "ext4.img"
        sh("truncate", "-s", args.size, str(img))
        sh("mkfs.ext4", "-q", "-F", str(img))
        mnt.mkdir()
        sh("mount", "-o", "loop", str(img), str(mnt))
        archive = mnt / "image.tar"
        sh("docker", "save", "-o", str(archive), IMAGE, env=env)
        reg = Registry(mnt / "registry")
        host = reg.host
        src_store = mnt / "src-store"
        with lamina.Graph(src_store, driver=args.driver) as g:
            loaded = g.load(archive)[0].name
            driver = g.driver

        def fresh_registry() -> None:
            assert reg is not None
            reg.stop()
            shutil.rmtree(reg.dir / "data", ignore_errors=True)
            reg.start()

        # push, into an empty registry each time.
        def lamina_push() -> None:
            # What an earlier run pushed is not known to this one.
            shutil.rmtree(src_store / "distribution", ignore_errors=True)
            with lamina.Graph(src_store, driver=args.driver) as g:
                g.push(loaded, f"{host}/bench/lamina:1")

        def skopeo_push() -> None:
            sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
               f"docker-archive:{archive}", f"docker://{host}/bench/skopeo:1")  # fmt: skip

        target = f"{host}/bench/docker:1"
        sh("docker", "tag", IMAGE, target, env=env)

        def docker_push() -> None:
            sh("docker", "push", "-q", target, env=env)

        t_push = timed(lamina_push, fresh_registry, args.reps)
        t_skopeo_push = timed(skopeo_push, fresh_registry, args.reps)
        t_docker_push = timed(docker_push, fresh_registry, args.reps)

        # pull, of what docker pushed last (gzip layers, Docker schema 2).
        store = mnt / "store"
        oci, bundle = mnt / "oci", mnt / "bundle"

        def fresh_store() -> None:
            shutil.rmtree(store, ignore_errors=True)

        def lamina_pull() -> None:
            with lamina.Graph(store, driver=args.driver) as g:
                g.pull(target)

        def docker_pull() -> None:
            sh("docker", "pull", "-q", target, env=env)

        def no_docker_image() -> None:
            # By ID, so every tag goes (earlier runs' registries had other ports).
            ids = subprocess.run(
                ["docker", "images", "-q", "--no-trunc", target], env=env, capture_output=True
            ).stdout.split()
            for i in ids:
                subprocess.run(["docker", "rmi", "-f", i.decode()], env=env, capture_output=True)
            drop_image(env)

        def skopeo_umoci() -> None:
            sh("skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
               f"docker://{target}", f"oci:{oci}:bench")  # fmt: skip
            sh("umoci", "unpack", "--image", f"{oci}:bench", str(bundle))

        def fresh_oci() -> None:
            shutil.rmtree(oci, ignore_errors=True)
            shutil.rmtree(bundle, ignore_errors=True)

        t_pull = timed(lamina_pull, fresh_store, args.reps)
        t_skopeo_pull = timed(skopeo_umoci, fresh_oci, args.reps)
        t_docker_pull = timed(docker_pull, no_docker_image, args.reps)
        fresh_store()
        rss = peak_rss_mb(PULL, str(store), target, args.driver)
        size = archive.stat().st_size
        # Leave the engine with the image under its own name (the pull
        # removed the base; build_image wants only the image).
        sh("docker", "tag", target, IMAGE, env=env)

        load1, load5, _ = os.getloadavg()
        print(
            f"image {IMAGE}: docker save archive {size / 1e6:.0f} MB; lamina driver {driver}; "
            f"best of {args.reps}; load average {load1:.2f}/{load5:.2f}; {os.uname().release}"
        )
        rows = [
            ("pull", t_pull, "docker pull", t_docker_pull),
            ("pull", t_pull, "skopeo copy + umoci unpack", t_skopeo_pull),
            ("push", t_push, "docker push", t_docker_push),
            ("push", t_push, "skopeo copy docker-archive: docker://", t_skopeo_push),
        ]
        print("| lamina | time | against | time | ratio |")
        print("|---|---|---|---|---|")
        for a, ta, b, tb in rows:
            print(f"| {a} | {ta:.2f} s | {b} | {tb:.2f} s | {ta / tb:.2f}x |")
        print(f"\npeak RSS of a pull: {rss:.0f} MB for the {size / 1e6:.0f} MB image")
    finally:
        if reg is not None:
            reg.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", default="6G", help="size of the ext4 image")
    ap.add_argument("--driver", default="auto", help="lamina's driver (default: the host's best)")
    args, _ = ap.parse_known_args()
    if os.environ.get(INNER) == "1":
        return inner(args)
    return outer(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
