"""Whiteouts and exact reassembly.

The whiteout oracle is GNU tar plus the deletions done with ``rm`` before
extracting the layer's other entries: the smallest hand logic there is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import lamina
from lamina import _lamina
from support import manifest as mf
from support.tars import PRIVILEGED, build, gnu_tar_extract

LOWER = [
    {"name": "etc", "type": "dir"},
    {"name": "etc/gone", "data": b"g"},
    {"name": "etc/kept", "data": b"k"},
    {"name": "opq", "type": "dir"},
    {"name": "opq/lower-file", "data": b"l"},
    {"name": "opq/sub", "type": "dir"},
    {"name": "opq/sub/deep", "data": b"d"},
    {"name": "opq/both", "type": "dir"},
    {"name": "opq/both/lower", "data": b"l"},
    {"name": "tree", "type": "dir"},
    {"name": "tree/a", "type": "dir"},
    {"name": "tree/a/b", "data": b"b"},
]


def oracle(tmp_path: Path, upper: list[dict], removes: list[str], opaque: list[str]) -> Path:
    """GNU tar for the lower layer, rm for the whiteouts, GNU tar for the rest."""
    out = tmp_path / "oracle"
    out.mkdir()
    (tmp_path / "lower.tar").write_bytes(build(LOWER))
    gnu_tar_extract(tmp_path / "lower.tar", out)
    for r in removes:
        subprocess.run(["rm", "-rf", str(out / r)], check=True)
    for d in opaque:
        for child in (out / d).iterdir():
            subprocess.run(["rm", "-rf", str(child)], check=True)
    rest = [e for e in upper if not os.path.basename(e["name"]).startswith(".wh.")]
    (tmp_path / "rest.tar").write_bytes(build(rest))
    gnu_tar_extract(tmp_path / "rest.tar", out)
    return out


def test_whiteouts_and_opaque_in_any_order(tmp_path: Path) -> None:
    upper = [
        {"name": "etc/.wh.gone", "data": b""},
        {"name": "tree/.wh.a", "data": b""},
        {"name": ".wh.never-existed", "data": b""},
        # This layer's content before and after the opaque marker stays.
        {"name": "opq/before", "data": b"b"},
        {"name": "opq/both", "type": "dir"},
        {"name": "opq/both/upper", "data": b"u"},
        {"name": "opq/.wh..wh..opq", "data": b""},
        {"name": "opq/after", "data": b"a"},
    ]
    ours = tmp_path / "ours"
    ours.mkdir()
    lamina.apply_layer(ours, build(LOWER))
    lamina.apply_layer(ours, build(upper))
    want = oracle(tmp_path, upper, ["etc/gone", "tree/a"], ["opq"])
    mf.assert_same(mf.manifest(ours, dir_times=False), mf.manifest(want, dir_times=False))


def test_aufs_hardlink_staging(tmp_path: Path) -> None:
    upper = [
        {"name": ".wh..wh.plnk", "type": "dir", "mode": 0o700},
        {"name": ".wh..wh.plnk/1234.5", "data": b"shared"},
        {"name": "usr", "type": "dir"},
        {"name": "usr/a", "type": "link", "linkname": ".wh..wh.plnk/1234.5"},
        {"name": "usr/b", "type": "link", "linkname": "/.wh..wh.plnk/1234.5"},
        {"name": ".wh..wh.aufs", "data": b""},
    ]
    dst = tmp_path / "d"
    dst.mkdir()
    tar = build(upper)
    lamina.apply_layer(dst, tar, tar_split=tmp_path / "ts")
    assert sorted(os.listdir(dst)) == ["usr"]
    assert (dst / "usr/a").read_bytes() == b"shared"
    assert os.stat(dst / "usr/a").st_ino == os.stat(dst / "usr/b").st_ino
    _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == tar


@pytest.mark.skipif(not PRIVILEGED, reason="overlay whiteouts are 0/0 devices and trusted xattrs")
def test_overlay_form(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    lamina.apply_layer(
        upper,
        build(
            [
                {"name": "etc/.wh.gone", "data": b""},
                {"name": "opq/.wh..wh..opq", "data": b""},
                {"name": "opq/x"},
            ]
        ),
        whiteouts="overlay",
    )
    st = os.lstat(upper / "etc/gone")
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0)
    assert os.getxattr(upper / "opq", "trusted.overlay.opaque") == b"y"
    assert (upper / "opq/x").exists()


def tars_for_reassembly() -> dict[str, bytes]:
    base = [
        {"name": "d", "type": "dir"},
        {"name": "d/f", "data": os.urandom(10_000)},
        {"name": "d/empty", "data": b""},
        {"name": "d/l", "type": "symlink", "linkname": "f"},
        {"name": "d/h", "type": "link", "linkname": "d/f"},
        {"name": "d/" + "n" * 200, "data": b"long"},
        {"name": "d/.wh.x", "data": b""},
    ]
    out = {n: build(base, f) for n, f in [("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)]}
    out["ustar"] = build(base[:5], tarfile.USTAR_FORMAT)
    out["trailing"] = out["pax"] + b"\0" * 4096 + b"trailing garbage"
    out["no-trailer"] = out["ustar"][:-1024].rstrip(b"\0")
    out["no-trailer"] += b"\0" * (-len(out["no-trailer"]) % 512)
    return out


@pytest.mark.parametrize("name", list(tars_for_reassembly()))
def test_reassembly_is_byte_identical(tmp_path: Path, name: str) -> None:
    tar = tars_for_reassembly()[name]
    dst = tmp_path / "d"
    dst.mkdir()
    n, diff_id, _ = _lamina._apply_layer_report(dst, tar, tar_split=tmp_path / "ts")
    assert n == len(tar)
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert oct(os.stat(tmp_path / "ts").st_mode & 0o777) == "0o600"
    assert _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out") == len(tar)
    assert (tmp_path / "out").read_bytes() == tar


def test_reassembly_names_a_changed_file(tmp_path: Path) -> None:
    tar = tars_for_reassembly()["pax"]
    dst = tmp_path / "d"
    dst.mkdir()
    lamina.apply_layer(dst, tar, tar_split=tmp_path / "ts")
    data = bytearray((dst / "d/f").read_bytes())
    data[5000] ^= 1
    (dst / "d/f").write_bytes(bytes(data))
    with pytest.raises(lamina.CorruptStore, match="d/f changed content"):
        _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")
    (dst / "d/f").unlink()
    with pytest.raises(lamina.CorruptStore, match="d/f was removed"):
        _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")
    (dst / "d/f").symlink_to("/etc/passwd")
    with pytest.raises(lamina.CorruptStore, match="d/f is no longer a regular file"):
        _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")
    (dst / "d/f").unlink()
    os.mkfifo(dst / "d/f")  # must not block
    with pytest.raises(lamina.CorruptStore, match="d/f is no longer a regular file"):
        _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")


def test_reassembly_of_overwritten_payload_fails_clearly(tmp_path: Path) -> None:
    tar = build([{"name": "dup", "data": b"one"}, {"name": "dup", "data": b"two"}])
    dst = tmp_path / "d"
    dst.mkdir()
    lamina.apply_layer(dst, tar, tar_split=tmp_path / "ts")
    with pytest.raises(lamina.CorruptStore, match="replaced later in the same layer"):
        _lamina._reassemble(tmp_path / "ts", dst, tmp_path / "out")


def test_shared_inodes_are_never_written(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    lamina.apply_layer(
        parent,
        build(
            [
                {"name": "etc", "type": "dir"},
                {"name": "etc/conf", "data": b"parent", "mode": 0o644},
                {"name": "etc/mode", "data": b"m", "mode": 0o644},
                {"name": "etc/gone", "data": b"g"},
                {"name": "etc/linked", "type": "link", "linkname": "etc/conf"},
            ]
        ),
    )
    before = mf.manifest(parent)
    inodes = {p: r.ino for p, r in before.items()}
    child = tmp_path / "child"
    subprocess.run(["cp", "-al", str(parent), str(child)], check=True)
    lamina.apply_layer(
        child,
        build(
            [
                {"name": "etc/conf", "data": b"child content"},
                {"name": "etc/mode", "data": b"m", "mode": 0o4700},
                {"name": "etc/.wh.gone", "data": b""},
                {"name": "etc/new", "type": "link", "linkname": "etc/linked"},
            ]
        ),
    )
    # Unlinking a shared name moves the inode's ctime and link count (kernel
    # rule), so the check is on everything else, inode numbers included.
    after = mf.manifest(parent)
    assert {p: r.ino for p, r in after.items()} == inodes
    strip = {p: r.__class__(**{**r.__dict__, "link_group": None}) for p, r in before.items()}
    strip_after = {p: r.__class__(**{**r.__dict__, "link_group": None}) for p, r in after.items()}
    mf.assert_same(strip_after, strip)
    assert (child / "etc/conf").read_bytes() == b"child content"
    assert os.stat(child / "etc/mode").st_mode & 0o7777 == 0o4700
    assert not (child / "etc/gone").exists()
    shutil.rmtree(child)


def test_rootless_overlay_opaque_marker(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    layer = build([{"name": "opq", "type": "dir"}, {"name": "opq/.wh..wh..opq", "data": b""}])
    try:
        lamina.apply_layer(upper, layer, whiteouts="overlay", rootless_overlay=True)
    except OSError as e:  # a filesystem without user xattrs
        pytest.skip(f"no user xattrs here: {e}")
    assert os.getxattr(upper / "opq", "user.overlay.opaque") == b"y"
    with pytest.raises(ValueError):
        lamina.apply_layer(upper, layer, whiteouts="aufs-ish")  # type: ignore[arg-type]
