"""The adversarial corpus: tars that try to reach outside the layer, inject
overlay metadata, or confuse the parser.

Attacks learnt from containerd's ``TestBreakouts`` (pkg/archive), moby's
pkg/archive tests, tar-rs unpack CVEs (CVE-2018-20990 symlink-then-write,
CVE-2021-38511 ``..`` through links), umoci CVE-2021-29136 (whiteout
outside the rootfs) and Go's archive/tar reader fixes. Every case is checked
the same way: a sentinel directory beside ``dst`` is byte-for-byte unchanged
(inode identity included), and no file inside ``dst`` is a hard link to it
or a copy of its content.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import lamina
from support import manifest as mf
from support.tars import archive, header, member, pad, pax

SECRET = b"sentinel secret " + os.urandom(16).hex().encode()

U = lamina.UnsafeArchive
A = lamina.ArchiveError
OK = None  # applied, contained


def sym(name: bytes, target: bytes) -> bytes:
    return member(name, type=b"2", linkname=target)


def link(name: bytes, target: bytes) -> bytes:
    return member(name, type=b"1", linkname=target)


def d(name: bytes) -> bytes:
    return member(name, type=b"5", mode=0o755)


def f(name: bytes, data: bytes = b"pwned") -> bytes:
    return member(name, data)


def gnu_long(name: bytes, kind: bytes = b"L") -> bytes:
    return header(b"././@LongLink", type=kind, size=len(name) + 1) + pad(name + b"\0")


def self_link(name: bytes) -> bytes:
    """A hard link to itself, with a PAX name (the apply has nothing to do
    but remember the name)."""
    return pax({b"path": name, b"linkpath": name}) + link(b"x", b"x")


def deep_through_symlinks(hops: int) -> bytes:
    """A tree 2,000 levels deeper per hop than any one tar name reaches:
    each symlink points at the end of the chain so far, and the next
    directory entry continues below it (76 KiB made 15,920 levels)."""
    chain = b"/".join([b"d"] * 2000)

    def long_dir(name: bytes) -> bytes:
        return pax({b"path": name + b"/"}) + d(b"x")

    parts = [long_dir(chain)]
    prev = chain
    for i in range(1, hops + 1):
        name = b"l%d" % i
        parts.append(pax({b"linkpath": prev}) + sym(name, b"x"))
        parts.append(long_dir(name + b"/" + chain))
        prev = name + b"/" + chain
    return archive(*parts)


# Each case: (tar builder given the sentinel's absolute path, expected error).
Case = tuple[Callable[[bytes], bytes], type[Exception] | None]

CASES: dict[str, Case] = {
    # -- names with '..' ------------------------------------------------------
    "dotdot-file": (lambda s: archive(f(b"../sentinel/secret")), U),
    "dotdot-deep": (lambda s: archive(f(b"a/b/../../../sentinel/secret")), U),
    "dotdot-absolute": (lambda s: archive(f(b"/../sentinel/secret")), U),
    "dotdot-dir": (lambda s: archive(d(b"../sentinel/newdir")), U),
    "dotdot-pax-path": (lambda s: archive(pax({b"path": b"../sentinel/secret"}), f(b"benign")), U),
    "dotdot-gnu-longname": (
        lambda s: archive(gnu_long(b"../" * 40 + b"sentinel/secret"), f(b"x")),
        U,
    ),
    "dotdot-symlink-name": (lambda s: archive(sym(b"../sentinel/secret", b"/etc/passwd")), U),
    # -- symlinks planted then written through -------------------------------
    "symlink-relative-escape-write": (
        lambda s: archive(sym(b"l", b"../sentinel"), f(b"l/secret")),
        U,
    ),
    "symlink-dotdot-write": (lambda s: archive(sym(b"l", b".."), f(b"l/sentinel/secret")), U),
    "symlink-deep-escape": (
        lambda s: archive(d(b"a"), sym(b"a/l", b"../../sentinel"), f(b"a/l/x")),
        U,
    ),
    "symlink-chain-escape": (
        lambda s: archive(
            sym(b"a", b"b"), sym(b"b", b"c"), sym(b"c", b"../sentinel"), f(b"a/secret")
        ),
        U,
    ),
    # Absolute targets resolve inside dst; a missing one is made there, as
    # moby's chrooted UnpackLayer and containerd's RootPath + mkparent do.
    "symlink-absolute-write": (lambda s: archive(sym(b"l", s), f(b"l/secret")), OK),
    # -- parents behind in-root symlinks (issue 7 §2) ---------------------------
    "parents-behind-abs-symlink": (
        lambda s: archive(d(b"var"), sym(b"var/run", b"/run"), f(b"var/run/a/b/file")),
        OK,
    ),
    "parents-behind-relative-symlink": (
        lambda s: archive(sym(b"l", b"not/yet"), f(b"l/x/file")),
        OK,
    ),
    "parents-behind-dangling-abs-symlink": (
        lambda s: archive(sym(b"l", s + b"/new"), f(b"l/file")),
        OK,
    ),
    "parents-behind-symlink-then-dotdot": (
        lambda s: archive(sym(b"l", b"missing/../../sentinel"), f(b"l/secret")),
        U,
    ),
    "parents-behind-abs-symlink-dotdot": (
        lambda s: archive(sym(b"l", b"/../sentinel"), f(b"l/secret")),
        U,
    ),
    "symlink-absolute-inside-write": (
        lambda s: archive(d(b"real"), sym(b"l", b"/real"), f(b"l/secret")),
        OK,
    ),
    "symlink-root-write": (lambda s: archive(sym(b"l", b"/"), f(b"l/x")), OK),
    "symlink-replaces-dir": (
        lambda s: archive(d(b"d"), f(b"d/a"), sym(b"d", b"../sentinel"), f(b"d/secret")),
        U,
    ),
    "symlink-then-dir": (lambda s: archive(sym(b"l", b"../sentinel"), d(b"l/sub")), U),
    "symlink-then-fifo": (
        lambda s: archive(sym(b"l", b"../sentinel"), member(b"l/p", type=b"6")),
        U,
    ),
    "symlink-then-symlink": (lambda s: archive(sym(b"l", b"../sentinel"), sym(b"l/s", b"x")), U),
    "symlink-pax-linkpath": (
        lambda s: archive(pax({b"linkpath": b"../sentinel"}), sym(b"l", b"benign"), f(b"l/secret")),
        U,
    ),
    "symlink-gnu-longlink": (
        lambda s: archive(gnu_long(b"../sentinel", b"K"), sym(b"l", b"x"), f(b"l/y")),
        U,
    ),
    "file-over-escaping-symlink": (
        lambda s: archive(sym(b"s", b"../sentinel/secret"), f(b"s")),
        OK,
    ),
    "file-over-absolute-symlink": (lambda s: archive(sym(b"s", s + b"/secret"), f(b"s")), OK),
    "dir-over-escaping-symlink": (lambda s: archive(sym(b"s", b"../sentinel"), d(b"s")), OK),
    "symlink-loop": (lambda s: archive(sym(b"a", b"b"), sym(b"b", b"a"), f(b"a/x")), A),
    "symlink-chain-41": (
        lambda s: archive(
            *[sym(b"l%d" % i, b"l%d" % (i + 1)) for i in range(41)], d(b"l41"), f(b"l0/x")
        ),
        A,
    ),
    "symlink-named-dot": (lambda s: archive(sym(b".", s)), U),
    "symlink-named-dot-slash": (lambda s: archive(sym(b"./", b"../sentinel")), U),
    "symlink-named-root": (lambda s: archive(sym(b"/", b"../sentinel")), U),
    "file-named-dot": (lambda s: archive(f(b".")), U),
    "hardlink-named-dot": (lambda s: archive(f(b"a"), link(b".", b"a")), U),
    # -- hard links -----------------------------------------------------------
    "hardlink-dotdot": (lambda s: archive(link(b"h", b"../sentinel/secret")), U),
    "hardlink-absolute-host-path": (lambda s: archive(link(b"h", s + b"/secret")), A),
    "hardlink-through-symlink": (
        lambda s: archive(sym(b"l", b"../sentinel"), link(b"h", b"l/secret")),
        U,
    ),
    "hardlink-through-abs-symlink": (lambda s: archive(sym(b"l", s), link(b"h", b"l/secret")), A),
    "hardlink-to-dir": (lambda s: archive(d(b"d"), link(b"h", b"d")), U),
    "hardlink-to-root": (lambda s: archive(link(b"h", b"./")), U),
    "hardlink-then-write": (
        lambda s: archive(
            sym(b"l", b"../sentinel/secret"), link(b"h", b"l"), f(b"h", b"overwrite")
        ),
        OK,
    ),
    "hardlink-plnk-escape": (
        lambda s: archive(link(b"h", b".wh..wh.plnk/../../sentinel/secret")),
        U,
    ),
    # -- whiteouts -------------------------------------------------------------
    "whiteout-empty": (lambda s: archive(f(b".wh.", b"")), U),
    "whiteout-dot": (lambda s: archive(f(b"a/.wh..", b"")), U),
    "whiteout-dotdot": (lambda s: archive(f(b".wh...", b"")), U),
    "whiteout-parent-dotdot": (lambda s: archive(f(b"../.wh.sentinel", b"")), U),
    "whiteout-through-symlink": (
        lambda s: archive(sym(b"l", b"../sentinel"), f(b"l/.wh.secret", b"")),
        U,
    ),
    "whiteout-through-abs-symlink": (lambda s: archive(sym(b"l", s), f(b"l/.wh.secret", b"")), OK),
    "opaque-through-symlink": (
        lambda s: archive(sym(b"l", b"../sentinel"), f(b"l/.wh..wh..opq", b"")),
        U,
    ),
    "opaque-at-root": (lambda s: archive(f(b".wh..wh..opq", b"")), OK),
    # -- shapes of issue 8: depth through symlinks, names the apply keeps --
    "deep-tree-through-symlinks": (lambda s: deep_through_symlinks(3), OK),
    "self-links-long-names": (
        lambda s: archive(
            *[self_link(b"/".join([b"p" * 200] * 19) + b"/%04d" % i) for i in range(200)]
        ),
        OK,
    ),
    # -- overlay metadata injection -------------------------------------------
    "xattr-trusted-overlay-opaque": (
        lambda s: archive(pax({b"SCHILY.xattr.trusted.overlay.opaque": b"y"}), d(b"d")),
        U,
    ),
    "xattr-trusted-overlay-redirect": (
        lambda s: archive(
            pax({b"SCHILY.xattr.trusted.overlay.redirect": b"/../sentinel"}), d(b"d")
        ),
        U,
    ),
    "xattr-user-overlay": (
        lambda s: archive(pax({b"SCHILY.xattr.user.overlay.metacopy": b""}), f(b"x")),
        U,
    ),
    "char-device-0-0": (lambda s: archive(member(b"w", type=b"3", devmajor=0, devminor=0)), U),
    # -- parser confusion and bombs ---------------------------------------------
    "bad-checksum": (lambda s: archive(header(b"x", checksum_delta=1)), A),
    "pax-size-disagrees": (lambda s: archive(pax({b"size": b"5000"}), f(b"x", b"a" * 600)), A),
    "size-negative-base256": (lambda s: archive(header(b"x", size_field=b"\xff" * 12)), A),
    "size-huge-base256": (lambda s: archive(header(b"x", size_field=b"\x80" + b"\xff" * 11)), A),
    "size-truncated-payload": (lambda s: header(b"x", size=10_000) + b"a" * 512, A),
    "device-major-out-of-range": (
        lambda s: archive(member(b"c", type=b"3", devmajor=5000, devminor=1)),
        A,
    ),
    "device-pax-out-of-range": (
        lambda s: archive(pax({b"SCHILY.devminor": b"99999999999"}), member(b"c", type=b"4")),
        A,
    ),
    "nul-in-pax-path": (lambda s: archive(pax({b"path": b"a\0../../sentinel/secret"}), f(b"x")), A),
    "nul-in-xattr-name": (lambda s: archive(pax({b"SCHILY.xattr.user.a\0b": b"v"}), f(b"x")), A),
    "nul-in-gnu-longname": (lambda s: archive(gnu_long(b"a\0../../sentinel"), f(b"x")), A),
    "path-10000-deep": (lambda s: archive(pax({b"path": b"a/" * 10_000 + b"f"}), f(b"x")), A),
    "component-over-name-max": (lambda s: archive(pax({b"path": b"n" * 300}), f(b"x")), A),
    "pax-record-length-lies": (
        lambda s: archive(header(b"p", type=b"x", size=16) + pad(b"99999 path=ab\n\0\0"), f(b"x")),
        A,
    ),
    "pax-header-bomb": (lambda s: archive(header(b"p", type=b"x", size=1 << 30)), A),
    "gnu-longname-bomb": (lambda s: archive(header(b"p", type=b"L", size=1 << 30)), A),
    "meta-header-flood": (
        lambda s: archive(*[pax({b"comment": b"x"}) for _ in range(40)], f(b"x")),
        A,
    ),
    "dir-with-payload-smuggling": (
        lambda s: archive(header(b"d", type=b"5", size=512) + f(b"../sentinel/secret")),
        A,
    ),
    "unknown-typeflag": (lambda s: archive(member(b"x", type=b"Z")), A),
    "gnu-sparse": (lambda s: archive(member(b"x", type=b"S")), A),
    "uid-out-of-range": (lambda s: archive(pax({b"uid": b"4294967296"}), f(b"x")), A),
    "xattr-value-bomb": (
        lambda s: archive(pax({b"SCHILY.xattr.user.big": b"v" * 70_000}), f(b"x")),
        A,
    ),
    "pax-mtime-garbage": (lambda s: archive(pax({b"mtime": b"1.2.3"}), f(b"x")), A),
    "meta-header-at-end": (lambda s: archive(pax({b"path": b"x"})), A),
    "hardlink-missing-target": (lambda s: archive(link(b"h", b"nothing")), A),
}


def tree_has_copy_of(dst: Path, sentinel_inodes: set[tuple[int, int]]) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(dst):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if (st.st_dev, st.st_ino) in sentinel_inodes:
                bad.append(f"{p} is a hard link into the sentinel")
            if os.path.isfile(p) and not os.path.islink(p) and st.st_size == len(SECRET):
                with open(p, "rb") as fh:
                    if fh.read() == SECRET:
                        bad.append(f"{p} is a copy of the sentinel's secret")
    return bad


# Where an applied case's file must land inside dst (given the sentinel's
# absolute path): absolute symlink targets resolve inside the layer.
LANDS: dict[str, Callable[[bytes], bytes]] = {
    "symlink-absolute-write": lambda s: s.lstrip(b"/") + b"/secret",
    "parents-behind-abs-symlink": lambda s: b"run/a/b/file",
    "parents-behind-relative-symlink": lambda s: b"not/yet/x/file",
    "parents-behind-dangling-abs-symlink": lambda s: s.lstrip(b"/") + b"/new/file",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_is_contained(tmp_path: Path, name: str) -> None:
    make, expected = CASES[name]
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_bytes(SECRET)
    (sentinel / "sub").mkdir()
    (sentinel / "sub/file").write_bytes(SECRET)
    dst = tmp_path / "dst"
    dst.mkdir()
    before = mf.manifest(tmp_path / "sentinel")
    ident = mf.identity(sentinel)
    inodes = {
        (os.lstat(sentinel / p).st_dev, os.lstat(sentinel / p).st_ino)
        for p in ("secret", "sub/file")
    }
    data = make(bytes(sentinel))
    if expected is None:
        lamina.apply_layer(dst, data)
        if name in LANDS:
            landed = dst / os.fsdecode(LANDS[name](bytes(sentinel)))
            assert landed.read_bytes() == b"pwned" and not landed.is_symlink()
    else:
        with pytest.raises(expected) as err:
            lamina.apply_layer(dst, data)
        if expected is A:
            assert not isinstance(err.value, U) or name.startswith("symlink-chain"), err.value
    mf.assert_same(mf.manifest(sentinel), before)
    assert mf.identity(sentinel) == ident
    assert sorted(os.listdir(tmp_path)) == ["dst", "sentinel"]
    # os.walk recurses per level (and paths that deep cannot be named): the
    # deep tree holds nothing of the sentinel's by construction.
    if not name.startswith("deep-"):
        assert not tree_has_copy_of(dst, inodes)
    else:
        empty_with_lamina(dst)


def test_corpus_size() -> None:
    assert len(CASES) >= 40


def test_deep_tree_diffs_stop_typed(tmp_path: Path) -> None:
    """A tree deeper than any path a layer tar can name: every walk over it
    (changes, export, through the Python API) stops with ENAMETOOLONG
    instead of overflowing the stack; removal goes through."""
    dst = tmp_path / "dst"
    dst.mkdir()
    lamina.apply_layer(dst, deep_through_symlinks(3))
    empty = tmp_path / "empty"
    empty.mkdir()
    for call in (
        lambda: lamina.changes(empty, dst),
        lambda: lamina.export_diff(empty, dst),
        lambda: lamina.export_diff(None, dst),
    ):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.ENAMETOOLONG
    lamina.apply_layer(dst, archive(f(b".wh.d", b""), f(b".wh.l1", b"")))
    assert sorted(os.listdir(dst)) == ["l2", "l3"]
    empty_with_lamina(dst)
    assert os.listdir(dst) == []


def empty_with_lamina(dst: Path) -> None:
    """Remove a tree too deep for shutil.rmtree (it recurses per level),
    with an opaque marker at the root: lamina's removal is iterative."""
    lamina.apply_layer(dst, archive(f(b".wh..wh..opq", b"")))
