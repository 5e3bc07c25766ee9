"""Graph.pull from a real registry (Debian's docker-registry on loopback),
with skopeo as the client that pushes, skopeo inspect and `docker export`
as the oracles, and the registry's own access log counting requests."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support import manifest as mf
from support.docker_image import exported_records
from support.docker_image import tree_as_exported as _tree
from support.images import RealImage, real_image
from support.layers import open_graph
from support.registry import Registry

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry").start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def exported(image: RealImage, tmp_path_factory: pytest.TempPathFactory) -> dict[str, mf.Record]:
    return exported_records(image.exported, tmp_path_factory.mktemp("exported"))


def _inspect(reg: Registry, ref: str, *extra: str) -> Any:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{reg.host}/{ref}"],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def _tiny_oci(tmp: Path, text: str) -> str:
    """An OCI layout of a one-file image, made by lamina and read by skopeo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("etc/which")
        info.size = len(text)
        t.addfile(info, io.BytesIO(text.encode()))
    with lamina.Graph(tmp / f"store-{text}", driver="vfs") as g:
        g.tag(g.register(buf.getvalue()), f"tiny:{text}")
        g.save(f"tiny:{text}", tmp / f"oci-{text}", format="oci", compression="gzip")
    return f"oci:{tmp / f'oci-{text}'}"


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_pull_equals_docker_export_and_fetches_nothing_twice(
    image: RealImage,
    exported: dict[str, mf.Record],
    registry: Registry,
    driver: str,
    tmp_path: Path,
) -> None:
    registry.skopeo_push(f"docker-archive:{image.docker_save}", "test/caps:1")
    info = _inspect(registry, "test/caps:1")
    config = _inspect(registry, "test/caps:1", "--config", "--raw")
    with open_graph(tmp_path / "s", driver) as g:
        before = len(registry.requests())
        img = g.pull(f"{registry.host}/test/caps:1")
        assert img.name == f"{registry.host}/test/caps:1"
        assert img.digest == info["Digest"]
        assert [lay.diff_id for lay in img.layers] == config["rootfs"]["diff_ids"]
        assert img.config == config
        fetched = registry.blob_gets(before)
        assert sorted(fetched) == sorted(
            [f"/v2/test/caps/blobs/{d}" for d in info["Layers"]]
            + [f"/v2/test/caps/blobs/{img.manifest['config']['digest']}"]
        )
        with img.layer.mounted() as root:
            mf.assert_same(_tree(root), exported)
        # A second pull fetches no blob, and gives the same image.
        again_from = len(registry.requests())
        again = g.pull(f"{registry.host}/test/caps:1")
        assert again.digest == img.digest and again.layers == img.layers
        assert registry.blob_gets(again_from) == []
        # By digest: pinned, named by the digest, still nothing fetched.
        pinned = g.pull(f"{registry.host}/test/caps@{img.digest}")
        assert pinned.digest == img.digest and pinned.name == img.digest
        assert registry.blob_gets(again_from) == []


def test_zstd_layers(
    image: RealImage, exported: dict[str, mf.Record], registry: Registry, tmp_path: Path
) -> None:
    registry.skopeo_push(
        f"docker-archive:{image.docker_save}",
        "test/zstd:1",
        "--dest-compress-format",
        "zstd",
        "--dest-oci-accept-uncompressed-layers",
        "--format",
        "oci",
    )
    m = json.loads(registry.get_manifest("test/zstd", "1", OCI_MANIFEST))
    assert all("zstd" in lay["mediaType"] for lay in m["layers"]), m
    with open_graph(tmp_path / "s", "overlay2") as g:
        img = g.pull(f"{registry.host}/test/zstd:1")
        assert img.manifest == m
        with img.layer.mounted() as root:
            mf.assert_same(_tree(root), exported)


def test_index_gives_this_platform_or_the_one_asked(registry: Registry, tmp_path: Path) -> None:
    registry.skopeo_push(_tiny_oci(tmp_path, "amd64"), "test/multi:amd64")
    registry.skopeo_push(_tiny_oci(tmp_path, "arm64"), "test/multi:arm64")
    entries = []
    for arch in ("amd64", "arm64"):
        body = registry.get_manifest("test/multi", arch, OCI_MANIFEST)
        entries.append(
            {
                "mediaType": json.loads(body).get("mediaType", OCI_MANIFEST),
                "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    registry.put_manifest("test/multi:both", index.encode(), OCI_INDEX)
    with open_graph(tmp_path / "s", "vfs") as g:
        host = g.pull(f"{registry.host}/test/multi:both")
        here = os.uname().machine
        want = "amd64" if here == "x86_64" else "arm64"
        assert host.layer.read("/etc/which") == want.encode()
        assert host.digest == entries[0 if want == "amd64" else 1]["digest"]
        other = "arm64" if want == "amd64" else "amd64"
        picked = g.pull(f"{registry.host}/test/multi:both", platform=f"linux/{other}")
        assert picked.layer.read("/etc/which") == other.encode()
        with pytest.raises(lamina.ManifestUnknown, match="linux/s390x"):
            g.pull(f"{registry.host}/test/multi:both", platform="linux/s390x")


def test_wrong_bytes_keep_nothing(registry: Registry, tmp_path: Path) -> None:
    registry.skopeo_push(_tiny_oci(tmp_path, "good"), "test/bad:1")
    m = json.loads(registry.get_manifest("test/bad", "1", OCI_MANIFEST))
    digest = m["layers"][0]["digest"]
    hexd = digest.split(":")[1]
    data = registry.dir / f"data/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"
    raw = bytearray(data.read_bytes())
    raw[-9] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(raw))
    with open_graph(tmp_path / "s", "vfs") as g:
        with pytest.raises(lamina.ArchiveError, match=digest):
            g.pull(f"{registry.host}/test/bad:1")
        assert g.layers() == [] and g.images() == []
        assert [p.name for p in (tmp_path / "s" / "tmp").iterdir()] == []


def test_a_config_too_big_for_the_store_is_refused_before_any_layer(
    registry: Registry, tmp_path: Path
) -> None:
    # An image record (manifest and config, read whole on every listing) is
    # capped at 16 MiB: a bigger config must fail the pull before a layer
    # is fetched, not leave layers behind an image that cannot be written.
    registry.skopeo_push(_tiny_oci(tmp_path, "big"), "test/big:small")
    m = json.loads(registry.get_manifest("test/big", "small", OCI_MANIFEST))
    with urllib.request.urlopen(registry.url(f"test/big/blobs/{m['config']['digest']}")) as r:
        cfg = json.loads(r.read())
    cfg.setdefault("config", {})["Labels"] = {"blob": "x" * (17 << 20)}
    body = json.dumps(cfg).encode()
    m["config"] = {**m["config"], "digest": registry.put_blob("test/big", body), "size": len(body)}
    registry.put_manifest("test/big:1", json.dumps(m).encode(), OCI_MANIFEST)
    since = len(registry.requests())
    with open_graph(tmp_path / "s", "vfs") as g:
        with pytest.raises(lamina.RegistryError, match="limit"):
            g.pull(f"{registry.host}/test/big:1")
        assert g.layers() == [] and g.images() == []
    layer_gets = [p for p in registry.blob_gets(since) if m["layers"][0]["digest"] in p]
    assert layer_gets == []


def test_unknown_and_schema_errors_name_the_reference(registry: Registry, tmp_path: Path) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        with pytest.raises(lamina.ManifestUnknown, match="test/nothere:1"):
            g.pull(f"{registry.host}/test/nothere:1")
        with pytest.raises(ValueError, match="invalid image reference"):
            g.pull(f"{registry.host}/Upper:1")
        with pytest.raises(lamina.RegistryError, match="LAMINA_DOCKER_IO_ENDPOINT"):
            os.environ.pop("LAMINA_DOCKER_IO_ENDPOINT", None)
            g.pull("debian:12")


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "secure", htpasswd=("alice", "s3cret"), tls=True).start()
    try:
        yield r
    finally:
        r.stop()


def test_tls_and_auth(secure: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secure.skopeo_push(_tiny_oci(tmp_path, "private"), "team/app:1")
    ref = f"{secure.host}/team/app:1"
    certs = tmp_path / "certs.d"
    (certs / secure.host).mkdir(parents=True)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    with open_graph(tmp_path / "s", "vfs") as g:
        # An untrusted certificate is refused (no downgrade to HTTP).
        monkeypatch.setenv("LAMINA_CERTS_D", str(certs))
        with pytest.raises(lamina.RegistryError, match=secure.host):
            g.pull(ref, auth=("alice", "s3cret"))
        shutil.copy(secure.ca, certs / secure.host / "ca.crt")
        with pytest.raises(lamina.AuthenticationError, match=secure.host):
            g.pull(ref)
        with pytest.raises(lamina.AuthenticationError, match="wrong credentials"):
            g.pull(ref, auth=("alice", "wrong"))
        assert g.pull(ref, auth=("alice", "s3cret")).layer.read("/etc/which") == b"private"
        assert g.pull(ref, auth={"username": "alice", "password": "s3cret"}).name == ref

    # Docker's config file: `auths`, then a credential helper.
    conf = tmp_path / "docker-config"
    conf.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    auth = base64.b64encode(b"alice:s3cret").decode()
    (conf / "config.json").write_text(json.dumps({"auths": {secure.host: {"auth": auth}}}))
    with open_graph(tmp_path / "s2", "vfs") as g:
        assert g.pull(ref).layer.read("/etc/which") == b"private"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-lamina-test"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        f'[ "$host" = "{secure.host}" ] || {{ echo "credentials not found"; exit 1; }}\n'
        'echo \'{"Username": "alice", "Secret": "s3cret"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (conf / "config.json").write_text(json.dumps({"credHelpers": {secure.host: "lamina-test"}}))
    with open_graph(tmp_path / "s3", "vfs") as g:
        assert g.pull(ref).layer.read("/etc/which") == b"private"


def test_cli_pull(registry: Registry, tmp_path: Path) -> None:
    registry.skopeo_push(_tiny_oci(tmp_path, "cli"), "test/cli:1")
    root = tmp_path / "s"
    run = subprocess.run(
        ["python3", "-m", "lamina", "--root", str(root), "pull", f"{registry.host}/test/cli:1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stderr
    name, digest = run.stdout.split()
    assert name == f"{registry.host}/test/cli:1"
    with lamina.Graph(root) as g:
        assert g.image(name).digest == digest


def test_two_processes_pulling_at_once_fetch_each_layer_once(
    image: RealImage, registry: Registry, tmp_path: Path
) -> None:
    registry.skopeo_push(f"docker-archive:{image.docker_save}", "test/both:1")
    info = _inspect(registry, "test/both:1")
    root = tmp_path / "s"
    with open_graph(root, "overlay2"):
        pass
    before = len(registry.requests())
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [
        "python3",
        "-m",
        "lamina",
        "--root",
        str(root),
        "pull",
        "-q",
        f"{registry.host}/test/both:1",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode() for _, e in outs]
    assert outs[0][0] == outs[1][0]
    layer_gets = [p for p in registry.blob_gets(before) if p.rsplit("/", 1)[1] in info["Layers"]]
    assert sorted(layer_gets) == sorted(f"/v2/test/both/blobs/{d}" for d in info["Layers"])
    with lamina.Graph(root) as g:
        assert len(g.images()) == 1 and len(g.layers()) == len(info["Layers"])
