"""Sixteen threads and four processes doing every operation on one store
at once, for a bounded time (issue 12): no corruption (Graph.check() finds
nothing), no deadlock (every worker ends within its deadline), no lost
layer (every layer a worker kept is there, byte-exact), mount counts
balanced at the end (every count 0, nothing mounted under the store)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, tar_of

SECONDS = float(os.environ.get("LAMINA_CONCURRENCY_SECONDS", "15"))
THREADS = 16
PROCESSES = 4

WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from test_concurrency_load import work
kept = work({root!r}, {driver!r}, {tag!r}, threads={threads}, seconds={seconds})
print(json.dumps(kept))
"""


def _one(g: lamina.Graph, rng: random.Random, tag: str, kept: dict[str, str]) -> None:
    """One operation, picked at random; what is kept is remembered with the
    digest of its tar."""
    base = g.layers()[0]
    op = rng.choice(["register", "container", "read", "read", "delete"])
    if op == "register":
        tar = tar_of({f"data/{tag}-{rng.randrange(10**9)}": "x" * rng.randrange(4000)})
        layer = g.register(tar, parent=base)
        kept[layer.id] = "sha256:" + hashlib.sha256(tar).hexdigest()
    elif op == "container":
        box = g.create(base, init=rng.random() < 0.5)
        with box.mounted() as root:
            Path(root, "data", f"{tag}-rw").write_text(tag)
            assert Path(root, "etc/os-release").exists()
        assert {c.path for c in box.changes()} >= {f"/data/{tag}-rw"}
        img = g.commit(box)
        assert "sha256:" + hashlib.sha256(img.diff()).hexdigest() == img.diff_id
        _delete(g, box)
        _delete(g, img)
    elif op == "read":
        layers = g.layers()
        for layer in rng.sample(layers, k=min(3, len(layers))):
            try:
                layer.diff_size()
                assert g[layer.id].id == layer.id
                if layer.diff_id:
                    with layer.mounted() as root:
                        os.listdir(root)
            except lamina.LayerNotFound:
                pass  # another worker deleted it meanwhile
        g.heads()
        g.status()
    elif op == "delete" and kept:
        victim = rng.choice(sorted(kept))
        try:
            g.delete(victim)
            del kept[victim]
        except lamina.LayerInUse:
            pass  # a reader has it mounted right now


def _delete(g: lamina.Graph, layer: lamina.Layer) -> None:
    """Delete, waiting out readers that have it mounted for a moment."""
    for _ in range(200):
        try:
            g.delete(layer)
            return
        except lamina.LayerInUse:
            time.sleep(0.01)
    raise AssertionError(f"{layer.id} stayed in use")


def work(root: str, driver: str, tag: str, threads: int, seconds: float) -> dict[str, str]:
    """``threads`` threads on one Graph until ``seconds`` pass; returns the
    layers they kept, with their diff IDs."""
    kept: dict[str, str] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds
    with lamina.Graph(root, driver=driver) as g:

        def run(t: int) -> None:
            rng = random.Random(f"{tag}{t}")
            mine: dict[str, str] = {}
            try:
                while time.monotonic() < deadline:
                    _one(g, rng, f"{tag}{t}", mine)
            except BaseException as e:
                errors.append(e)
            with lock:
                kept.update(mine)

        ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=seconds + 300)
            assert not t.is_alive(), "a worker thread is stuck (deadlock?)"
    if errors:
        raise errors[0]
    return kept


@pytest.mark.parametrize("driver", DRIVERS)
def test_threads_and_processes_doing_everything(driver: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    with lamina.Graph(root, driver=driver) as g:
        g.register(tar_of({"etc/": "", "etc/os-release": "ID=lamina\n", "data/": ""}))
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, str(Path(tests).parent), *sys.path])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER.format(
                    tests=tests,
                    root=str(root),
                    driver=driver,
                    tag=f"p{n}-",
                    threads=2,
                    seconds=SECONDS,
                ),
            ],
            env=env,
            stdout=subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    kept = work(str(root), driver, "t", threads=THREADS, seconds=SECONDS)
    for p in procs:
        out, _ = p.communicate(timeout=SECONDS + 600)
        assert p.returncode == 0
        kept.update(json.loads(out.decode().strip().splitlines()[-1]))
    with lamina.Graph(root) as g:
        assert g.check()["problems"] == []
        for layer_id, diff_id in kept.items():
            assert layer_id in g, f"layer {layer_id} was lost"
            assert g[layer_id].diff_id == diff_id
        assert all(layer.mount_count == 0 for layer in g)
        assert os.listdir(root / "tmp") == []
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if f" {root}/" in line]
