"""The ``lamina`` verbs over a store, each in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.layers import DRIVERS, tar_of
from support.mounts import mount_points


def lamina(root: Path, driver: str, *args: str, input: bytes | None = None) -> str:
    cmd = [sys.executable, "-m", "lamina", "--root", str(root), "--driver", driver, *args]
    r = subprocess.run(cmd, input=input, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


@pytest.mark.parametrize("driver", DRIVERS)
def test_verbs(driver: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    tar = tmp_path / "base.tar"
    tar.write_bytes(tar_of({"etc/": "", "etc/hosts": "h\n"}))
    base = lamina(root, driver, "register", str(tar)).strip()
    top = lamina(
        root, driver, "register", "-", "--parent", base[:8], input=tar_of({"x": "x\n"})
    ).strip()
    box = lamina(root, driver, "create", top[:12], "--init").strip()
    path = lamina(root, driver, "mount", box[:12]).strip()
    # The mount outlives the process that made it.
    if driver != "vfs":
        assert path in mount_points()
    Path(path, "new").write_text("n\n")
    lamina(root, driver, "umount", box[:12])
    assert path not in mount_points()
    assert lamina(root, driver, "changes", box).split("\n")[0] == "A /new"
    img = lamina(root, driver, "commit", box).strip()
    out = tmp_path / "img.tar"
    lamina(root, driver, "diff", img, "-o", str(out))
    info = json.loads(lamina(root, driver, "inspect", img))
    assert info["parent"] == top and info["diff_id"].startswith("sha256:")
    assert lamina(root, driver, "diff", top).encode() == tar_of({"x": "x\n"})
    ls = lamina(root, driver, "ls")
    assert base[:12] in ls and img[:12] in ls
    tree = lamina(root, driver, "tree")
    assert f"{box[:12]}-init" in tree
    lamina(root, driver, "rm", box)
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "--root", str(root), "rm", base],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 1 and b"has the child layer" in r.stderr
