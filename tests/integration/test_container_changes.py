"""A container's changes are the same on every driver (issue 7 §5).

A container (with and without its ``-init`` layer) on a small image is
changed through its mount: copy-ups that change nothing on overlayfs (a hard
link made to an image file, a file opened for writing and closed, a chmod
undone), renames of hard-linked files, and ordinary adds, modifies and
deletes. Oracles:

- ``layer.changes()`` equals the naive ``lamina.changes(parent_view,
  merged)`` of the parent's and the container's mounted views;
- the commit's ``diff()`` applied with ``lamina.apply_layer`` onto a copy of
  the image's tree gives the container's merged view, hard-link groups
  included (the committed layer's own view too);
- every driver's commit gives the same tree.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

import lamina
from support.layers import DRIVERS, open_graph, tar_of
from support.manifest import Record, assert_same, manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")

T = 1_700_000_000

BASE = tar_of(
    {
        "etc/": "",
        "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
        "etc/group": "root:x:0:\n",
        "opt/": "",
        "srv/": "",
        "usr/": "",
        "usr/bin/": "",
        "usr/bin/tool": "#!/bin/sh\n",
        "usr/share/": "",
        "usr/share/doc/": "",
        "usr/share/doc/readme": "read me\n",
        "usr/share/doc/old": "old\n",
        "var/": "",
        "var/cache/": "",
        "var/cache/junk/": "",
        "var/cache/junk/a": "a\n",
        "var/motd": "hello\n",
    }
)


def _linked_layer() -> bytes:
    """A layer with a hard-link group (data/h1, data/h2), which ``tar_of``
    cannot write."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("data")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, T
        tar.addfile(d)
        for name, data in (("data/h1", b"linked\n"), ("data/a", b"a\n")):
            f = tarfile.TarInfo(name)
            f.size, f.mode, f.mtime = len(data), 0o644, T
            tar.addfile(f, io.BytesIO(data))
        h = tarfile.TarInfo("data/h2")
        h.type, h.linkname, h.mode, h.mtime = tarfile.LNKTYPE, "data/h1", 0o644, T
        tar.addfile(h)
    return buf.getvalue()


def change_container(m: Path) -> None:
    # overlayfs copies these up; none of them changes the file.
    os.link(m / "etc/passwd", m / "opt/pw_link")  # the unchanged name comes first in walk order
    os.link(m / "usr/share/doc/readme", m / "aaa_link")  # the unchanged name comes last
    os.close(os.open(m / "etc/group", os.O_WRONLY))
    (m / "usr/bin/tool").chmod(0o700)
    (m / "usr/bin/tool").chmod(0o644)
    # Renames in hard-link groups: of the image's (data/h1 stays unchanged)
    # and of one made here.
    os.rename(m / "data/h2", m / "data/h3")
    os.link(m / "data/a", m / "data/a2")
    os.rename(m / "data/a", m / "data/b")
    # Ordinary changes.
    with open(m / "var/motd", "a") as f:
        f.write("more\n")
    (m / "srv/new.txt").write_text("new\n")
    (m / "usr/share/doc/old").unlink()
    shutil.rmtree(m / "var/cache/junk")
    (m / "newdir/sub").mkdir(parents=True)
    (m / "newdir/sub/f").write_text("f\n")


# overlayfs (without the index feature) copies a file of a lower hard-link
# group up as an inode of its own: in an overlay or overlay2 container
# itself, the renamed data/h3 is no longer data/h1's link (on vfs it is).
# Each commit reproduces its own container; only these two paths differ
# between them.
SPLIT_BY_COPY_UP = ("/data/h1", "/data/h3")


def _pairs(changes: list[lamina.Change]) -> list[tuple[str, str]]:
    return [(c.path, c.kind) for c in changes]


def _without(m: dict[str, Record], paths: set[str]) -> dict[str, Record]:
    return {p: r for p, r in m.items() if p not in paths}


def _commit_tree(driver: str, init: bool, tmp: Path) -> dict[str, Record]:
    """Run the container on `driver`, check its changes and its commit, and
    return the manifest of the commit applied onto the image's tree."""
    with open_graph(tmp / f"store-{driver}", driver) as g:
        image = g.register(_linked_layer(), parent=g.register(BASE))
        box = g.create(image, init=init)
        parent = box.parent
        assert parent is not None and (parent == image) != init
        with box.mounted() as merged, parent.mounted() as view:
            change_container(Path(merged))
            naive = _pairs(lamina.changes(view, merged))
            want = manifest(merged)
        assert _pairs(box.changes()) == naive
        listed = {p for p, _ in naive}
        assert "/etc/passwd" not in listed and "/opt/pw_link" in listed
        assert "/etc/group" not in listed and "/usr/bin/tool" not in listed

        # What the init layer changed is not the container's: a commit
        # leaves it out (as `docker commit` does).
        init_only = {c.path for c in parent.changes()} - listed if init else set()
        img = g.commit(box)
        assert img.parent == image
        target = tmp / f"target-{driver}"
        with image.mounted() as iv:
            lamina.copy_dir(iv, target)
        lamina.apply_layer(target, img.diff())
        got = manifest(target)
        with img.mounted() as committed:
            assert_same(manifest(committed), got)
        got = _without(got, init_only)
        assert_same(got, _without(want, init_only))
        assert got["/etc/passwd"].link_group == got["/opt/pw_link"].link_group is not None
        assert got["/aaa_link"].link_group == got["/usr/share/doc/readme"].link_group is not None
        assert got["/data/a2"].link_group == got["/data/b"].link_group is not None
        if driver == "vfs":
            assert got["/data/h1"].link_group == got["/data/h3"].link_group is not None
        return got


@pytest.mark.parametrize("init", [False, True], ids=["plain", "init"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_container_changes_and_commit(driver: str, init: bool, tmp_path: Path) -> None:
    _commit_tree(driver, init, tmp_path)


@pytest.mark.parametrize("init", [False, True], ids=["plain", "init"])
def test_drivers_commit_the_same_tree(init: bool, tmp_path: Path) -> None:
    """Times aside (each container ran at its own time)."""

    def norm(p: str, r: Record) -> Record:
        r = replace(r, mtime_ns=None)
        return replace(r, link_group=None) if p in SPLIT_BY_COPY_UP else r

    trees = [{p: norm(p, r) for p, r in _commit_tree(d, init, tmp_path).items()} for d in DRIVERS]
    for other in trees[1:]:
        assert_same(trees[0], other)
