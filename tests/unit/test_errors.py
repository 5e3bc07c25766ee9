"""The exception hierarchy of ``lamina/errors.py``, and what each error carries."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import lamina
from support.layers import tar_of


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (lamina.LayerNotFound, (lamina.LaminaError, KeyError)),
        (lamina.LayerExists, (lamina.LaminaError, FileExistsError)),
        (lamina.LayerInUse, (lamina.LaminaError,)),
        (lamina.ArchiveError, (lamina.LaminaError, ValueError)),
        (lamina.UnsafeArchive, (lamina.ArchiveError, lamina.LaminaError, ValueError)),
        (lamina.DriverError, (lamina.LaminaError, OSError)),
        (lamina.CorruptStore, (lamina.LaminaError,)),
    ],
)
def test_hierarchy(cls: type, bases: tuple[type, ...]) -> None:
    for b in bases:
        assert issubclass(cls, b)
    assert issubclass(cls, Exception)


def test_layer_not_found_message_is_plain() -> None:
    assert str(lamina.LayerNotFound("layer not found: abc")) == "layer not found: abc"


def test_version() -> None:
    assert lamina.__version__.count(".") == 2


@pytest.mark.parametrize("bad", ["overlay3", "", "VFS", "../x"])
def test_unknown_driver_writes_nothing(tmp_path: Path, bad: str) -> None:
    """A typo must not brick a store: the name is checked before any write."""
    root = tmp_path / "store"
    known = r"unknown storage driver .*this build has overlay, overlay2, vfs"
    with pytest.raises(ValueError, match=known):
        lamina.Graph(root, driver=bad)
    assert not root.exists()
    with lamina.Graph(root, driver="auto" if os.geteuid() == 0 else "vfs") as g:
        assert g.driver in lamina.DRIVERS
    with lamina.Graph(root, driver="auto") as g:
        assert len(g) == 0


def test_drivers_of_this_build() -> None:
    assert lamina.DRIVERS == ("overlay", "overlay2", "vfs")


def test_layer_not_found_says_what_and_where(tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        with pytest.raises(lamina.LayerNotFound) as e:
            g.get("zzz")
        assert str(e.value) == f"no layer 'zzz' in {g.root}"
        assert (e.value.reference, e.value.root, e.value.candidates) == ("zzz", g.root, [])
        with pytest.raises(KeyError):
            g["0" * 64]


def test_cli_no_such_layer(tmp_path: Path) -> None:
    root = tmp_path / "s"
    run = subprocess.run(
        [sys.executable, "-m", "lamina", "--root", str(root), "--driver", "vfs", "inspect", "zzz"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr == f"lamina: no layer 'zzz' in {root}\n"


def test_cli_unknown_driver_lists_drivers(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "--root",
            str(tmp_path / "s"),
            "--driver",
            "overlay3",
            "ls",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "invalid choice: 'overlay3'" in run.stderr
    assert "'overlay', 'overlay2', 'vfs', 'auto'" in run.stderr
    assert not (tmp_path / "s").exists()


def test_corrupt_config_is_corrupt_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    lamina.Graph(root, driver="vfs").close()
    (root / "lamina.json").write_text("{not json")
    with pytest.raises(lamina.CorruptStore) as e:
        lamina.Graph(root)
    assert e.value.path == str(root / "lamina.json")


def test_corrupt_tar_split_names_the_layer(tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        layer = g.register(tar_of({"a": "x" * 100}))
        record = Path(g.root, "layers", layer.id, "tar-split.zst")
        record.write_bytes(b"garbage")
        with pytest.raises(lamina.CorruptStore) as e:
            layer.diff()
        assert e.value.path == str(record)


def test_apply_os_error_names_entry_and_file(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "file").write_text("")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("file/below")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(NotADirectoryError) as e:
        lamina.apply_layer(dst, buf.getvalue())
    assert e.value.errno == errno.ENOTDIR
    assert "tar entry 'file/below'" in str(e.value)
    assert e.value.filename.startswith(str(dst))


def test_sizes_are_the_seeds(tmp_path: Path) -> None:
    """``size`` is the sum of the entries' header sizes (an independent count
    by ``tarfile``); ``tar_size`` the tar's length."""
    data = tar_of({"d/": "", "d/a": "12345", "d/b": "x" * 3000, "l": "->d/a"})
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        layer = g.register(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            want = sum(m.size for m in t.getmembers())
        assert layer.size == want == 3005
        assert layer.tar_size == len(data)
        box = g.create(layer)
        assert (box.size, box.tar_size) == (0, None)
