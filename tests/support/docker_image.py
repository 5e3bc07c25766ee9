"""Layers of a real image made by a real Docker engine, as an oracle.

The image is built with ``docker build``, by the project's own engine
(support/engine.py, never a system dockerd), on a base imported from the
cached debootstrap rootfs (nothing can be pulled), with steps that make the layer
shapes real images have: files deleted by a later ``RUN rm`` (whiteouts), a
directory removed and recreated (an opaque directory), hard links, setuid
bits, long names. ``docker save`` writes it out; the saved layer tars and the
diff IDs Docker recorded for them are cached between runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import engine
from support.engine import docker
from support.rootfs import CACHE, debian_rootfs

DOCKERFILE = """\
FROM lamina-test-debian:base
RUN mkdir -p /data/keep /data/opaque/sub /data/gone \\
 && echo lower > /data/opaque/sub/lower && echo a > /data/opaque/a \\
 && echo keep > /data/keep/k && ln /data/keep/k /data/keep/k-link \\
 && echo bye > /data/gone/file && mkfifo /data/keep/fifo \\
 && mkdir -p /data/long/$(printf 'd%.0s' $(seq 120))/$(printf 'n%.0s' $(seq 110)) \\
 && echo deep > /data/long/$(printf 'd%.0s' $(seq 120))/$(printf 'n%.0s' $(seq 110))/f
RUN rm -rf /data/opaque && mkdir -p /data/opaque && echo b > /data/opaque/b \\
 && rm -rf /data/gone /usr/share/doc/apt \\
 && cp /bin/ls /usr/local/bin/sls && chmod 4755 /usr/local/bin/sls \\
 && ln /usr/local/bin/sls /usr/local/bin/sls-link && ln -s ../../bin/ls /usr/local/bin/ls-sym
RUN echo modified >> /data/keep/k && chmod 0600 /data/keep/k-link && touch -d @1 /data/keep
"""


EXPORTED = "exported-rootfs.tar"

# What `docker create` adds to every container (its -init layer); a
# `docker export` contains these, the image's layers do not.
INIT_PATHS = (
    "/.dockerenv",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev",
    "/proc",
    "/sys",
    "/etc/mtab",
)


@dataclass(frozen=True)
class SavedLayer:
    """One layer of the saved image: its tar and the diff ID Docker recorded."""

    tar: Path
    diff_id: str


def docker_saved_layers() -> list[SavedLayer]:
    """The layers (base first) of the test image, built and saved on first use."""
    key = hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:16]
    out = CACHE / f"docker-save-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").exists():
            _build_and_save(out)
    manifest = json.loads((out / "manifest.json").read_text())[0]
    config = json.loads((out / manifest["Config"]).read_text())
    diff_ids = config["rootfs"]["diff_ids"]
    layers = [out / p for p in manifest["Layers"]]
    assert len(layers) == len(diff_ids)
    return [SavedLayer(t, d) for t, d in zip(layers, diff_ids)]


def docker_exported_rootfs() -> Path:
    """The tar `docker export` wrote of a container of the test image."""
    docker_saved_layers()
    key = hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:16]
    return CACHE / f"docker-save-{key}" / EXPORTED


def _build_and_save(out: Path) -> None:
    rootfs = debian_rootfs()
    with engine.use() as env:
        inspect = ["docker", "image", "inspect", "lamina-test-debian:base"]
        if subprocess.run(inspect, env=env, capture_output=True).returncode != 0:
            tar = subprocess.Popen(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
            )
            docker("import", "-", "lamina-test-debian:base", env=env, stdin=tar.stdout)
            assert tar.wait() == 0
        with tempfile.TemporaryDirectory() as ctx:
            Path(ctx, "Dockerfile").write_text(DOCKERFILE)
            build_env = {**env, "DOCKER_BUILDKIT": "0"}
            docker("build", "-q", "-t", "lamina-test-image:1", ctx, env=build_env)
        stage = Path(tempfile.mkdtemp(prefix="docker-save-", dir=CACHE))
        try:
            saved = stage / "image.tar"
            docker("save", "-o", str(saved), "lamina-test-image:1", env=env)
            # The flattened filesystem as Docker itself sees it: the oracle
            # for applying the saved layers in order.
            create = docker("create", "lamina-test-image:1", "/bin/true", env=env)
            cid = create.stdout.decode().strip()
            try:
                docker("export", "-o", str(stage / EXPORTED), cid, env=env)
            finally:
                docker("rm", cid, env=env)
            subprocess.run(["tar", "-C", str(stage), "-xf", str(saved)], check=True)
            saved.unlink()
            if out.exists():
                shutil.rmtree(out)
            stage.rename(out)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


def tree_as_exported(root: str | Path) -> dict[str, Any]:
    """The manifest of a merged tree as ``docker export`` gives it: no init
    layer paths, no entry for the root itself."""
    from support import manifest as mf

    m = mf.manifest(root, dir_times=False, exclude=set(INIT_PATHS))
    del m["/"]
    return m


def exported_records(exported_tar: Path, tmp: Path) -> dict[str, Any]:
    """:func:`tree_as_exported` of ``docker export``'s tar, extracted by GNU
    tar into ``tmp`` and removed once read (only the records stay)."""
    from support.tars import gnu_tar_extract

    gnu_tar_extract(exported_tar, tmp)
    tree = tree_as_exported(tmp)
    shutil.rmtree(tmp)
    return tree
