"""overlay2 stacks deep images (issue 9): the merged view of a 200-layer
image, and of a 500-layer one where the kernel takes lowers one at a time,
equals one flat directory that every layer was applied to in order with
``lamina.apply_layer`` (containerd's snapshotter-suite idea: the same
operations on a chain and on a flat directory, trees compared). Past the
kernel's limit of 500 lowers, a ``DriverError`` that names it.

Each layer adds, modifies and deletes a few files; some also delete a whole
directory, make one opaque, or turn a file into a directory. Parent
directories are listed in the tars, as Docker's and lamina's diffs list
them: overlay2 cannot know the metadata of a directory a tar leaves out.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

import lamina
from support.layers import open_graph
from support.manifest import Record, assert_same, manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")

T = 1_700_000_000
DIRS = [f"d{n}" for n in range(6)]


class Image:
    """Generates the layers of a deep image, keeping a model of its files so
    that each layer modifies and deletes files that exist."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.subdirs: list[str] = []

    def layer(self, i: int) -> bytes:
        rng = self.rng
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            written: set[str] = set()

            def parents(path: str) -> None:
                parts = path.split("/")[:-1]
                for n in range(1, len(parts) + 1):
                    d = "/".join(parts[:n])
                    if d not in written:
                        written.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, T + i
                        tar.addfile(info)

            def put(path: str, data: bytes) -> None:
                parents(path)
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), 0o600 + (i % 3) * 0o22, T + i
                tar.addfile(info, io.BytesIO(data))
                self.files[path] = data

            def whiteout(path: str) -> None:
                parents(path)
                head, _, tail = path.rpartition("/")
                info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
                info.mtime = T + i
                tar.addfile(info)

            existing = sorted(self.files)
            for path in rng.sample(existing, min(2, len(existing))):
                put(path, f"layer {i} rewrote {path}\n".encode())
            existing = sorted(p for p in self.files if p.split("/")[0] in DIRS)
            for path in rng.sample(existing, min(2, len(existing))):
                whiteout(path)
                del self.files[path]
            for k in range(3):
                put(f"{rng.choice(DIRS)}/f{i}-{k}", os.urandom(rng.randrange(0, 300)))
            if i % 10 == 3:
                sub = f"{rng.choice(DIRS)}/sub{i}"
                put(f"{sub}/deep/x", b"x\n")
                self.subdirs.append(sub)
            if i % 10 == 7 and self.subdirs:
                # A whole directory deleted: one whiteout.
                sub = self.subdirs.pop(0)
                whiteout(sub)
                self.files = {p: d for p, d in self.files.items() if not p.startswith(sub + "/")}
            if i % 25 == 12:
                # An opaque directory: nothing below shows through.
                d = rng.choice(DIRS)
                parents(f"{d}/x")
                info = tarfile.TarInfo(f"{d}/.wh..wh..opq")
                info.mtime = T + i
                tar.addfile(info)
                self.files = {p: v for p, v in self.files.items() if not p.startswith(d + "/")}
                self.subdirs = [s for s in self.subdirs if not s.startswith(d + "/")]
                put(f"{d}/after-opaque-{i}", b"o\n")
            if i % 25 == 20:
                # A file becomes a directory.
                victims = sorted(p for p in self.files if p.count("/") == 1)
                if victims:
                    path = victims[0]
                    del self.files[path]
                    put(f"{path}/now-a-dir", b"d\n")
        return buf.getvalue()


def _tree(root: str | Path) -> dict[str, Record]:
    """The manifest without ``/`` (whose time is when the tree was made)."""
    m = manifest(root)
    del m["/"]
    return m


def _flat(tmp: Path, tars: list[bytes]) -> dict[str, Record]:
    flat = tmp / "flat"
    flat.mkdir()
    for t in tars:
        lamina.apply_layer(flat, t)
    return _tree(flat)


def _register(g: lamina.Graph, tars: list[bytes]) -> list[lamina.Layer]:
    layers: list[lamina.Layer] = []
    for t in tars:
        layers.append(g.register(t, parent=layers[-1] if layers else None))
    return layers


def test_200_layers_equal_a_flat_directory(tmp_path: Path) -> None:
    image = Image(seed=200)
    tars = [image.layer(i) for i in range(200)]
    with open_graph(tmp_path / "store", "overlay2") as g:
        layers = _register(g, tars)
        assert len(layers[-1].chain) == 200
        with layers[-1].mounted() as view:
            assert_same(_tree(view), _flat(tmp_path, tars))
        # Every layer gives back its tar (reassembled from its diff/) and
        # lists the changes a naive walk of its parent's and its own view
        # finds.
        for n in range(0, 200, 19):
            layer = layers[n]
            assert layer.diff() == tars[n]
            parent = layer.parent
            with layer.mounted() as view:
                if parent is None:
                    empty = tmp_path / "empty"
                    empty.mkdir(exist_ok=True)
                    naive = lamina.changes(empty, view)
                else:
                    with parent.mounted() as pview:
                        naive = lamina.changes(pview, view)
            assert [(c.path, c.kind) for c in layer.changes()] == [
                (c.path, c.kind) for c in naive
            ], n
        # A container on the 200th layer, and its commit.
        box = g.create(layers[-1], init=True)
        with box.mounted() as root:
            Path(root, "d0/from-container").write_text("c\n")
        img = g.commit(box)
        with img.mounted() as view:
            assert Path(view, "d0/from-container").read_text() == "c\n"
            assert len(img.chain) == 201


def test_500_layers_or_a_clear_limit(tmp_path: Path) -> None:
    image = Image(seed=500)
    tars = [image.layer(i) for i in range(501)]
    with open_graph(tmp_path / "store", "overlay2") as g:
        status = g.status()
        layers = _register(g, tars[:500])
        top = layers[-1]
        if status["max_lowers"] == "500":
            with top.mounted() as view:
                assert_same(_tree(view), _flat(tmp_path, tars[:500]))
            # A container on it: 500 lowers and an upper.
            box = g.create(top)
            with box.mounted() as root:
                Path(root, "d1/c").write_text("c\n")
            assert [(c.path, c.kind) for c in box.changes()][-1] == ("/d1/c", "A")
            # A container on its -init layer: 501 lowers, past the limit.
            with pytest.raises(lamina.DriverError, match=r"501 lower layers.*at most 500"):
                g.create(top, init=True).mount()
        else:
            with pytest.raises(lamina.DriverError, match="4095"):
                top.mount()
        # One more layer is past the kernel's limit, whichever way lowers go.
        over = g.register(tars[500], parent=top)
        with pytest.raises(lamina.DriverError, match=r"501 lower layers.*at most 500"):
            over.mount()
        assert over.mount_count == 0
