"""Graph.push to a real registry (Debian's docker-registry on loopback), with
skopeo and umoci as the oracles that read what lamina pushed, and the
registry's access log counting what was uploaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support import manifest as mf
from support.docker_image import tree_as_exported as _tree
from support.images import RealImage, real_image
from support.layers import open_graph
from support.registry import Registry


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


@pytest.fixture(autouse=True)
def _give_back_space(tmp_path: Path) -> Iterator[None]:
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def _inspect(reg: Registry, ref: str, *extra: str) -> Any:
    args = ["skopeo", "inspect", *extra]
    if reg.tls:
        certs = reg.dir / "skopeo-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(reg.ca, certs / "ca.crt")
        args += ["--cert-dir", str(certs), "--creds", ":".join(reg.htpasswd or ())]
    else:
        args += ["--tls-verify=false"]
    out = subprocess.run([*args, f"docker://{reg.host}/{ref}"], check=True, capture_output=True)
    return json.loads(out.stdout)


def _uploads(reg: Registry, since: int) -> list[tuple[str, str]]:
    """The blob upload requests (POST, PATCH, closing PUT) since `since`."""
    return [
        (m, p)
        for m, p in reg.requests()[since:]
        if "/blobs/uploads/" in p and m in ("POST", "PATCH", "PUT")
    ]


def _patches(reg: Registry, since: int) -> int:
    return sum(1 for m, _ in _uploads(reg, since) if m == "PATCH")


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_push_is_read_back_by_skopeo_and_umoci(
    image: RealImage, registry: Registry, driver: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/test/pushed:1"
    with open_graph(tmp_path / "s", driver) as g:
        img = g.load(image.docker_save)[0]
        before = len(registry.requests())
        digest = g.push(img, ref)
        assert _patches(registry, before) == len(img.layers)
        info = _inspect(registry, "test/pushed:1")
        config = _inspect(registry, "test/pushed:1", "--config", "--raw")
        assert info["Digest"] == digest
        assert config == img.config
        assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in img.layers]
        raw = _inspect(registry, "test/pushed:1", "--raw")
        # The manifest lamina made at load is OCI; Docker's format on asking.
        assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert all(lay["mediaType"].endswith("tar+gzip") for lay in raw["layers"])
        before = len(registry.requests())
        assert g.push(img, f"{registry.host}/test/docker:1", format="docker") != digest
        raw = _inspect(registry, "test/docker:1", "--raw")
        assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert all(lay["mediaType"].endswith("tar.gzip") for lay in raw["layers"])
        assert _inspect(registry, "test/docker:1", "--config", "--raw") == img.config
        # The same gzip blobs: each mounted from the first repository.
        assert _patches(registry, before) == 0
        with img.layer.mounted() as root:
            ours = _tree(root)

        # A second push finds every blob there: nothing uploaded, same digest.
        again_from = len(registry.requests())
        assert g.push(img, ref) == digest
        assert _uploads(registry, again_from) == []

    oci = tmp_path / "oci"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{ref}", f"oci:{oci}:t"],
        check=True,
    )  # fmt: skip
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{oci}:t", str(bundle)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    mf.assert_same(_tree(bundle / "rootfs"), ours)


def test_pulled_image_goes_back_unchanged_and_mounts_across_repositories(
    image: RealImage, registry: Registry, tmp_path: Path
) -> None:
    registry.skopeo_push(f"docker-archive:{image.docker_save}", "test/base:1")
    with open_graph(tmp_path / "s", "overlay2") as g:
        pulled = g.pull(f"{registry.host}/test/base:1")
        # Back where it came from: no blob uploaded, the manifest digest kept.
        before = len(registry.requests())
        assert g.push(pulled) == pulled.digest
        assert _uploads(registry, before) == []
        # To another repository of the same registry: each layer mounted
        # from where it was pulled, none uploaded.
        before = len(registry.requests())
        assert g.push(pulled, f"{registry.host}/other/copy:2") == pulled.digest
        posts = [p for m, p in _uploads(registry, before) if m == "POST"]
        mounts = [p for p in posts if "mount=" in p and "from=test/base" in p]
        assert len(mounts) == len(pulled.layers)
        assert _patches(registry, before) == 0
        assert _inspect(registry, "other/copy:2")["Digest"] == pulled.digest

        # One step on top: only the new layer is uploaded.
        box = g.create(pulled, init=True)
        with box.mounted() as root:
            Path(root, "etc/pushed").write_text("by lamina\n")
            Path(root, "etc/motd").unlink(missing_ok=True)
        built = g.commit_image(box, f"{registry.host}/test/built:1", changes=["ENV STEP=1"])
        before = len(registry.requests())
        digest = g.push(built)
        assert _patches(registry, before) == 1
        config = _inspect(registry, "test/built:1", "--config", "--raw")
        assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in built.layers]
        assert "STEP=1" in config["config"]["Env"]

    # A new store pulls what was pushed and sees the same tree.
    with open_graph(tmp_path / "s2", "overlay2") as g:
        back = g.pull(f"{registry.host}/test/built:1")
        assert back.digest == digest
        assert back.layer.read("/etc/pushed") == b"by lamina\n"
        assert not back.layer.exists("/etc/motd")


def test_zstd_and_uncompressed_pushes_pull_back(
    image: RealImage, registry: Registry, tmp_path: Path
) -> None:
    with open_graph(tmp_path / "s", "overlay2") as g:
        img = g.load(image.docker_save)[0]
        with img.layer.mounted() as root:
            ours = _tree(root)
        for comp, suffix in (("zstd", "+zstd"), (None, ".tar")):
            name = f"test/{comp or 'plain'}:1"
            digest = g.push(img, f"{registry.host}/{name}", compression=comp)
            raw = _inspect(registry, name, "--raw")
            assert all(lay["mediaType"].endswith(suffix) for lay in raw["layers"]), [
                lay["mediaType"][-12:] for lay in raw["layers"]
            ]
            if comp == "zstd":
                # zstd has no Docker schema 2 media type: an OCI manifest.
                assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            with open_graph(tmp_path / f"back-{comp}", "overlay2") as back:
                pulled = back.pull(f"{registry.host}/{name}")
                assert pulled.digest == digest
                assert [lay.diff_id for lay in pulled.layers] == [lay.diff_id for lay in img.layers]
                with pulled.layer.mounted() as root:
                    mf.assert_same(_tree(root), ours)
        with pytest.raises(ValueError, match="compression"):
            g.push(img, f"{registry.host}/test/x:1", compression="lz4")
        with pytest.raises(ValueError, match="digest"):
            g.push(img, f"{registry.host}/test/x@sha256:{'0' * 64}")
        with pytest.raises(TypeError, match="int"):
            g.push(3, f"{registry.host}/test/x:1")  # type: ignore[arg-type]


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "secure", htpasswd=("alice", "s3cret"), tls=True).start()
    try:
        yield r
    finally:
        r.stop()


def _lamina(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args], input=stdin, capture_output=True, text=True
    )


def test_auth_login_and_logout(
    image: RealImage, secure: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs.d"
    (certs / secure.host).mkdir(parents=True)
    shutil.copy(secure.ca, certs / secure.host / "ca.crt")
    monkeypatch.setenv("LAMINA_CERTS_D", str(certs))
    conf = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    root = tmp_path / "s"
    with open_graph(root, "vfs") as g:
        img = g.load(image.docker_save)[0]
        name = img.name
        ref = f"{secure.host}/team/app:1"
        with pytest.raises(lamina.AuthenticationError, match=secure.host):
            g.push(img, ref)
        with pytest.raises(lamina.AuthenticationError, match="wrong credentials"):
            g.push(img, ref, auth=("alice", "wrong"))
        digest = g.push(img, ref, auth=("alice", "s3cret"))
        assert _inspect(secure, "team/app:1")["Digest"] == digest

    # `lamina login` checks, then writes the Docker config file as docker does.
    bad = _lamina("login", secure.host, "-u", "alice", "--password-stdin", stdin="nope\n")
    assert bad.returncode != 0 and secure.host in bad.stderr
    assert not (conf / "config.json").exists()
    ok = _lamina("login", secure.host, "-u", "alice", "--password-stdin", stdin="s3cret\n")
    assert ok.returncode == 0, ok.stderr
    cfg = json.loads((conf / "config.json").read_text())
    assert cfg["auths"][secure.host]["auth"] == "YWxpY2U6czNjcmV0"  # alice:s3cret
    assert (conf / "config.json").stat().st_mode & 0o077 == 0
    pushed = _lamina("--root", str(root), "push", name, f"{secure.host}/team/cli:1", "-q")
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == _inspect(secure, "team/cli:1")["Digest"]

    out = _lamina("logout", secure.host)
    assert out.returncode == 0 and secure.host in out.stdout
    assert secure.host not in json.loads((conf / "config.json").read_text())["auths"]
    with open_graph(root, "vfs") as g, pytest.raises(lamina.AuthenticationError, match=secure.host):
        g.push(name, f"{secure.host}/team/cli:2")

    # A credential helper named by the file stores the login instead.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "helper-store"
    helper = bin_dir / "docker-credential-lamina-test"
    helper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in store) cat > {store};;\n'
        f"  get) read host; cat {store} | sed 's/\"ServerURL\"[^,]*, //';;\n"
        f"  erase) rm -f {store};; esac\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (conf / "config.json").write_text(json.dumps({"credHelpers": {secure.host: "lamina-test"}}))
    ok = _lamina("login", secure.host, "-u", "alice", "--password-stdin", stdin="s3cret\n")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(store.read_text())["Secret"] == "s3cret"
    assert "auths" not in json.loads((conf / "config.json").read_text())
    with open_graph(root, "vfs") as g:
        assert g.push(name, f"{secure.host}/team/helper:1")
    assert _lamina("logout", secure.host).returncode == 0
    assert not store.exists()


def test_registry_killed_mid_push_fails_naming_the_blob_and_a_push_after_restart_lands(
    image: RealImage, registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.host}/test/killed:1"
    killed = []

    def kill_once(done: int, total: int | None, layers: int, total_layers: int) -> None:
        if done > 0 and not killed:
            killed.append(done)
            registry.stop()

    with open_graph(tmp_path / "s", "overlay2") as g:
        img = g.load(image.docker_save)[0]
        diff_ids = [lay.diff_id for lay in img.layers]
        with pytest.raises(lamina.RegistryError, match=r"test/killed:1") as e:
            g.push(img, ref, progress=kill_once)
        assert killed
        # It names the reference and the layer whose upload was cut.
        assert any(f": layer {lay.id}: upload" in str(e.value) for lay in img.layers), e.value
        registry.start()
        digest = g.push(img, ref)
    assert _inspect(registry, "test/killed:1")["Digest"] == digest
    config = _inspect(registry, "test/killed:1", "--config", "--raw")
    assert config["rootfs"]["diff_ids"] == diff_ids


_PUSH_INTERRUPTED = """
import os, signal, sys, time, lamina
g = lamina.Graph(sys.argv[1], driver="overlay2")
img = g.load(sys.argv[3])[0]
t = []
def ctrl_c_at_first_bytes(done, total, layers, total_layers):
    if done > 0 and not t:
        t.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
try:
    g.push(img, sys.argv[2], progress=ctrl_c_at_first_bytes)
except KeyboardInterrupt:
    print(f"{time.monotonic() - t[0]:.3f}")
    sys.exit(42)
"""


def test_ctrl_c_stops_a_push_and_writes_no_manifest(
    image: RealImage, registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.host}/test/interrupted:1"
    p = subprocess.run(
        [sys.executable, "-c", _PUSH_INTERRUPTED, str(tmp_path / "s"), ref, str(image.docker_save)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 42, p.stderr
    # Stopped within a poll or two of the signal, not at the end of the push.
    assert float(p.stdout) < 1.0, p.stdout
    with pytest.raises(urllib.error.HTTPError) as e:
        registry.get_manifest("test/interrupted", "1", "application/vnd.oci.image.manifest.v1+json")
    assert e.value.code == 404
    # The store still pushes the image whole afterwards.
    with open_graph(tmp_path / "s", "overlay2") as g:
        img = g.images()[0]
        digest = g.push(img, ref)
    assert _inspect(registry, "test/interrupted:1")["Digest"] == digest
