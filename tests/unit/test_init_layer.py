"""setup_init_layer: the seed's entries, safely, idempotently."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import lamina
from support.manifest import identity, manifest

# graph/graph_unix.go SetupInitLayer (Docker 1.8), the source of truth.
SEED = {
    "/dev/pts": "dir",
    "/dev/shm": "dir",
    "/proc": "dir",
    "/sys": "dir",
    "/.dockerinit": "file",
    "/.dockerenv": "file",
    "/etc/resolv.conf": "file",
    "/etc/hosts": "file",
    "/etc/hostname": "file",
    "/dev/console": "file",
    "/etc/mtab": "/proc/mounts",
}


def test_default_entries_are_the_seeds() -> None:
    got = {}
    for e in lamina.INIT_LAYER_ENTRIES:
        got[e[1]] = e[2] if e[0] == "symlink" else e[0]
    assert got == SEED


def test_exact_entry_set(tmp_path: Path) -> None:
    lamina.setup_init_layer(tmp_path)
    m = manifest(tmp_path)
    leaves = {p for p in m if not any(q.startswith(p + "/") for q in m)} - {"/"}
    assert leaves == set(SEED)
    parents = set(m) - set(SEED) - {"/"}
    assert parents == {"/dev", "/etc"}
    for p, rec in m.items():
        if p == "/":
            continue
        want = SEED.get(p, "dir")
        if want in ("dir", "file"):
            assert rec.type == want, p
            assert rec.mode == 0o755, (p, oct(rec.mode))
        else:
            assert rec.type == "symlink" and rec.linkname == want
        if rec.type == "file":
            assert rec.size == 0


def test_umask_does_not_apply(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        lamina.setup_init_layer(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(tmp_path / "etc/hosts").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(tmp_path / "dev").st_mode) == 0o755


def test_symlinked_parent_is_replaced_not_followed(tmp_path: Path) -> None:
    layer, outside = tmp_path / "layer", tmp_path / "outside"
    layer.mkdir()
    outside.mkdir()
    (outside / "hosts").write_text("host's own\n")
    os.symlink(str(outside), layer / "etc")  # absolute, pointing out of the layer
    os.symlink("../outside", layer / "dev")  # relative, pointing out too
    before = manifest(outside), identity(outside)
    lamina.setup_init_layer(layer)
    assert (manifest(outside), identity(outside)) == before
    assert (layer / "etc").is_dir() and not (layer / "etc").is_symlink()
    assert (layer / "etc/hosts").stat().st_size == 0


def test_non_empty_file_is_replaced_like_the_seed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("127.0.0.1 image\n")
    os.symlink("/elsewhere", tmp_path / "etc/mtab")
    lamina.setup_init_layer(tmp_path)
    assert (tmp_path / "etc/hosts").read_bytes() == b""
    assert os.readlink(tmp_path / "etc/mtab") == "/proc/mounts"


def test_twice_changes_nothing(tmp_path: Path) -> None:
    lamina.setup_init_layer(tmp_path)
    first = manifest(tmp_path), identity(tmp_path)
    lamina.setup_init_layer(tmp_path)
    assert (manifest(tmp_path), identity(tmp_path)) == first


def test_custom_entries(tmp_path: Path) -> None:
    entries = [
        ("dir", "/run/secrets"),
        ("file", "/etc/machine-id"),
        ("symlink", "/var/run", "/run"),
    ]
    lamina.setup_init_layer(tmp_path, entries)
    assert (tmp_path / "run/secrets").is_dir()
    assert (tmp_path / "etc/machine-id").is_file()
    assert os.readlink(tmp_path / "var/run") == "/run"
    assert not (tmp_path / ".dockerenv").exists()


@pytest.mark.parametrize("bad", [("socket", "/x"), ("dir",), ("symlink", "/x"), ("dir", "/../x")])
def test_bad_entries_raise_value_error(tmp_path: Path, bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        lamina.setup_init_layer(tmp_path, [bad])


def test_missing_layer_is_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        lamina.setup_init_layer(missing)
    assert e.value.errno == 2
    assert e.value.filename == str(missing)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_layer_is_permission_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as e:
            lamina.setup_init_layer(tmp_path)
        assert e.value.filename is not None and str(tmp_path) in e.value.filename
    finally:
        tmp_path.chmod(0o755)
