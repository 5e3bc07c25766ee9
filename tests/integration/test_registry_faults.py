"""Graph.pull through a proxy that misbehaves (tests/support/fault_proxy.py):
a connection cut mid-blob is resumed with ``Range`` (or the blob fetched
again where ranges are ignored) and gives the same image; 429 answers are
backed off; a registry killed mid-pull is an error that leaves the store as
it was, and the pull works once the registry is back."""

from __future__ import annotations

import fcntl
import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support import manifest as mf
from support.docker_image import exported_records
from support.docker_image import tree_as_exported as _tree
from support.fault_proxy import FaultProxy
from support.images import RealImage, real_image
from support.layers import open_graph
from support.registry import Registry

REF = "test/caps:1"


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


@pytest.fixture(scope="module")
def exported(image: RealImage, tmp_path_factory: pytest.TempPathFactory) -> dict[str, mf.Record]:
    return exported_records(image.exported, tmp_path_factory.mktemp("exported"))


@pytest.fixture
def registry(image: RealImage, tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry").start()
    try:
        r.skopeo_push(f"docker-archive:{image.docker_save}", REF)
        yield r
    finally:
        r.stop()


def _blob_gets(p: FaultProxy) -> list[tuple[str, str, int]]:
    return [
        (s.path, s.headers.get("range", ""), s.status)
        for s in p.seen
        if s.method == "GET" and "/blobs/" in s.path
    ]


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_cut_blobs_resume_to_the_same_image(
    registry: Registry, exported: dict[str, mf.Record], ranges: bool, tmp_path: Path
) -> None:
    with open_graph(tmp_path / "clean", "overlay2") as g:
        clean = g.pull(f"{registry.host}/{REF}")
        want = (clean.digest, [lay.diff_id for lay in clean.layers])
    proxy = FaultProxy(registry.port, cut_blobs=2, strip_range=not ranges).start()
    try:
        with open_graph(tmp_path / "s", "overlay2") as g:
            img = g.pull(f"{proxy.host}/{REF}")
            assert (img.digest, [lay.diff_id for lay in img.layers]) == want
            with img.layer.mounted() as root:
                mf.assert_same(_tree(root), exported)
    finally:
        proxy.stop()
    gets = _blob_gets(proxy)
    cut = [s for s in proxy.seen if s.fault == "cut"]
    assert len(cut) == 2
    for c in cut:
        again = [(r, st) for p, r, st in gets if p == c.path and r]
        if ranges:
            # Resumed where the cut was: a 206 from a byte past the start.
            assert again and again[0][1] == 206 and again[0][0] != "bytes=0-", gets
        else:
            # Ranges dropped on the way: the blob came again whole (200).
            again = [st for p, r, st in gets if p == c.path]
            assert again == [200, 200], gets


def test_throttled_blobs_back_off_then_succeed(
    registry: Registry, exported: dict[str, mf.Record], tmp_path: Path
) -> None:
    proxy = FaultProxy(registry.port, throttle_blobs=3).start()
    try:
        with open_graph(tmp_path / "s", "vfs") as g:
            img = g.pull(f"{proxy.host}/{REF}")
            with img.layer.mounted() as root:
                mf.assert_same(_tree(root), exported)
    finally:
        proxy.stop()
    assert [s.status for s in proxy.seen if s.fault == "429"] == [429, 429, 429]


def test_registry_killed_mid_pull_leaves_the_store_as_it_was(
    registry: Registry, exported: dict[str, mf.Record], tmp_path: Path
) -> None:
    proxy = FaultProxy(registry.port, cut_blobs=1, on_cut=registry.stop).start()
    try:
        with open_graph(tmp_path / "s", "overlay2") as g:
            before = (g.layers(), g.images())
            with pytest.raises(lamina.LaminaError, match=r"test/caps:1: blob sha256:[0-9a-f]{64}"):
                g.pull(f"{proxy.host}/{REF}")
            assert (g.layers(), g.images()) == before
            assert [p.name for p in (tmp_path / "s" / "tmp").iterdir()] == []
            registry.start()
            img = g.pull(f"{proxy.host}/{REF}")
            with img.layer.mounted() as root:
                mf.assert_same(_tree(root), exported)
    finally:
        proxy.stop()


_PULL_INTERRUPTED = """
import os, signal, sys, lamina
g = lamina.Graph(sys.argv[1], driver="overlay2")
def kill_at_first_bytes(done, total, layers, total_layers):
    if sys.argv[3] == "mid-blob" and done > 0:
        os.kill(os.getpid(), signal.SIGINT)
try:
    g.pull(sys.argv[2], progress=kill_at_first_bytes)
except KeyboardInterrupt:
    print(len(g.layers()), len(g.images()), sorted(os.listdir(os.path.join(sys.argv[1], "tmp"))))
    sys.exit(42)
"""


def _chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(
            d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()
        )
    return out


@pytest.mark.parametrize("where", ["mid-blob", "waiting-for-a-lock"])
def test_ctrl_c_stops_a_pull_and_leaves_the_store_as_it_was(
    image: RealImage, registry: Registry, where: str, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    lamina.Graph(store, driver="overlay2").close()
    held = None
    if where == "waiting-for-a-lock":
        # Another process registering the same base layer holds its lock.
        manifest = json.loads((image.dir / "config.json").read_text())
        base = _chain_ids(manifest["rootfs"]["diff_ids"])[0].split(":")[1]
        (store / "locks").mkdir(mode=0o700, exist_ok=True)
        held = open(store / "locks" / base, "w")  # noqa: SIM115
        fcntl.flock(held, fcntl.LOCK_EX)
    try:
        p = subprocess.Popen(
            [sys.executable, "-c", _PULL_INTERRUPTED, str(store), f"{registry.host}/{REF}", where],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if where == "waiting-for-a-lock":
            time.sleep(2)
            assert p.poll() is None
            t = time.monotonic()
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        if where == "waiting-for-a-lock":
            assert time.monotonic() - t < 5
        assert p.returncode == 42, err
        assert out == "0 0 []\n"
        if where == "waiting-for-a-lock":
            # The config only: no layer blob was fetched while waiting.
            config = hashlib.sha256((image.dir / "config.json").read_bytes()).hexdigest()
            assert [b.rsplit(":", 1)[1] for b in registry.blob_gets()] == [config]
    finally:
        if held:
            held.close()
