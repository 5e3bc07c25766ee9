"""``Layer.run`` (issue 17) against the peers that run a command in an
image's tree on this machine, side by side in one run, on tmpfs:

- ``Layer.run(["true"])`` of a container (with its init layer) of a real
  Debian image, on overlay2, as root and as ``nobody`` (rootless: the mount
  helper's user namespace), and on vfs as ``nobody``;
- ``buildah run --isolation chroot`` of a working container of the same
  image (buildah's cheapest isolation; ``podman run`` does not start here:
  runc's rlimit setup needs CAP_SYS_RESOURCE, which this VM's root lacks);
- ``bwrap`` (bubblewrap) with the same namespaces and ``/proc``/``/dev``
  on the tree lamina mounted: the floor of what a sandbox costs, with no
  image or mount bookkeeping;
- the interpreter start lamina's runner pays at least (``python -I -S -c pass``).

Run as root: ``.venv/bin/python bench/bench_run.py [--reps N] [--image TAR]``
(TAR: a rootfs tar; default the ``docker export`` the tests cache). The
peers are not among the test suite's packages: ``apt-get install bubblewrap
buildah podman`` (a missing one's row is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import lamina

CACHE = Path(os.environ.get("LAMINA_TEST_CACHE", "/var/tmp/lamina-test-cache"))

ROOTLESS = """
import json, statistics, sys, time, lamina
root, tar, driver, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
g = lamina.Graph(root, driver=driver)
with open(tar, "rb") as f:
    box = g.create(g.register(f), init=True)
box.run(["true"])
ts = []
for _ in range(reps):
    t = time.perf_counter(); box.run(["true"]); ts.append(time.perf_counter() - t)
print(json.dumps([min(ts), statistics.median(ts), g.status()["mount"]]))
g.close()
"""


def timed(f: Callable[[], object], reps: int) -> tuple[float, float]:
    f()  # warm
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def default_image() -> Path:
    found = sorted(CACHE.glob("docker-save-*/exported-rootfs.tar"))
    if not found:
        sys.exit("no cached rootfs tar: run `make test` once, or pass --image TAR")
    return found[0]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--image", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run.py needs root (it also runs the rootless part as nobody)")
    tar = args.image or default_image()
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-run-", dir="/dev/shm"))
    work.chmod(0o755)
    rows: list[tuple[str, float, float]] = []
    try:
        with lamina.Graph(work / "root-store", driver="overlay2") as g:
            with open(tar, "rb") as f:
                box = g.create(g.register(f), init=True)
            rows.append(
                ("lamina run, root, overlay2", *timed(lambda: box.run(["true"]), args.reps))
            )
            with box.mounted() as tree:
                bwrap = ["bwrap", "--bind", str(tree), "/", "--proc", "/proc", "--dev", "/dev",
                         "--unshare-all", "--die-with-parent", "true"]  # fmt: skip
                if shutil.which("bwrap"):
                    rows.append(("bwrap on the same tree", *timed(lambda: sh(*bwrap), args.reps)))
                else:
                    print("no bwrap (apt-get install bubblewrap): its row is skipped")
        store = ["--root", str(work / "c-root"), "--runroot", str(work / "c-run"),
                 "--storage-driver", "overlay"]  # fmt: skip
        buildah = shutil.which("buildah")
        if not (buildah and shutil.which("podman")):
            print("no buildah/podman (apt-get install buildah podman): its row is skipped")
        else:
            env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
            subprocess.run(["podman", *store, "import", "-q", str(tar), "localhost/bench-run:1"],
                           check=True, capture_output=True)  # fmt: skip
            made = subprocess.run([buildah, *store, "from", "-q", "localhost/bench-run:1"],
                                  check=True, capture_output=True, text=True)  # fmt: skip
            c = made.stdout.strip()
            run = [buildah, *store, "run", "--isolation", "chroot", c, "true"]
            rows.append((
                "buildah run --isolation chroot, root",
                *timed(lambda: subprocess.run(run, check=True, env=env, capture_output=True),
                       args.reps),
            ))  # fmt: skip
        py = [sys.executable, "-I", "-S", "-c", "pass"]
        rows.append(
            ("python -I -S -c pass (the runner's floor)", *timed(lambda: sh(*py), args.reps))
        )

        pkg = work / "pkg"
        shutil.copytree(Path(lamina.__file__).resolve().parent, pkg / "lamina")
        shared_tar = work / "rootfs.tar"
        shutil.copy(tar, shared_tar)
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
        for driver in ("overlay2", "vfs"):
            d = work / f"nobody-{driver}"
            d.mkdir()
            d.chmod(0o777)
            out = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 "--inh-caps=-all", "--no-new-privs", "env", "-i", "PATH=/usr/bin:/bin",
                 f"PYTHONPATH={pkg}", "/usr/bin/python3", "-c", ROOTLESS,
                 str(d / "store"), str(shared_tar), driver, str(args.reps)],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            best, median, mech = json.loads(out)
            rows.append((f"lamina run, nobody, {driver} ({mech.split(':')[0]})", best, median))
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)

    print(f"kernel {os.uname().release}, {os.cpu_count()} cpus, reps {args.reps}, image {tar}")
    base = rows[0][1]
    for name, best, median in rows:
        print(f"{name:58s} best {best * 1000:7.1f} ms  median {median * 1000:7.1f} ms"
              f"  ({best / base:.2f}x of lamina root)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
