"""POSIX ACLs and the default ACLs new entries inherit.

A tar entry lists every ACL its inode has (``SCHILY.xattr.system.posix_acl_*``).
An entry created in a directory with a default ACL inherits ACLs, and a mode
the umask did not shape, that the layer never had; apply must drop them. The
oracles: the tree the tar was exported from, and the same tar applied where
no default ACL is in the way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import lamina
from support.manifest import assert_same, manifest

pytestmark = pytest.mark.skipif(shutil.which("setfacl") is None, reason="needs setfacl (acl)")


def setfacl(*args: str | Path) -> None:
    subprocess.run(["setfacl", *map(str, args)], check=True, capture_output=True)


def test_default_acl_set_in_the_same_layer_is_not_inherited(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared/plain").write_text("no acl")
    (src / "shared/withacl").write_text("own acl")
    (src / "shared/sub").mkdir()
    os.chmod(src / "shared/plain", 0o640)
    setfacl("-m", "u:4243:r", src / "shared/withacl")
    # The default ACL comes last, so nothing in src inherited it.
    setfacl("-d", "-m", "u:4242:rx", src / "shared")
    layer = lamina.export_diff(None, src)

    dst = tmp_path / "dst"
    dst.mkdir()
    lamina.apply_layer(dst, layer)
    assert_same(manifest(dst), manifest(src))


def test_default_acl_of_a_lower_directory_is_not_inherited(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared/new").write_text("from the layer")
    (src / "shared/newdir").mkdir()
    os.chmod(src / "shared/new", 0o640)
    os.chmod(src / "shared/newdir", 0o750)
    layer = lamina.export_diff(src, src)  # nothing changed: empty diff
    assert layer.startswith(b"\0" * 512)
    layer = lamina.export_diff(None, src)

    plain, acl = tmp_path / "plain", tmp_path / "acl"
    for lower in (plain, acl):
        (lower / "shared").mkdir(parents=True)
    setfacl("-d", "-m", "u:4242:rwx,m::rwx", acl / "shared")
    for lower in (plain, acl):
        lamina.apply_layer(lower, layer)
    got, want = manifest(acl), manifest(plain)
    for path in ("/shared/new", "/shared/newdir"):
        assert got[path] == want[path], (got[path], want[path])
    assert not any(k.startswith("system.posix_acl") for k, _ in got["/shared/new"].xattrs)
