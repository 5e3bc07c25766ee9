"""Errors name what failed: an archive error its source, entry and byte
offset; a TypeError the type it got; a failed view lookup the layer as
well as the path."""

from __future__ import annotations

import errno
import gzip
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import tar_of


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[lamina.Graph]:
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        yield g


GOOD = tar_of({"a": b"x" * 100, "b": b"y" * 3000})


def _truncated() -> bytes:
    # The entries are the directory-free files `a` then `b`: `b`'s header is
    # the third block, its payload cut short.
    at = GOOD.index(b"b\0") // 512 * 512
    return GOOD[: at + 512 + 100]


def _sources(tmp_path: Path, data: bytes) -> list[tuple[Any, str]]:
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    return [(data, "<bytes>"), (io.BytesIO(data), "<file object>"), (path, str(path))]


@pytest.mark.parametrize("call", ["register", "apply_layer"])
def test_a_truncated_tar_names_source_entry_and_offset(
    graph: lamina.Graph, tmp_path: Path, call: str
) -> None:
    data = _truncated()
    at = GOOD.index(b"b\0") // 512 * 512
    for source, shown in _sources(tmp_path, data):
        dst = tmp_path / f"dst-{len(shown)}"
        dst.mkdir(exist_ok=True)
        with pytest.raises(lamina.ArchiveError) as e:
            if call == "register":
                graph.register(source)
            else:
                lamina.apply_layer(dst, source)
        assert str(e.value).startswith(f"{shown}: tar entry 'b' at byte {at}: truncated"), e.value


def test_a_bad_header_names_its_offset(graph: lamina.Graph, tmp_path: Path) -> None:
    data = bytearray(GOOD)
    at = GOOD.index(b"b\0") // 512 * 512
    data[at + 148] ^= 1
    with pytest.raises(
        lamina.ArchiveError, match=rf"^<bytes>: tar header at byte {at}: header checksum"
    ):
        graph.register(bytes(data))


@pytest.mark.parametrize("packer", ["gzip", "zstd"])
def test_a_compressed_layers_offset_says_it_is_of_the_decompressed_tar(
    graph: lamina.Graph, packer: str
) -> None:
    bad = bytearray(GOOD)
    at = GOOD.index(b"b\0") // 512 * 512
    bad[at + 148] ^= 1
    if packer == "gzip":
        packed = gzip.compress(bytes(bad))
    else:
        if not shutil.which("zstd"):
            pytest.skip("no zstd (scripts/system-deps.sh installs it)")
        packed = subprocess.run(
            ["zstd", "-q", "-c"], input=bytes(bad), capture_output=True, check=True
        ).stdout
    with pytest.raises(lamina.ArchiveError) as e:
        graph.register(packed)
    assert str(e.value).startswith(
        f"<bytes>: tar header at byte {at} of the decompressed tar: header checksum"
    ), e.value
    with pytest.raises(lamina.ArchiveError) as e:
        graph.register(bytes(bad))
    assert "decompressed" not in str(e.value)


def test_an_unsafe_entry_names_source_and_entry(graph: lamina.Graph) -> None:
    with pytest.raises(lamina.UnsafeArchive, match=r"^<bytes>: tar entry '\.\./x' at byte 0: "):
        graph.register(tar_of({"../x": b"1"}))


def test_load_names_the_source_and_the_layer(graph: lamina.Graph) -> None:
    with pytest.raises(lamina.ArchiveError, match=r"^<bytes>: "):
        graph.load(_truncated())
    with pytest.raises(lamina.ArchiveError, match=r"^<file object>: "):
        graph.load(io.BufferedReader(io.BytesIO(_truncated())))  # type: ignore[arg-type]


TYPE_ERRORS: dict[str, tuple[str, str]] = {
    "register int": (
        "g.register(5)",
        "a layer source is a path, bytes, or a binary file object, not int",
    ),
    "register None": ("g.register(None)", "not NoneType"),
    "layer ref": ("g.create(3.5)", "a layer reference is a Layer or an id (str), not float"),
    "diff dst": ("layer.diff(5)", "dst is None, a path, or a binary file object, not int"),
    "save dst": ("g.save('base:1', 5)", "dst is a path or a binary file object, not int"),
    "export dst": ("lamina.export_diff(None, g.root, 5)", "not int"),
    "read() result": (
        "g.register(type('R', (), {'read': lambda self, n: 'text'})())",
        "read() must return bytes, not str",
    ),
    "squash": ("g.squash(5, 'x:1')", "an image reference is an Image or a name (str), not int"),
    "diff_images a": ("g.diff_images(5, img)", "not int"),
    "diff_images b": ("g.diff_images(img, [img])", "not list"),
    "progress": ("g.register(b'', progress=5)", "progress is a callable or None, not int"),
}


@pytest.mark.parametrize("case", TYPE_ERRORS, ids=list(TYPE_ERRORS))
def test_type_errors_name_the_type_received(graph: lamina.Graph, case: str) -> None:
    code, message = TYPE_ERRORS[case]
    layer = graph.register(tar_of({"f": b"f"}))
    img = graph.tag(layer, "base:1")
    with pytest.raises(TypeError, match=re.escape(message)):
        eval(code, {"g": graph, "layer": layer, "img": img, "lamina": lamina})


def test_view_lookups_name_the_layer(graph: lamina.Graph) -> None:
    layer = graph.register(tar_of({"d/f": b"x"}))
    child = graph.register(tar_of({"d/g": b"y"}), parent=layer)
    graph.tag(child, "app:1")
    calls = {
        "stat": lambda lay: lay.stat("/no/such"),
        "open": lambda lay: lay.open("/no/such"),
        "read": lambda lay: lay.read("/d"),
        "walk": lambda lay: list(lay.walk("/no/such")),
        "not a dir": lambda lay: lay.stat("/d/f/x"),
    }
    for what, call in calls.items():
        with pytest.raises(OSError) as e:
            call(layer)
        assert e.value.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR), what
        assert f"(in layer {layer.id})" in str(e.value), (what, str(e.value))
        assert e.value.filename in ("/no/such", "/d", "/d/f/x"), what
        with pytest.raises(OSError) as e:
            call(child)
        assert f"(in layer {child.id} (image app:1))" in str(e.value), (what, str(e.value))
    with pytest.raises(FileNotFoundError):
        layer.stat("/no/such")
    assert not layer.exists("/no/such")
    assert layer.read("/d/f") == b"x"
