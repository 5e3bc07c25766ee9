"""Crash torture (issue 12): a writer doing register, create, commit,
mount-and-write, delete, load and untag on one store is
killed with SIGKILL at a crash point (``LAMINA_CRASH_AT``: lamina numbers
the points where a writer may die, src/crashpoint.rs), then the store is
opened and checked: it opens; ``Graph.check()`` finds nothing wrong (every
listed layer complete, mountable, its tar reproducing its diff ID; nothing
half-made listed); ``tmp/`` is empty; nothing is left mounted.

Every trial is drawn from ``Random(f"{seed}:{trial}")``: the writer's
operations and the crash point, so a failure is reproduced with
``python -m support.torture --seed S --trials N --driver D ROOT`` from
tests/ (the draw of trial T also depends on how many crash points the
writers before it passed, which the same seed reproduces).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lamina

# Crash points a writer run passes, at most (its measured count decides).
POINTS = 200

WRITER = r"""
import os, random, sys
sys.path.insert(0, {tests!r})
import lamina
from support.layers import tar_of

rng = random.Random({wseed!r})
g = lamina.Graph({root!r}, driver={driver!r})
archives = {archives!r}

def ro():
    return [l for l in g.layers() if not l.writable and l.chain_id]

def rw():
    return [l for l in g.layers() if l.writable]

for step in range(6):
    op = rng.choice(
        ["register", "register", "create", "write", "commit", "delete", "load", "untag"]
    )
    try:
        if op == "load":
            g.load(rng.choice(archives))
        elif op == "untag":
            images = g.images()
            if images:
                g.untag(rng.choice(images).name)
        elif op == "register" or not ro():
            files = {{f"d{{rng.randrange(4)}}/": ""}}
            for i in range(rng.randrange(1, 40)):
                name = f"d{{rng.randrange(4)}}/f{{rng.randrange(1000)}}"
                files[name] = "x" * rng.randrange(0, 9000)
            parents = ro()
            parent = rng.choice(parents) if parents and rng.random() < 0.7 else None
            g.register(tar_of(files), parent=parent)
        elif op == "create":
            g.create(rng.choice(ro()), init=rng.random() < 0.5)
        elif op == "write" and rw():
            box = rng.choice(rw())
            with box.mounted() as root:
                os.makedirs(root + "/w", exist_ok=True)
                for i in range(rng.randrange(1, 20)):
                    with open(f"{{root}}/w/{{rng.randrange(100)}}", "w") as f:
                        f.write("w" * rng.randrange(5000))
        elif op == "commit" and rw():
            g.commit(rng.choice(rw()))
        elif op == "delete":
            heads = g.heads()
            if heads:
                g.delete(rng.choice(heads))
    except (lamina.LayerInUse, lamina.LayerNotFound, lamina.ImageNotFound):
        pass
g.close()
"""


@dataclass
class Trial:
    """What one trial did."""

    trial: int
    crash_at: int
    killed: bool
    points: int


def make_archives(where: Path, driver: str) -> list[str]:
    """Three small images (two sharing a base) as docker archives, made
    by lamina on a scratch store, for writers to load."""
    from support.layers import tar_of

    out = []
    with lamina.Graph(where / "scratch", driver=driver) as g:
        base = g.register(tar_of({"etc/": "", "etc/os": "torture\n"}))
        for i in range(3):
            parent = base if i < 2 else None
            files = {f"app{i}/": "", **{f"app{i}/f{n}": "y" * (n * 700) for n in range(12)}}
            top = g.register(tar_of(files), parent=parent)
            img = g.tag(top, f"torture/app{i}:1")
            dst = where / f"app{i}.tar"
            g.save(img, str(dst), format="docker-archive", compression=None)
            out.append(str(dst))
    return out


def run_trial(
    root: Path,
    driver: str,
    seed: int,
    trial: int,
    tests: Path,
    points: int = POINTS,
    archives: tuple[str, ...] = (),
) -> Trial:
    """One writer, killed at a crash point drawn from the seed among the
    first ``points``; then the store is checked (AssertionError naming the
    seed and trial)."""
    rng = random.Random(f"{seed}:{trial}")
    crash_at = 1 + int(rng.random() * points)
    wseed = rng.getrandbits(64)
    code = WRITER.format(
        tests=str(tests), root=str(root), driver=driver, wseed=wseed, archives=list(archives)
    )
    with tempfile.NamedTemporaryFile(prefix="lamina-crash-count-") as count:
        env = {
            **os.environ,
            "LAMINA_CRASH_AT": str(crash_at),
            "LAMINA_CRASH_COUNT": count.name,
        }
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        passed = int(Path(count.name).read_text() or 0)
    killed = p.returncode == -signal.SIGKILL
    where = f"seed {seed} trial {trial} (crash point {crash_at} of {passed})"
    if not killed and p.returncode != 0:
        raise AssertionError(f"{where}: the writer failed:\n{p.stderr.decode()}")
    check_store(root, where)
    return Trial(trial, crash_at, killed, passed)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    return [p for p in points if p.startswith(prefix)]


def check_store(root: Path, where: str) -> None:
    """The store a killed writer left: opens, whole, swept, unmounted."""
    with lamina.Graph(root) as g:
        report = g.check()
        assert report["problems"] == [], f"{where}: {report['problems']}"
        leftovers = os.listdir(root / "tmp")
        assert leftovers == [], f"{where}: left in tmp/: {leftovers}"
        assert mounts_under(root) == [], f"{where}: left mounted: {mounts_under(root)}"
        for layer in g.layers():
            assert layer.mount_count == 0, f"{where}: {layer.id} counted as mounted"


def torture(root: Path, driver: str, seed: int, trials: int, tests: Path) -> list[Trial]:
    """``trials`` trials on one store (it grows and shrinks across them).
    The crash point is drawn among as many points as the last writer that
    ran to its end passed (drivers pass different numbers), so most
    writers die; the draw is still the seed's."""
    done: list[Trial] = []
    points = POINTS
    with tempfile.TemporaryDirectory(prefix="lamina-torture-images-") as d:
        archives = tuple(make_archives(Path(d), driver))
        for t in range(trials):
            done.append(run_trial(root, driver, seed, t, tests, points, archives))
            if not done[-1].killed:
                points = max(done[-1].points, 10)
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--driver", default="vfs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    tests = Path(__file__).resolve().parents[1]
    done = torture(args.root, args.driver, args.seed, args.trials, tests)
    killed = sum(t.killed for t in done)
    print(f"{args.driver}: {len(done)} trials, {killed} killed at a crash point, all checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
