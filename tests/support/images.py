"""A real image in every form the image tests load, made by real tools.

``docker build`` (the project's own engine, support/engine.py) builds
``lamina-test-caps:1``: the layer shapes of support/docker_image.py (deleted
files, an opaque directory, hard links, symlinks, setuid, a FIFO, long names)
plus a file with capabilities (``setcap``: the debootstrap minbase has no
libcap2-bin, so the host's ``setcap`` is copied in for one step and removed,
which adds a whiteout of a file, and libcap2 is in the minbase) and a second
opaque directory holding a new hard-link pair. Then:

- ``docker save`` writes ``docker-save.tar`` (Docker 20.10: the legacy form);
- ``docker export`` of a container writes ``exported.tar``, the oracle for the
  merged view;
- ``skopeo copy`` writes OCI layouts with gzip and with zstd layers
  (``oci-gzip/``, ``oci-zstd/``) and an OCI layout tar with the layers as
  docker saved them, uncompressed (``oci-archive.tar``).

Everything is cached between runs under ``$LAMINA_TEST_CACHE/images-<key>``.
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

from support import docker_image, engine
from support.engine import docker
from support.rootfs import CACHE

NAME = "lamina-test-caps:1"

DOCKERFILE = (
    docker_image.DOCKERFILE
    + """\
COPY setcap /usr/local/sbin/setcap-host
RUN cp /bin/true /usr/local/bin/captrue \\
 && /usr/local/sbin/setcap-host cap_net_raw,cap_net_bind_service+ep /usr/local/bin/captrue \\
 && rm /usr/local/sbin/setcap-host && ln -s captrue /usr/local/bin/captrue-sym \\
 && mkdir -p /data/opaque2/x && echo y > /data/opaque2/x/y
RUN rm -rf /data/opaque2 && mkdir /data/opaque2 && echo z > /data/opaque2/z \\
 && ln /data/opaque2/z /data/opaque2/z-link && rm /data/keep/fifo
"""
)


@dataclass(frozen=True)
class RealImage:
    """The cached forms of the test image."""

    dir: Path
    name: str

    @property
    def docker_save(self) -> Path:
        return self.dir / "docker-save.tar"

    @property
    def exported(self) -> Path:
        return self.dir / "exported.tar"

    @property
    def oci_gzip(self) -> Path:
        return self.dir / "oci-gzip"

    @property
    def oci_zstd(self) -> Path:
        return self.dir / "oci-zstd"

    @property
    def oci_archive(self) -> Path:
        return self.dir / "oci-archive.tar"

    def diff_ids(self) -> list[str]:
        """The diff IDs Docker recorded, base first."""
        m = json.loads((self.dir / "config.json").read_text())
        return list(m["rootfs"]["diff_ids"])


def setcap_binary() -> Path:
    for p in ("/usr/sbin/setcap", "/sbin/setcap"):
        if Path(p).exists():
            return Path(p)
    raise RuntimeError("setcap missing: apt-get install libcap2-bin")


def real_image() -> RealImage:
    """The test image in all its forms, built on first use (needs root)."""
    key = hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:16]
    out = CACHE / f"images-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    # The base image and the first image's layers (Docker's build cache).
    docker_image.docker_saved_layers()
    with open(CACHE / ".docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            _build(out)
    return RealImage(out, NAME)


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``skopeo ARGS`` (no signature policy: nothing is pulled)."""
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {r.stderr.decode()}")
    return r


def _build(out: Path) -> None:
    stage = Path(tempfile.mkdtemp(prefix="images-", dir=CACHE))
    try:
        with engine.use() as env, tempfile.TemporaryDirectory() as ctx:
            Path(ctx, "Dockerfile").write_text(DOCKERFILE)
            shutil.copy2(setcap_binary(), Path(ctx, "setcap"))
            docker("build", "-q", "-t", NAME, ctx, env={**env, "DOCKER_BUILDKIT": "0"})
            docker("save", "-o", str(stage / "docker-save.tar"), NAME, env=env)
            cid = docker("create", NAME, "/bin/true", env=env).stdout.decode().strip()
            try:
                docker("export", "-o", str(stage / "exported.tar"), cid, env=env)
            finally:
                docker("rm", cid, env=env)
        src = f"docker-archive:{stage / 'docker-save.tar'}"
        for fmt in ("gzip", "zstd"):
            skopeo(
                "copy",
                "--dest-compress",
                "--dest-compress-format",
                fmt,
                src,
                f"oci:{stage / f'oci-{fmt}'}:{NAME}",
            )
        skopeo("copy", src, f"oci-archive:{stage / 'oci-archive.tar'}:{NAME}")
        with tempfile.TemporaryDirectory() as t:
            subprocess.run(
                ["tar", "-C", t, "-xf", str(stage / "docker-save.tar"), "manifest.json"],
                check=True,
            )
            m = json.loads(Path(t, "manifest.json").read_text())[0]
            subprocess.run(
                ["tar", "-C", t, "-xf", str(stage / "docker-save.tar"), m["Config"]],
                check=True,
            )
            shutil.copy(Path(t, m["Config"]), stage / "config.json")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
