"""Graph.diff_images against its oracle, the naive diff of the two images'
mounted trees (``lamina.changes``, what ``docker diff`` lists), in order;
and proof that it reads only the layers the two images do not share: the
directories of the shared base that no other layer touches are never
opened (inotify), and the base's tar-split record is never read."""

from __future__ import annotations

import ctypes
import io
import os
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import scratch_vfs_graph, tar_of

Tree = dict[str, bytes | str | None]


@pytest.fixture
def g() -> Iterator[lamina.Graph]:
    with scratch_vfs_graph() as g:
        yield g


def _image(
    g: lamina.Graph, name: str, *layers: Tree, on: lamina.Layer | None = None
) -> lamina.Image:
    top = on
    for entries in layers:
        top = g.register(tar_of(entries), parent=top)
    assert top is not None
    return g.tag(top, name)


def _naive(a: lamina.Image, b: lamina.Image) -> list[tuple[str, str]]:
    with a.layer.mounted() as ra, b.layer.mounted() as rb:
        return [(c.kind, c.path) for c in lamina.changes(ra, rb)]


def _check(g: lamina.Graph, a: lamina.Image, b: lamina.Image) -> list[tuple[str, str]]:
    """diff_images both ways equals the naive diff, order included."""
    for x, y in ((a, b), (b, a)):
        got = [(c.kind, c.path) for c in g.diff_images(x, y)]
        assert got == _naive(x, y), (x.name, y.name)
    return [(c.kind, c.path) for c in g.diff_images(a, b)]


BASE: Tree = {
    "etc/": b"",
    "etc/a": b"a\n",
    "etc/b": b"b\n",
    "etc/sub/": b"",
    "etc/sub/deep": b"deep\n",
    "usr/": b"",
    "usr/bin/": b"",
    "usr/bin/x": b"x",
    "usr/lib/": b"",
    "usr/lib/l.so": b"so",
    "keep/": b"",
    "keep/k": b"k",
    "run/": b"",
    "var/": b"",
    "var/run": "->../run",
}


CASES: list[Any] = []


def _case(f: Any) -> Any:
    CASES.append(f)
    return f


@_case
def test_shared_base_with_deletes(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    a = _image(g, "a:1", {"etc/a": None, "etc/c": b"c\n"}, {"etc/sub": None}, on=base)
    b = _image(g, "b:1", {"etc/b": None, "usr/bin/x": b"xx"}, on=base)
    got = _check(g, a, b)
    assert ("D", "/etc/c") in got and ("A", "/etc/a") in got and ("A", "/etc/sub") in got
    assert ("C", "/usr/bin/x") in got and not any(p.startswith("/keep") for _, p in got)


@_case
def test_opaque_directories(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    a = _image(g, "a:1", {"etc/": b"", "etc/.wh..wh..opq": b"", "etc/only": b"o"}, on=base)
    b = _image(g, "b:1", {"etc/q": b"q", "etc/sub/more": b"m"}, on=base)
    got = _check(g, a, b)
    assert ("A", "/etc/a") in got and ("A", "/etc/sub/deep") in got and ("D", "/etc/only") in got


@_case
def test_a_file_changed_back_to_identical_content(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    a = _image(g, "a:1", {"etc/a": b"changed\n"}, {"etc/a": b"a\n"}, on=base)
    b = g.tag(base, "b:1")
    got = _check(g, a, b)
    assert not any(p == "/etc/a" for _, p in got)
    # An equal file put over a different one in the other image is listed.
    c = _image(g, "c:1", {"etc/a": b"other\n"}, on=base)
    assert ("C", "/etc/a") in _check(g, a, c)


@_case
def test_a_directory_replaced_by_a_file(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    a = _image(g, "a:1", {"etc/sub": None}, {"etc/sub": b"now a file"}, on=base)
    b = _image(g, "b:1", {"etc/sub/new": b"n"}, on=base)
    got = _check(g, a, b)
    assert ("C", "/etc/sub") in got and ("A", "/etc/sub/deep") in got
    # And back: a file replaced by a directory, whose base children show.
    d = _image(g, "d:1", {"usr/bin/x": None, "usr/bin/x/": b"", "usr/bin/x/in": b"i"}, on=base)
    _check(g, d, b)


@_case
def test_images_sharing_nothing(g: lamina.Graph) -> None:
    a = _image(g, "a:1", BASE, {"etc/a": None})
    b = _image(g, "b:1", {"etc/": b"", "etc/a": b"other", "opt/": b"", "opt/o": b"o"})
    got = _check(g, a, b)
    assert ("D", "/usr") in got and ("A", "/opt") in got and ("A", "/opt/o") in got


@_case
def test_writes_through_a_base_symlink_and_hard_links(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    # vfs applies var/run/pid through the base's var/run -> ../run: /run/pid
    # (overlay2 applies each layer on its own: a directory var/run).
    a = _image(g, "a:1", {"var/run/pid": b"1"}, on=base)
    b = g.tag(base, "b:1")
    got = _check(g, a, b)
    if g.driver == "vfs":
        assert ("D", "/run/pid") in got, got
    _check(g, _image(g, "c:1", {"etc/b": b"b2\n"}, on=base), a)
    # A hard link to a file of its own layer, and (but on overlay2, which
    # applies a layer without the ones below, as Docker's) to a base file.
    links: dict[str, str | None] = {"etc/own": None, "etc/lo": "etc/own"}
    if g.driver != "overlay2":
        links["etc/la"] = "etc/a"
    linked = g.register(_links(links), parent=base)
    _check(g, g.tag(linked, "d:1"), b)


def _links(entries: dict[str, str | None]) -> bytes:
    """A tar of hard links (name -> target) and one-byte files (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, target in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o644
            if target is None:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"o"))
            else:
                info.type, info.linkname = tarfile.LNKTYPE, target
                tar.addfile(info)
    return buf.getvalue()


@_case
def test_identical_and_prefix_images(g: lamina.Graph) -> None:
    base = g.register(tar_of(BASE))
    a = g.tag(base, "a:1")
    b = _image(g, "b:1", {"keep/k2": b"2"}, {"keep/k": None}, on=base)
    assert g.diff_images(a, a) == []
    _check(g, a, b)


# inotify(7): IN_OPEN | IN_ACCESS | IN_CLOSE_NOWRITE.
_EVENTS = 0x20 | 0x01 | 0x10


def _watch(dirs: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    for d in dirs:
        assert libc.inotify_add_watch(fd, d.encode(), _EVENTS) >= 0, d
    return fd


def _events(fd: int) -> int:
    n = 0
    while True:
        try:
            buf = os.read(fd, 1 << 16)
        except BlockingIOError:
            return n
        i = 0
        while i < len(buf):
            _, _, _, size = struct.unpack_from("iIII", buf, i)
            i += 16 + size
            n += 1


@_case
def test_only_the_unshared_layers_are_read(g: lamina.Graph) -> None:
    big: Tree = {"big/": b""}
    for i in range(20):
        big[f"big/d{i}/"] = b""
        big[f"big/d{i}/f"] = b"f"
    base = g.register(tar_of({**BASE, **big}))
    a = _image(g, "a:1", {"etc/a": b"a2\n"}, on=base)
    b = _image(g, "b:1", {"etc/b": None}, on=base)
    want = [("C", "/etc"), ("C", "/etc/a"), ("D", "/etc/b")]
    assert sorted(_naive(a, b)) == sorted(want)
    # Every copy of the untouched big/ tree in the store, in any layer.
    dirs = [d for d, _, _ in os.walk(g.root) if "/big" in d[len(g.root) :]]
    dirs = [d for d in dirs if "/merged" not in d]
    assert len(dirs) >= 21
    # The shared base's diff is not read either: its record is garbage now.
    split = Path(g.root, "layers", base.id, "tar-split.zst")
    assert split.is_file()
    split.write_bytes(b"not a tar-split record")
    fd = _watch(dirs)
    try:
        got = [(c.kind, c.path) for c in g.diff_images(a, b)]
        opened = _events(fd)
    finally:
        os.close(fd)
    assert sorted(got) == sorted(want)
    assert opened == 0, f"{opened} inotify events on untouched directories"
