"""Layers of a real image made by a real Docker engine, as an oracle.

The image is built with ``docker build`` on a base imported from the cached
debootstrap rootfs (nothing can be pulled), with steps that make the layer
shapes real images have: files deleted by a later ``RUN rm`` (whiteouts), a
directory removed and recreated (an opaque directory), hard links, setuid
bits, long names. ``docker save`` writes it out; the saved layer tars and the
diff IDs Docker recorded for them are cached between runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def _docker(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def ensure_dockerd() -> None:
    """Start dockerd when no engine answers (CI machines start without one)."""
    if shutil.which("docker") is None:
        raise RuntimeError("docker client missing: apt-get install docker.io")
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    log = open("/tmp/lamina-dockerd.log", "ab")  # noqa: SIM115 - lives as long as dockerd
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    for _ in range(120):
        if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("dockerd did not start; see /tmp/lamina-dockerd.log")


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
    ensure_dockerd()
    rootfs = debian_rootfs()
    if (
        subprocess.run(
            ["docker", "image", "inspect", "lamina-test-debian:base"], capture_output=True
        ).returncode
        != 0
    ):
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        _docker("import", "-", "lamina-test-debian:base", stdin=tar.stdout)
        assert tar.wait() == 0
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(DOCKERFILE)
        _docker(
            "build",
            "-q",
            "-t",
            "lamina-test-image:1",
            ctx,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    stage = Path(tempfile.mkdtemp(prefix="docker-save-", dir=CACHE))
    try:
        saved = stage / "image.tar"
        _docker("save", "-o", str(saved), "lamina-test-image:1")
        # The flattened filesystem as Docker itself sees it: the oracle for
        # applying the saved layers in order.
        cid = _docker("create", "lamina-test-image:1", "/bin/true").stdout.decode().strip()
        try:
            _docker("export", "-o", str(stage / EXPORTED), cid)
        finally:
            _docker("rm", cid)
        subprocess.run(["tar", "-C", str(stage), "-xf", str(saved)], check=True)
        saved.unlink()
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
