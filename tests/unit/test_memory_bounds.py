"""Memory that must not grow with a hostile layer's entry count or window
(issue 8 §4): measured in a child process, as its peak RSS."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import lamina


def _self_links(path: Path, n: int) -> None:
    """A gzip layer of ``n`` hard links to themselves with 4 KiB names: next
    to nothing to apply, but every name is a path the apply remembers."""
    parent = "/".join(["p" * 250] * 15)
    with (
        gzip.open(path, "wb", compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for i in range(n):
            info = tarfile.TarInfo(f"{parent}/{i:0250d}")
            info.type, info.linkname = tarfile.LNKTYPE, info.name
            tar.addfile(info)


def _peak_rss_mib(dst: Path, layer: Path) -> float:
    # VmHWM, not ru_maxrss: Linux carries the parent's peak (this test
    # process, which built the layer) across fork and exec in ru_maxrss.
    code = (
        "import re, sys, lamina\n"
        "lamina.apply_layer(sys.argv[1], sys.argv[2])\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(dst), str(layer)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def test_paths_of_a_layer_are_kept_compactly(tmp_path: Path) -> None:
    """60,000 names of 4 KiB: kept as full paths (twice) that was over
    450 MiB; as a trie of interned components it is about 20 MiB."""
    layer = tmp_path / "links.tar.gz"
    _self_links(layer, 60_000)
    dst = tmp_path / "dst"
    dst.mkdir()
    peak = _peak_rss_mib(dst, layer)
    assert peak < 150, f"peak RSS {peak:.0f} MiB"


def test_memory_limit_is_a_typed_error(tmp_path: Path) -> None:
    layer = tmp_path / "links.tar.gz"
    _self_links(layer, 2_000)
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(lamina.LimitExceeded) as e:
        lamina.apply_layer(dst, layer, memory_limit=256 << 10)
    assert isinstance(e.value, MemoryError)
    lamina.apply_layer(dst, layer)
