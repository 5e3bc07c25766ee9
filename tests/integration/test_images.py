"""Images in and out, against the real tools (support/images.py).

In: the image Docker built, as ``docker save`` wrote it (from a path and
from a pipe), as skopeo copied it to OCI layouts (gzip, zstd, and a tar of
an uncompressed one) and in Docker 25's OCI-style docker archive; the merged
view of the loaded image's top layer equals what ``docker export`` gives of a
container of it (the init-layer entries Docker adds aside).

Out: ``docker load`` takes lamina's docker archive and ``docker run`` runs
it; ``skopeo inspect`` and ``umoci unpack`` take lamina's OCI layout, and
umoci's rootfs equals lamina's merged view; digests stay where bytes do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support import engine
from support import manifest as mf
from support.docker_image import INIT_PATHS
from support.images import NAME, RealImage, real_image, skopeo
from support.layers import open_graph
from support.tars import gnu_tar_extract

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

TAG = NAME.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def image() -> RealImage:
    return real_image()


@pytest.fixture(autouse=True)
def _give_back_space(tmp_path: Path) -> Iterator[None]:
    """Each test's stores and archives go when it ends: a few hundred MB
    each, on the suite's tmpfs."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def _tree(root: str | Path) -> dict[str, mf.Record]:
    m = mf.manifest(root, dir_times=False, exclude=set(INIT_PATHS))
    # `docker export` has no entry for the root itself.
    del m["/"]
    return m


@pytest.fixture(scope="module")
def exported(image: RealImage, tmp_path_factory: pytest.TempPathFactory) -> dict[str, mf.Record]:
    dst = tmp_path_factory.mktemp("exported")
    gnu_tar_extract(image.exported, dst)
    tree = _tree(dst)
    # The records hold content hashes; the tree itself would sit in the
    # test tmpfs for the rest of the session.
    shutil.rmtree(dst)
    return tree


def _merged(layer: lamina.Layer) -> dict[str, mf.Record]:
    with layer.mounted() as root:
        return _tree(root)


def _docker_oci_style(image: RealImage, dst: Path) -> Path:
    """Docker 25's docker save: an OCI layout plus a ``manifest.json``
    (made here from skopeo's gzip layout: this engine is Docker 20.10)."""
    layout = dst / "layout"
    shutil.copytree(image.oci_gzip, layout)
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    m = json.loads((layout / "blobs/sha256" / digest[7:]).read_text())
    entry = {
        "Config": f"blobs/sha256/{m['config']['digest'][7:]}",
        "RepoTags": [NAME],
        "Layers": [f"blobs/sha256/{lay['digest'][7:]}" for lay in m["layers"]],
    }
    (layout / "manifest.json").write_text(json.dumps([entry]))
    # Annotations name nothing here: the name must come from RepoTags.
    del index["manifests"][0]["annotations"]
    (layout / "index.json").write_text(json.dumps(index))
    out = dst / "docker-oci.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(out), "."], check=True)
    return out


FORMS = ["docker-save", "docker-save-pipe", "oci-gzip", "oci-zstd", "oci-archive", "docker-oci"]


@pytest.mark.parametrize("driver", ["overlay", "overlay2"])
@pytest.mark.parametrize("form", FORMS)
def test_load_equals_docker_export(
    image: RealImage, exported: dict[str, mf.Record], form: str, driver: str, tmp_path: Path
) -> None:
    # overlay2's layers apply in parallel (register_chain), overlay's in turn.
    with open_graph(tmp_path / "s", driver) as g:
        if form == "docker-save-pipe":
            cat = subprocess.Popen(["cat", str(image.docker_save)], stdout=subprocess.PIPE)
            assert cat.stdout is not None
            images = g.load(cat.stdout)
            assert cat.wait() == 0
        else:
            src: Any = {
                "docker-save": image.docker_save,
                "oci-gzip": image.oci_gzip,
                "oci-zstd": image.oci_zstd,
                "oci-archive": image.oci_archive,
                "docker-oci": lambda: _docker_oci_style(image, tmp_path),
            }[form]
            images = g.load(src() if callable(src) else src)
        assert [i.name for i in images] == [NAME]
        img = images[0]
        assert [lay.diff_id for lay in img.layers] == image.diff_ids()
        docker_config = json.loads((image.dir / "config.json").read_text())
        if form.startswith("docker-save"):
            assert img.config == docker_config
        else:
            # skopeo writes an OCI config: Docker's own fields go.
            assert img.config["config"]["Env"] == docker_config["config"]["Env"]
        assert img.layer.chain == img.layers
        mf.assert_same(_merged(img.layer), exported)
        assert os.listdir(Path(g.root, "tmp")) == []
        if form.startswith("oci-"):
            layout = image.oci_archive if form == "oci-archive" else Path(src)
            if layout.is_dir():
                index = json.loads((layout / "index.json").read_text())
                assert img.digest == index["manifests"][0]["digest"]


def test_load_on_vfs_and_again(
    image: RealImage, exported: dict[str, mf.Record], tmp_path: Path
) -> None:
    with open_graph(tmp_path / "s", "vfs") as g:
        img = g.load(image.docker_save)[0]
        mf.assert_same(_merged(img.layer), exported)
        n = len(g)
        # The same image as an OCI layout: every layer is there already.
        again = g.load(image.oci_gzip)[0]
        assert again.layers == img.layers and len(g) == n
        with pytest.raises(lamina.LayerInUse, match=NAME):
            g.delete(img.layer)


@pytest.fixture(scope="module", params=["overlay", "overlay2"])
def loaded(
    image: RealImage, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("store") / "s"
    with open_graph(root, request.param) as g:
        yield g, g.load(image.docker_save)[0]
    shutil.rmtree(root, ignore_errors=True)


def test_docker_loads_and_runs_lamina_archives(loaded: Any, tmp_path: Path) -> None:
    g, img = loaded
    saved = g.tag(img.layer, "lamina-saved:1")
    assert saved.digest == img.digest
    with engine.use() as env:
        for comp in (None, "gzip"):
            out = tmp_path / f"saved-{comp}.tar"
            g.save("lamina-saved:1", out, format="docker-archive", compression=comp)
            subprocess.run(["docker", "rmi", "-f", "lamina-saved:1"], env=env, capture_output=True)
            engine.docker("load", "-i", str(out), env=env)
            try:
                inspect = json.loads(
                    engine.docker("image", "inspect", "lamina-saved:1", env=env).stdout
                )[0]
                assert inspect["RootFS"]["Layers"] == [lay.diff_id for lay in img.layers]
                run = engine.docker(
                    "run", "--rm", "lamina-saved:1", "/bin/cat", "/data/opaque2/z", env=env
                )
                assert run.stdout == b"z\n"
                ls = engine.docker(
                    "run", "--rm", "lamina-saved:1", "/bin/ls", "/data/opaque2", env=env
                )
                assert ls.stdout.split() == [b"z", b"z-link"]
            finally:
                engine.docker("rmi", "lamina-saved:1", env=env)
            # skopeo reads it too, with lamina's name for it.
            info = json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)
            assert info["Architecture"] == img.config["architecture"]


def test_skopeo_and_umoci_take_lamina_layouts(loaded: Any, tmp_path: Path) -> None:
    g, img = loaded
    for comp in ("gzip", "zstd", None):
        out = tmp_path / f"oci-{comp}"
        g.save(img, out, format="oci", compression=comp)
        info = json.loads(skopeo("inspect", f"oci:{out}:{TAG}").stdout)
        manifest = json.loads((out / "blobs/sha256" / info["Digest"][7:]).read_text())
        assert info["Layers"] == [lay["digest"] for lay in manifest["layers"]]
        config = json.loads(skopeo("inspect", "--config", f"oci:{out}:{TAG}").stdout)
        assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in img.layers]
        if comp is None:
            # Blobs are the exact layer tars: the manifest lamina made at
            # load for an archive with none is the one written.
            assert info["Digest"] == img.digest
        if comp == "zstd":
            continue  # umoci 0.4.7 (Debian 12) has no zstd
        bundle = tmp_path / f"bundle-{comp}"
        r = subprocess.run(
            ["umoci", "unpack", "--image", f"{out}:{TAG}", str(bundle)], capture_output=True
        )
        assert r.returncode == 0, r.stderr.decode()
        mf.assert_same(_tree(bundle / "rootfs"), _merged(img.layer))


def test_digests_stay_where_bytes_do(image: RealImage, tmp_path: Path) -> None:
    """The config is kept byte for byte; the manifest wherever the blobs it
    lists come out unchanged."""
    with open_graph(tmp_path / "s", "overlay") as g:
        img = g.load(image.oci_archive)[0]  # skopeo's: gzip layers
        original = img.manifest
        out = tmp_path / "plain"
        g.save(img, out, compression=None)
        index = json.loads((out / "index.json").read_text())
        # New blobs (uncompressed), so a new manifest; the same config.
        digest = index["manifests"][0]["digest"]
        assert digest != img.digest
        again = json.loads((out / "blobs/sha256" / digest[7:]).read_text())
        assert again["config"]["digest"] == original["config"]["digest"]
        assert [lay["digest"] for lay in again["layers"]] == image.diff_ids()
        # Loaded back (same layers, nothing applied) and saved again, in
        # both formats: now the bytes stay, and so does the digest.
        n = len(g)
        plain = g.load(out)[0]
        assert plain.digest == digest and len(g) == n
        g.save(plain, tmp_path / "third", compression=None)
        third = json.loads((tmp_path / "third/index.json").read_text())
        assert third["manifests"][0]["digest"] == digest
        g.save(plain, tmp_path / "a.tar", format="docker-archive", compression=None)
        assert g.load(tmp_path / "a.tar")[0].digest == digest


def test_cli_round_trip_through_pipes(image: RealImage, tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    lam = [sys.executable, "-m", "lamina", "--root", root, "--driver", "overlay"]

    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run([*lam, *args], capture_output=True, **kw)
        assert r.returncode == 0, r.stderr.decode()
        return r

    with open(image.docker_save, "rb") as f:
        cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
        r = run("load", "-", stdin=cat.stdout)
        assert cat.wait() == 0
    assert r.stdout.decode() == f"Loaded image: {NAME}\n"
    assert r.stderr == b"", "no progress bar in a pipe"
    assert NAME in run("images").stdout.decode()
    run("tag", NAME, "copy:2")
    box = run("create", "--image", "copy:2").stdout.decode().strip()
    # save - | load - into a second store
    other = [sys.executable, "-m", "lamina", "--root", str(tmp_path / "t"), "--driver", "overlay"]
    save = subprocess.Popen([*lam, "save", "copy:2", "-"], stdout=subprocess.PIPE)
    r2 = subprocess.run([*other, "load", "-"], stdin=save.stdout, capture_output=True)
    assert save.wait() == 0 and r2.returncode == 0, r2.stderr.decode()
    assert r2.stdout.decode() == "Loaded image: copy:2\n"
    run("rm", box)
    run("rmi", "copy:2")
    run("rmi", NAME)
    with lamina.Graph(root) as g:
        assert g.images() == [] and len(g) == 0
