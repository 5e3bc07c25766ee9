"""The merged view without mounting (``Layer.walk/stat/read/exists/open``)
on the vfs driver, as any user: against the tree a mount shows, against
the same tars applied by GNU tar onto one directory, and against the
tars themselves (read with ``tarfile``) for which layer provides what."""

from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

import lamina
from support.gnu_tar_apply import gnu_tar_apply
from support.layers import open_graph
from support.manifest import assert_same
from support.views import tar_paths, tree_manifest, walk_manifest

T = 1_700_000_000


def tar(*entries: tuple[str, str, str | bytes | None]) -> bytes:
    """A PAX tar of ``(name, kind, data)``: kind ``file`` (data: content),
    ``dir``, ``symlink``/``hardlink`` (data: target), ``fifo``,
    ``whiteout`` (name: the path removed), ``opaque`` (name: the dir)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            if kind == "whiteout":
                head, _, tail = name.rpartition("/")
                name = f"{head}/.wh.{tail}" if head else f".wh.{tail}"
            elif kind == "opaque":
                name = f"{name}/.wh..wh..opq"
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = T, 0o644
            body = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "file":
                raw = data.encode() if isinstance(data, str) else (data or b"")
                info.size, body = len(raw), io.BytesIO(raw)
            t.addfile(info, body)
    return buf.getvalue()


BASE = tar(
    ("etc", "dir", None),
    ("etc/passwd", "file", "root:x:0:0\n"),
    ("etc/hostname", "file", "layer\n"),
    ("usr", "dir", None),
    ("usr/lib", "dir", None),
    ("usr/lib/libc.so", "file", "elf" * 100),
    ("usr/lib/libc-link.so", "hardlink", "usr/lib/libc.so"),
    ("lib", "symlink", "usr/lib"),
    ("data", "dir", None),
    ("data/opaque", "dir", None),
    ("data/opaque/old", "file", "old"),
    ("data/opaque/sub", "dir", None),
    ("data/opaque/sub/deep", "file", "deep"),
    ("data/gone", "dir", None),
    ("data/gone/x", "file", "x"),
    ("data/swap", "file", "a file"),
    ("data/pipe", "fifo", None),
    ("abs", "symlink", "/etc"),
    ("esc", "symlink", "../../../../../../../etc/hostname"),
)
MID = tar(
    ("data", "dir", None),
    ("data/opaque", "dir", None),
    ("data/opaque", "opaque", None),
    ("data/opaque/new", "file", "new"),
    ("data/gone", "whiteout", None),
    ("data/swap", "dir", None),
    ("data/swap/in", "file", "now a dir"),
    ("etc", "dir", None),
    ("etc/passwd", "file", "root:x:0:0\nuser:x:1000:1000\n"),
)
TOP = tar(
    ("usr", "dir", None),
    ("usr/lib", "dir", None),
    ("usr/lib/libc.so", "file", "elf2"),
    ("data", "dir", None),
    ("data/gone", "dir", None),
    ("data/gone/back", "file", "back"),
    ("data/loop", "symlink", "loop"),
)
TARS = [BASE, MID, TOP]


@pytest.fixture
def chain(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_graph(tmp_path / "s", "vfs") as g:
        layers = []
        parent = None
        for t in TARS:
            parent = g.register(t, parent=parent)
            layers.append(parent)
        yield g, layers


def _no_root_time(m: dict) -> dict:  # type: ignore[type-arg]
    m["/"] = replace(m["/"], mtime_ns=None)
    return m


def test_walk_equals_the_mounted_tree(chain) -> None:  # type: ignore[no-untyped-def]
    g, layers = chain
    box = g.create(layers[-1], init=True)
    with box.mounted() as root:
        Path(root, "etc/passwd").write_text("changed\n")
        Path(root, "new").write_text("new")
        os.remove(Path(root, "lib"))
    for layer in [*layers, box.parent, box]:
        with layer.mounted() as root:
            assert_same(walk_manifest(layer), tree_manifest(root))


def test_walk_equals_gnu_tar_applying_the_chain(chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, layers = chain
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, t in enumerate(TARS):
        gnu_tar_apply(t, flat)
        # GNU tar's whiteout pass touches directory times after the fact.
        got = walk_manifest(layers[i])
        want = tree_manifest(flat)
        if os.geteuid() != 0:
            # GNU tar cannot give a user's files another owner; the tars
            # here all say root's, which the view reports (as recorded).
            want = {p: replace(r, uid=0, gid=0) for p, r in want.items()}
        for m in (got, want):
            for p, r in m.items():
                if r.type == "dir":
                    m[p] = replace(r, mtime_ns=None)
        assert_same(got, want)


def test_each_entry_names_the_layer_that_provides_it(chain) -> None:  # type: ignore[no-untyped-def]
    _, layers = chain
    puts = [tar_paths(t)[0] for t in TARS]
    for i, layer in enumerate(layers):
        for e in layer.walk():
            if e.path == "/":
                continue
            # The topmost tar of the chain that lists the path.
            want = max(k for k in range(i + 1) if e.path in puts[k])
            assert e.layer == layers[want].id, e.path
    assert layers[2].stat("/data/opaque/new").layer == layers[1].id
    assert layers[2].stat("/usr/lib/libc-link.so").layer == layers[0].id


def test_whiteouts_and_opaque_directories(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, mid, top) = chain
    assert base.exists("/data/gone/x") and not mid.exists("/data/gone/x")
    assert [e.path for e in mid.walk("/data/opaque")] == ["/data/opaque", "/data/opaque/new"]
    assert top.read("/data/gone/back") == b"back" and not top.exists("/data/gone/x")
    assert mid.stat("/data/swap").type == "dir"
    assert base.stat("/data/pipe").type == "fifo"


def test_symlinks_resolve_inside_the_layer(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, _, top) = chain
    # `esc` climbs above the root: it stops there, as in a chroot, and reads
    # the layer's /etc/hostname, never the host's.
    assert base.read("/esc") == b"layer\n"
    assert base.read("/abs/passwd") == b"root:x:0:0\n"
    assert base.read("/lib/libc.so") == b"elf" * 100
    assert top.read("lib/libc.so") == b"elf2"
    e = base.stat("/abs")
    assert (e.type, e.linkname) == ("symlink", "/etc")
    assert base.stat("/abs", follow_symlinks=True).path == "/etc"
    assert base.stat("/lib/libc.so").path == "/usr/lib/libc.so"
    assert [e.path for e in base.walk("/lib")][:2] == ["/usr/lib", "/usr/lib/libc-link.so"]


def test_errors_name_the_path(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, _, top) = chain
    with pytest.raises(FileNotFoundError) as e:
        base.stat("/etc/nope")
    assert e.value.filename == "/etc/nope" and e.value.errno == errno.ENOENT
    with pytest.raises(NotADirectoryError):
        base.read("/etc/passwd/x")
    with pytest.raises(IsADirectoryError):
        base.read("/etc")
    with pytest.raises(OSError) as e:
        top.read("/data/loop")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(ValueError):
        base.read("/data/pipe")
    assert not top.exists("/data/loop", follow_symlinks=True)
    assert top.exists("/data/loop")
    assert not base.exists("/etc/passwd/x")


def test_open_gives_a_binary_file_object(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, *_) = chain
    with base.open("/lib/libc.so") as f:
        assert isinstance(f, io.BufferedReader) and f.name == "/lib/libc.so"
        assert f.read(3) == b"elf"
        f.seek(-3, io.SEEK_END)
        assert f.read() == b"elf"
    assert f.closed


def test_hard_links_in_a_walk(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, *_) = chain
    entries = {e.path: e for e in base.walk("/usr/lib")}
    link = entries["/usr/lib/libc.so"]
    assert (link.type, link.linkname) == ("hardlink", "/usr/lib/libc-link.so")
    assert entries["/usr/lib/libc-link.so"].type == "file"
    # stat() of a single name sees a file.
    assert base.stat("/usr/lib/libc.so").type == "file"


def test_entries_as_data(chain) -> None:  # type: ignore[no-untyped-def]
    _, (base, *_) = chain
    e = base.stat("/etc/passwd")
    d = e.to_dict()
    assert d["path"] == "/etc/passwd" and d["type"] == "file" and d["size"] == 11
    assert d["mtime_ns"] == T * 1_000_000_000 and e.mtime == T
    assert d["layer"] == base.id and repr(e).startswith("Entry('/etc/passwd', type='file'")
    assert e == base.stat("/etc/passwd") and e != base.stat("/etc/hostname")


def test_a_container_layer_shows_its_own_changes(chain) -> None:  # type: ignore[no-untyped-def]
    g, layers = chain
    box = g.create(layers[-1], init=True)
    init = box.parent
    with box.mounted() as root:
        Path(root, "app").write_text("app")
    assert box.stat("/app").layer == box.id
    assert box.stat("/etc/hosts").layer == init.id
    assert box.stat("/etc/passwd").layer == layers[1].id
    assert box.read("/app") == b"app"


def test_threads_share_a_layer(chain) -> None:  # type: ignore[no-untyped-def]
    _, layers = chain
    want = walk_manifest(layers[-1])
    got: list[dict] = []  # type: ignore[type-arg]

    def work() -> None:
        got.append(walk_manifest(layers[-1]))

    ts = [threading.Thread(target=work) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want] * 6


def test_merged_view_of_bare_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    (a / "d" / "x").write_text("x")
    (b / "d").mkdir(parents=True)
    (b / "d" / "y").write_text("y")
    v = lamina._lamina._merged_view([b, a])
    assert [e.path for e in v.walk()] == ["/", "/d", "/d/x", "/d/y"]
    assert v.stat("/d/x").layer is None
    with pytest.raises(FileNotFoundError):
        lamina._lamina._merged_view([tmp_path / "nope"])


def test_the_view_says_what_the_tar_says_even_rootless(tmp_path: Path) -> None:
    """Owners, setuid modes and device nodes a user cannot apply are
    recorded by a rootless apply; the view reads the records, so that as
    root and as ``nobody`` it reports what the tar (read by ``tarfile``)
    says. Symlinks and FIFOs cannot carry a record: theirs are root's."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, mode, uid, extra in [
            ("bin", tarfile.DIRTYPE, 0o755, 0, {}),
            ("bin/su", tarfile.REGTYPE, 0o4755, 0, {}),
            ("home", tarfile.DIRTYPE, 0o755, 0, {}),
            ("home/user", tarfile.DIRTYPE, 0o700, 1000, {}),
            ("home/user/notes", tarfile.REGTYPE, 0o600, 1000, {}),
            ("dev", tarfile.DIRTYPE, 0o755, 0, {}),
            ("dev/null", tarfile.CHRTYPE, 0o666, 0, {"devmajor": 1, "devminor": 3}),
            ("dev/sda", tarfile.BLKTYPE, 0o660, 0, {"devmajor": 8, "devminor": 0}),
            ("sh", tarfile.SYMTYPE, 0o777, 0, {"linkname": "bin/su"}),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, uid, uid
            info.mtime = T
            for k, v in extra.items():
                setattr(info, k, v)
            data = b"#!" if kind == tarfile.REGTYPE else None
            if data:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
    layer_tar = buf.getvalue()
    kinds = {
        tarfile.DIRTYPE: "dir",
        tarfile.REGTYPE: "file",
        tarfile.CHRTYPE: "char",
        tarfile.BLKTYPE: "block",
        tarfile.SYMTYPE: "symlink",
    }
    with open_graph(tmp_path / "s", "vfs") as g:
        layer = g.register(layer_tar)
        with tarfile.open(fileobj=io.BytesIO(layer_tar)) as t:
            for m in t:
                e = layer.stat("/" + m.name)
                assert (e.type, e.mode, e.uid, e.gid) == (kinds[m.type], m.mode, m.uid, m.gid), (
                    m.name
                )
                if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                    assert (e.devmajor, e.devminor) == (m.devmajor, m.devminor)
                    with pytest.raises(ValueError):
                        layer.read("/" + m.name)
        assert layer.read("/home/user/notes") == b"#!"
        assert {e.path: e.uid for e in layer.walk("/home")}["/home/user/notes"] == 1000
