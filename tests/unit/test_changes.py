"""``lamina.changes`` and ``lamina.export_diff`` checked against oracles.

- changes: the expected list is derived from two ``support.manifest``
  manifests (every path whose record differs or exists on one side only),
  plus moby's rules (a deleted directory alone; parents of a change are
  changed), never written by hand.
- export: read back with Python's ``tarfile`` and GNU tar (``-t``, ``-d``),
  and the round trip: the diff applied onto a copy of the parent gives the
  child's manifest.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

import lamina
from support.export_trees import LONG, T0, build_parent, mutate
from support.export_trees import cp_a as _cp_a
from support.gnu_tar_apply import gnu_tar_apply
from support.manifest import Record, assert_same, manifest

ROOT = os.geteuid() == 0
Applier = Callable[[bytes, Path], None]


def _acl(p: Path) -> bool:
    r = subprocess.run(["setfacl", "-m", "u:4242:r", str(p)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    parent, child = tmp_path / "parent", tmp_path / "child"
    build_parent(parent)
    _cp_a(parent, child)
    mutate(child)
    return parent, child


def _key(path: str) -> list[bytes]:
    return [os.fsencode(c) for c in path.split("/")]


def _ancestors(p: str) -> Iterator[str]:
    while p.count("/") > 1:
        p = p.rsplit("/", 1)[0]
        yield p


def expected_changes(old: Path, new: Path, *, content: bool) -> list[tuple[str, str]]:
    """The oracle: manifests compared path by path, with moby's rules."""
    mo, mn = manifest(old, content=content), manifest(new, content=content)

    def norm(r: Record) -> Record:
        return replace(r, link_group=None)

    out: dict[str, str] = {}
    for p, r in mn.items():
        if p == "/":
            continue
        if p not in mo:
            out[p] = "A"
        elif norm(mo[p]) != norm(r):
            out[p] = "C"
    for p in mo.keys() - mn.keys():
        # Hidden: under a directory that is gone or is no longer a directory.
        if any(a not in mn or mn[a].type != "dir" for a in _ancestors(p)):
            continue
        out[p] = "D"
    for p in list(out):
        for a in _ancestors(p):
            out.setdefault(a, "C")
    return sorted(out.items(), key=lambda kv: _key(kv[0]))


def as_pairs(changes: list[lamina.Change]) -> list[tuple[str, str]]:
    return [(c.path, c.kind) for c in changes]


# ---------------------------------------------------------------- changes


def test_changes_match_manifest_oracle(trees: tuple[Path, Path]) -> None:
    parent, child = trees
    got = as_pairs(lamina.changes(parent, child))
    assert got == expected_changes(parent, child, content=False)
    kinds = dict(got)
    assert kinds["/var/cache/apt"] == "D"
    assert "/var/cache/apt/archives" not in kinds  # a deleted dir comes alone
    assert kinds["/var"] == kinds["/var/cache"] == "C"  # parents of a change
    assert kinds["/usr/lib"] == "C"  # directory time only
    assert kinds["/srv"] == "C" and "/srv/www" not in kinds
    assert kinds["/opt"] == "C" and kinds["/opt/app"] == "A"
    assert kinds["/data/ts"] == "C"  # one nanosecond


def test_content_only_change_needs_content(trees: tuple[Path, Path]) -> None:
    parent, child = trees
    assert "/data/same" not in dict(as_pairs(lamina.changes(parent, child)))
    got = as_pairs(lamina.changes(parent, child, content=True))
    assert dict(got)["/data/same"] == "C"
    assert got == expected_changes(parent, child, content=True)


def test_identical_trees_have_no_changes(tmp_path: Path) -> None:
    build_parent(tmp_path / "a")
    _cp_a(tmp_path / "a", tmp_path / "b")
    assert lamina.changes(tmp_path / "a", tmp_path / "b", content=True) == []


def test_change_object() -> None:
    a = lamina.Change("/etc/passwd", "C")
    assert a == lamina.Change("/etc/passwd", "C")
    assert a != lamina.Change("/etc/passwd", "A")
    assert len({a, lamina.Change("/etc/passwd", "C")}) == 1
    assert (a.path, a.kind) == ("/etc/passwd", "C")
    assert repr(a) == "Change('/etc/passwd', 'C')"
    assert sorted([a, lamina.Change("/bin", "A")])[0].path == "/bin"
    with pytest.raises(ValueError):
        lamina.Change("/x", "M")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        a.kind = "A"  # type: ignore[misc]


def test_missing_tree_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lamina.changes(tmp_path / "nope", tmp_path)


# ----------------------------------------------------------------- export


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def _logical(m: tarfile.TarInfo) -> tuple[str, str]:
    """(path, "D" for a whiteout else "") of a member."""
    name = m.name.rstrip("/")
    if name in ("", "."):
        return "/", ""
    parent, _, base = ("/" + name).rpartition("/")
    if base.startswith(".wh."):
        return f"{parent}/{base[4:]}", "D"
    return "/" + name, ""


def test_export_is_the_changes_in_order(trees: tuple[Path, Path]) -> None:
    parent, child = trees
    data = lamina.export_diff(parent, child, content=True)
    members = _members(data)
    paths = [_logical(m) for m in members]
    want = [
        (p, "D" if k == "D" else "")
        for p, k in as_pairs(lamina.changes(parent, child, content=True))
    ]
    assert [p for p in paths if p[0] != "/"] == want
    # Parents first: every member's parent directory came before it.
    seen = {"/"}
    for (p, _), m in zip(paths, members):
        assert (p.rsplit("/", 1)[0] or "/") in seen, p
        if m.isdir():
            seen.add(p)
    assert [p for p, _ in paths] == sorted((p for p, _ in paths), key=_key)


def test_export_headers(trees: tuple[Path, Path]) -> None:
    parent, child = trees
    by_name = {m.name: m for m in _members(lamina.export_diff(parent, child))}
    wh = by_name["var/cache/.wh.apt"]
    assert (wh.mtime, wh.uid, wh.gid, wh.mode, wh.size) == (0, 0, 0, 0, 0)
    assert (wh.uname, wh.gname) == ("", "")
    long = next(n for n in by_name if n.startswith(f"deep/{LONG}/a-new-file"))
    assert len(long) > 100
    assert by_name["etc/passwd"].pax_headers["mtime"] == str(Decimal(T0 + 5) / 10**9)
    assert by_name["etc/group"].pax_headers["SCHILY.xattr.user.note"] == "added"
    assert by_name["home/user/notes"].pax_headers["SCHILY.xattr.user.origin"] == "child"
    assert by_name["lib"].issym() and by_name["lib"].linkname == "usr/lib64"
    assert by_name["run/fifo2"].isfifo()
    # Hard links once: the second path of the inode links to the first.
    assert by_name["usr/bin/new1"].isfile()
    assert by_name["usr/bin/new2"].islnk() and by_name["usr/bin/new2"].linkname == "usr/bin/new1"
    assert by_name["usr/bin/tool2"].islnk() and by_name["usr/bin/tool2"].linkname == "usr/bin/tool"
    for m in by_name.values():
        assert (m.uname, m.gname) == ("", "")
        assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for k in m.pax_headers)
    if ROOT:
        assert by_name["etc/passwd"].uid == 1000
        assert by_name["dev/tty0"].ischr() and (
            by_name["dev/tty0"].devmajor,
            by_name["dev/tty0"].devminor,
        ) == (4, 0)
        assert by_name["dev/loop0"].isblk()
        assert "SCHILY.xattr.security.capability" in by_name["usr/bin/ping"].pax_headers


def test_gnu_tar_lists_it(trees: tuple[Path, Path], tmp_path: Path) -> None:
    parent, child = trees
    out = tmp_path / "diff.tar"
    lamina.export_diff(parent, child, out)
    r = subprocess.run(["tar", "-tvf", str(out)], capture_output=True, text=True, check=True)
    assert len(r.stdout.splitlines()) == len(_members(out.read_bytes()))
    assert r.stderr == ""


def test_full_export_matches_tree_per_gnu_tar(trees: tuple[Path, Path], tmp_path: Path) -> None:
    _, child = trees
    out = tmp_path / "full.tar"
    lamina.export_diff(None, child, out)
    # GNU tar's --compare checks every entry's type, mode, owner, mtime,
    # size, bytes and link target against the tree.
    r = subprocess.run(
        ["tar", "--compare", "--numeric-owner", "-f", str(out), "-C", str(child)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    names = [m.name for m in _members(out.read_bytes())]
    assert names[0] == "."  # tarfile drops the trailing slash of "./"
    assert len(names) == len(manifest(child))  # every path, the root as ./


def test_reproducible(trees: tuple[Path, Path], tmp_path: Path) -> None:
    parent, child = trees
    one = lamina.export_diff(parent, child)
    assert one == lamina.export_diff(parent, child)
    # A copy (other inodes, other ctimes, other atimes) exports the same bytes.
    _cp_a(child, tmp_path / "copy")
    assert lamina.export_diff(parent, tmp_path / "copy") == one
    assert lamina.export_diff(None, child) == lamina.export_diff(None, tmp_path / "copy")


def test_source_date_epoch_clamps(trees: tuple[Path, Path]) -> None:
    parent, child = trees
    epoch = T0 // 10**9 + 2  # between the tree's old and new times
    members = _members(lamina.export_diff(parent, child, source_date_epoch=epoch))
    real = {m.name: m for m in _members(lamina.export_diff(parent, child))}
    for m in members:
        assert m.mtime <= epoch
        if m.name.rpartition("/")[2].startswith(".wh."):
            assert m.mtime == epoch
        elif real[m.name].mtime < epoch:
            assert m.mtime == real[m.name].mtime
            assert m.pax_headers.get("mtime") == real[m.name].pax_headers.get("mtime")
        else:
            assert m.mtime == epoch and "mtime" not in m.pax_headers


def test_destinations_agree(trees: tuple[Path, Path], tmp_path: Path) -> None:
    parent, child = trees
    data = lamina.export_diff(parent, child)
    lamina.export_diff(parent, child, tmp_path / "a.tar")
    lamina.export_diff(parent, child, str(tmp_path / "b.tar"))
    buf = io.BytesIO()
    assert lamina.export_diff(parent, child, buf) is None
    with open(tmp_path / "c.tar", "wb", buffering=0) as raw:
        lamina.export_diff(parent, child, raw)
    assert (tmp_path / "a.tar").read_bytes() == data
    assert (tmp_path / "b.tar").read_bytes() == data
    assert (tmp_path / "c.tar").read_bytes() == data
    assert buf.getvalue() == data


def test_file_object_error_propagates(trees: tuple[Path, Path]) -> None:
    class Broken:
        def write(self, b: bytes) -> int:
            raise OSError(28, "No space left on device")

    parent, child = trees
    with pytest.raises(OSError, match="No space"):
        lamina.export_diff(parent, child, Broken())


def test_socket_skipped_with_warning(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_text("f")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tree / "sock"))
        with pytest.warns(RuntimeWarning, match="socket"):
            data = lamina.export_diff(None, tree)
    finally:
        s.close()
    assert [m.name for m in _members(data)] == [".", "f"]


def test_whiteout_named_file_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / ".wh.passwd").write_text("")
    with pytest.raises(lamina.UnsafeArchive):
        lamina.export_diff(None, tree)


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lamina.export_diff(tmp_path, tmp_path / "nope")


def test_unreadable_file_is_an_error_not_skipped(tmp_path: Path) -> None:
    if ROOT:
        pytest.skip("root reads mode-000 files")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "secret").write_text("x")
    (tree / "secret").chmod(0)
    with pytest.raises(PermissionError):
        lamina.export_diff(None, tree)


# ------------------------------------------------------------- round trip


def _lamina_apply(data: bytes, target: Path) -> None:
    lamina.apply_layer(target, data)


# Each round trip runs through lamina's own apply and through GNU tar plus
# whiteout post-processing, an independent oracle for the same tar.
APPLIERS = pytest.mark.parametrize("apply", [_lamina_apply, gnu_tar_apply], ids=["lamina", "gnu"])


@APPLIERS
def test_round_trip(trees: tuple[Path, Path], tmp_path: Path, apply: Applier) -> None:
    """export(parent, child) applied onto a copy of parent gives child."""
    parent, child = trees
    if _acl(child / "etc/group"):
        subprocess.run(["setfacl", "-d", "-m", "u:4242:rx", str(child / "home/user")], check=True)
    target = tmp_path / "target"
    _cp_a(parent, target)
    apply(lamina.export_diff(parent, child, content=True), target)
    assert_same(manifest(target), manifest(child))


@APPLIERS
def test_round_trip_base_layer(trees: tuple[Path, Path], tmp_path: Path, apply: Applier) -> None:
    _, child = trees
    target = tmp_path / "target"
    target.mkdir()
    apply(lamina.export_diff(None, child), target)
    assert_same(manifest(target), manifest(child))


@APPLIERS
def test_round_trip_opaque_like_replace(tmp_path: Path, apply: Applier) -> None:
    """rm -rf a directory and recreate it: the diff deletes the old children."""
    parent, child = tmp_path / "p", tmp_path / "c"
    build_parent(parent)
    _cp_a(parent, child)
    shutil.rmtree(child / "etc")
    (child / "etc").mkdir()
    (child / "etc/passwd").write_text("new")
    target = tmp_path / "target"
    _cp_a(parent, target)
    apply(lamina.export_diff(parent, child), target)
    assert_same(manifest(target), manifest(child))


@APPLIERS
def test_round_trip_keeps_link_groups(tmp_path: Path, apply: Applier) -> None:
    """New names of unchanged files (``ln`` in a container): the diff carries
    the unchanged names as links too, or the apply splits the groups; the
    change list does not list them."""
    parent, child = tmp_path / "p", tmp_path / "c"
    build_parent(parent)
    _cp_a(parent, child)
    os.link(child / "etc/passwd", child / "home/user/pw_link")  # after the unchanged name
    os.link(child / "usr/bin/tool", child / "data/tool-link")  # before both of its group
    os.link(child / "deep" / LONG / "file", child / "zz")  # below unchanged directories
    listed = dict(as_pairs(lamina.changes(parent, child)))
    assert "/etc/passwd" not in listed and "/usr/bin/tool2" not in listed
    target = tmp_path / "target"
    _cp_a(parent, target)
    apply(lamina.export_diff(parent, child), target)
    got = manifest(target)
    assert_same(got, manifest(child))
    assert got["/etc/passwd"].link_group == "/etc/passwd"
    assert got["/usr/bin/tool2"].link_group == "/data/tool-link"


def test_export_memory_is_flat(tmp_path: Path) -> None:
    """A 512 MiB file streams through in chunks: peak RSS stays near an
    idle interpreter's, whatever the file's size."""
    tree = tmp_path / "t"
    tree.mkdir()
    with open(tree / "big", "wb") as f:
        f.truncate(512 << 20)  # sparse: reads are cheap, the tar is not
    code = (
        "import resource, sys, lamina\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "lamina.export_diff(None, sys.argv[1], '/dev/null')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tree)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < 32 * 1024, f"peak RSS grew by {r.stdout.strip()} KiB"
