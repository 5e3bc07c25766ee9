"""Images without mounts (vfs): OCI layouts and docker archives made here,
byte by byte, loaded from a directory, a tar, an open file and a stream;
what is kept, what is checked, and failures that leave the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import tar_of


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BASE = tar_of({"etc/": "", "etc/os": "base\n", "bin/": "", "bin/sh": "sh\n"})
TOP = tar_of({"app/": "", "app/run": "run\n", "bin/sh": None})


def config_of(layers: list[bytes], **extra: Any) -> bytes:
    c = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09.5Z",
        "config": {"Cmd": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]},
        **extra,
    }
    return json.dumps(c).encode()


def put(layout: Path, data: bytes) -> dict[str, Any]:
    d = sha(data)
    p = layout / "blobs/sha256" / d[7:]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return {"digest": d, "size": len(data)}


def oci_layout(
    layout: Path,
    layers: list[bytes] = [BASE, TOP],  # noqa: B006 - never mutated
    *,
    name: str | None = "app:1",
    gz: bool = True,
    indent: int | None = None,
) -> bytes:
    """An OCI image layout of one image; returns the manifest's bytes."""
    layout.mkdir(parents=True, exist_ok=True)
    config = config_of(layers)
    descs = []
    for t in layers:
        d = put(layout, gzip.compress(t) if gz else t)
        suffix = "+gzip" if gz else ""
        descs.append({"mediaType": f"application/vnd.oci.image.layer.v1.tar{suffix}", **d})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **put(layout, config),
            },
            "layers": descs,
        },
        indent=indent,
    ).encode()
    md: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(layout, manifest),
    }
    if name:
        md["annotations"] = {"org.opencontainers.image.ref.name": name}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [md]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return manifest


def tar_dir(src: Path, dst: Path) -> Path:
    with tarfile.open(dst, "w") as t:
        for p in sorted(src.rglob("*")):
            t.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dst


def layout_as(kind: str, layout: Path, tmp_path: Path) -> Any:
    """``layout`` as a load source: the directory, a tar of it, or that
    tar's bytes as a stream."""
    if kind == "dir":
        return layout
    tar = tar_dir(layout, tmp_path / "layout.tar")
    return tar if kind == "tar" else io.BytesIO(tar.read_bytes())


def docker_archive(dst: Path, images: dict[str, list[bytes]]) -> Path:
    """A legacy ``docker save`` archive; a layer two images share is stored
    once and linked (as docker does)."""
    with tarfile.open(dst, "w") as t:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

        stored: dict[str, str] = {}
        entries = []
        for n, (name, layers) in enumerate(images.items()):
            paths = []
            for k, layer in enumerate(layers):
                d = sha(layer)
                path = f"{n}{k:063d}/layer.tar"
                if d in stored:
                    info = tarfile.TarInfo(path)
                    info.type, info.linkname = tarfile.SYMTYPE, f"../{stored[d]}"
                    t.addfile(info)
                else:
                    add(path, layer)
                    stored[d] = path
                paths.append(path)
            config = config_of(layers)
            add(f"{sha(config)[7:]}.json", config)
            entries.append(
                {"Config": f"{sha(config)[7:]}.json", "RepoTags": [name], "Layers": paths}
            )
        add("manifest.json", json.dumps(entries).encode())
    return dst


@pytest.fixture
def graph(tmp_path: Path) -> Any:
    with lamina.Graph(tmp_path / "store", driver="vfs") as g:
        yield g


def untouched(g: lamina.Graph) -> None:
    assert len(g) == 0
    assert g.images() == []
    assert os.listdir(Path(g.root, "tmp")) == []


def check_app(img: lamina.Image) -> None:
    assert img.name == "app:1"
    assert [lay.diff_id for lay in img.layers] == [sha(BASE), sha(TOP)]
    assert img.layer == img.layers[-1]
    assert img.layers[0].diff() == BASE and img.layer.diff() == TOP
    assert img.config["config"]["Cmd"] == ["/app/run"]
    assert img.created.isoformat() == "2024-05-06T07:08:09.500000+00:00"


@pytest.mark.parametrize(
    "kind", ["dir", "tar", "file", "stream", "bytes", "gzip-tar", "gzip-stream"]
)
def test_load_an_oci_layout(graph: lamina.Graph, tmp_path: Path, kind: str) -> None:
    manifest = oci_layout(tmp_path / "layout")
    tar = tar_dir(tmp_path / "layout", tmp_path / "layout.tar")
    if kind == "dir":
        images = graph.load(tmp_path / "layout")
    elif kind == "tar":
        images = graph.load(str(tar))
    elif kind == "file":
        with open(tar, "rb") as f:
            images = graph.load(f)
    elif kind == "stream":
        images = graph.load(io.BytesIO(tar.read_bytes()))
    elif kind == "bytes":
        images = graph.load(tar.read_bytes())
    elif kind == "gzip-stream":
        images = graph.load(io.BytesIO(gzip.compress(tar.read_bytes())))
    else:
        gz = tmp_path / "layout.tar.gz"
        gz.write_bytes(gzip.compress(tar.read_bytes()))
        images = graph.load(gz)
    assert len(images) == 1
    check_app(images[0])
    assert images[0].digest == sha(manifest)
    assert graph.image("app:1") == images[0]
    assert os.listdir(Path(graph.root, "tmp")) == []


def test_load_a_docker_archive_with_a_shared_layer(graph: lamina.Graph, tmp_path: Path) -> None:
    other = tar_of({"other/": "", "other/x": "x"})
    tar = docker_archive(tmp_path / "a.tar", {"app:1": [BASE, TOP], "other": [BASE, other]})
    for src in (tar, io.BytesIO(tar.read_bytes())):
        images = graph.load(src)
        assert [i.name for i in images] == ["app:1", "other:latest"]
        check_app(images[0])
        assert images[1].layers[0] == images[0].layers[0]
        assert len(graph) == 3  # the shared base once, and loading twice adds nothing
    # Saved uncompressed, the manifest lamina made for it stays.
    out = tmp_path / "out"
    graph.save(["app:1", "other"], out, compression=None)
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [i.digest for i in images]


def test_manifest_and_config_bytes_are_kept(graph: lamina.Graph, tmp_path: Path) -> None:
    # Not lamina's own JSON layout: only a byte-for-byte copy keeps it.
    manifest = oci_layout(tmp_path / "layout", gz=False, indent=3)
    img = graph.load(tmp_path / "layout")[0]
    assert img.digest == sha(manifest)
    graph.save(img, tmp_path / "out", compression=None)
    for blob in (tmp_path / "layout/blobs/sha256").iterdir():
        assert (tmp_path / "out/blobs/sha256" / blob.name).read_bytes() == blob.read_bytes()
    stream = io.BytesIO()
    graph.save(img, stream, format="docker-archive", compression=None)
    with lamina.Graph(tmp_path / "second", driver="vfs") as g2:
        back = g2.load(io.BytesIO(stream.getvalue()))[0]
        assert back.digest == sha(manifest)
        assert back.layers[-1].id == img.layer.id


def corrupt_layer(layout: Path) -> None:
    blob = max((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))


def truncate_layer(layout: Path) -> None:
    blob = max((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.write_bytes(blob.read_bytes()[:-7])


def remove_layer(layout: Path) -> None:
    max((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size).unlink()


def escape_manifest(layout: Path) -> None:
    (layout / "index.json").unlink()
    entry = {"Config": "../../etc/passwd", "RepoTags": ["x:1"], "Layers": []}
    (layout / "manifest.json").write_text(json.dumps([entry]))


def escape_digest(layout: Path) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd"
    (layout / "index.json").write_text(json.dumps(index))


BREAKS = {
    "corrupt": (corrupt_layer, "digest mismatch"),
    "truncated blob": (truncate_layer, "truncated"),
    "missing": (remove_layer, "missing blobs/sha256/"),
    "outside": (escape_manifest, "outside the archive"),
    "bad digest": (escape_digest, "invalid digest"),
}


@pytest.mark.parametrize("kind", ["dir", "tar", "stream"])
def test_a_corrupt_uncompressed_layer_is_refused(
    graph: lamina.Graph, tmp_path: Path, kind: str
) -> None:
    # Its digest is its diff ID, so the apply's hash is its check: the
    # mismatch is reported against the config, and nothing is left.
    layout = tmp_path / "layout"
    oci_layout(layout, gz=False)
    corrupt_layer(layout)
    src = layout_as(kind, layout, tmp_path)
    with pytest.raises(lamina.ArchiveError, match=r"blobs/sha256/.*diff ID is sha256:"):
        graph.load(src)
    untouched(graph)


@pytest.mark.parametrize("gz", [True, False])
def test_spooled_layer_blobs_are_checked_as_they_are_read_back(
    graph: lamina.Graph, tmp_path: Path, gz: bool
) -> None:
    # Blobs over 1 MiB that come before the metadata (a sorted tar: blobs/
    # first, as docker save's order) are spooled, not kept in memory.
    big = tar_of({"big": os.urandom(3 << 20), "etc/": "", "etc/x": "1"})
    layout = tmp_path / "layout"
    oci_layout(layout, [big], gz=gz)
    stream = tar_dir(layout, tmp_path / "layout.tar").read_bytes()
    assert stream.index(b"blobs/") < stream.index(b"index.json")
    with lamina.Graph(tmp_path / "good", driver="vfs") as g2:
        img = g2.load(io.BytesIO(stream))[0]
        assert img.layer.read("/etc/x") == b"1"
    corrupt_layer(layout)
    bad = tar_dir(layout, tmp_path / "bad.tar").read_bytes()
    message = "digest mismatch" if gz else "diff ID is sha256:"
    with pytest.raises(lamina.ArchiveError, match=message):
        graph.load(io.BytesIO(bad))
    untouched(graph)


@pytest.mark.parametrize("kind", ["dir", "tar", "stream"])
@pytest.mark.parametrize("how", list(BREAKS))
def test_broken_layouts_leave_nothing(
    graph: lamina.Graph, tmp_path: Path, kind: str, how: str
) -> None:
    layout = tmp_path / "layout"
    oci_layout(layout, gz=how != "truncated blob")
    breaker, message = BREAKS[how]
    breaker(layout)
    src = layout_as(kind, layout, tmp_path)
    with pytest.raises(lamina.ArchiveError, match=message) as e:
        graph.load(src)
    if how == "outside":
        assert isinstance(e.value, lamina.UnsafeArchive)
    untouched(graph)


def test_wrong_diff_id_and_truncated_archive(graph: lamina.Graph, tmp_path: Path) -> None:
    # The config says the top layer is another one.
    oci_layout(tmp_path / "a", [BASE, TOP])
    config = config_of([BASE, tar_of({"x": "x"})])
    index = json.loads((tmp_path / "a/index.json").read_text())
    mpath = tmp_path / "a/blobs/sha256" / index["manifests"][0]["digest"][7:]
    m = json.loads(mpath.read_text())
    m["config"].update(put(tmp_path / "a", config))
    index["manifests"][0].update(put(tmp_path / "a", json.dumps(m).encode()))
    (tmp_path / "a/index.json").write_text(json.dumps(index))
    with pytest.raises(lamina.ArchiveError, match=r"diff ID .*rootfs\.diff_ids\[1\]"):
        graph.load(tmp_path / "a")
    untouched(graph)
    # A docker archive cut short, from a file and from a stream.
    whole = docker_archive(tmp_path / "d.tar", {"app:1": [BASE, TOP]}).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) // 2])
    for src in (cut, io.BytesIO(cut.read_bytes())):
        with pytest.raises(lamina.ArchiveError):
            graph.load(src)
        untouched(graph)
    with pytest.raises(lamina.ArchiveError, match=r"neither index\.json nor manifest\.json"):
        graph.load(tar_of({"a": "b"}))
    untouched(graph)


def test_tag_untag_and_delete(graph: lamina.Graph) -> None:
    base = graph.register(BASE)
    top = graph.register(TOP, parent=base)
    img = graph.tag(top, "app")
    assert img.name == "app:latest" and img.layers == [base, top]
    assert img.config["rootfs"]["diff_ids"] == [base.diff_id, top.diff_id]
    assert img.manifest["layers"][1]["digest"] == top.diff_id
    assert graph.tag(top.id[:12], "copy:2").digest == img.digest
    cfg = graph.tag(top, "cfg:1", config={"os": "linux", "config": {"User": "app"}})
    assert cfg.config["config"]["User"] == "app" and cfg.digest != img.digest
    assert [i.name for i in graph.images()] == ["app:latest", "cfg:1", "copy:2"]
    with pytest.raises(lamina.LayerInUse, match="image"):
        graph.delete(top)
    for n in ("app", "copy:2", cfg):
        graph.untag(n)
    with pytest.raises(lamina.ImageNotFound) as e:
        graph.image("app")
    assert isinstance(e.value, KeyError) and e.value.name == "app:latest"
    with pytest.raises(ValueError, match="invalid image name"):
        graph.tag(top, "../x")
    box = graph.create(top)
    with pytest.raises(ValueError, match="commit it first"):
        graph.tag(box, "box:1")
    graph.delete(box)
    graph.delete(top)


def test_progress_and_file_objects(graph: lamina.Graph, tmp_path: Path) -> None:
    oci_layout(tmp_path / "layout")
    seen: list[tuple[int, int, int, int]] = []
    graph.load(tmp_path / "layout", progress=lambda *a: seen.append(a))
    assert seen[-1][2] == seen[-1][3] == 2
    assert seen[-1][0] == seen[-1][1] > 0
    out = io.BytesIO()
    saved: list[tuple[int, int, int, int]] = []
    graph.save("app:1", out, format="docker-archive", progress=lambda *a: saved.append(a))
    assert saved[-1][2] == 2
    with lamina.Graph(tmp_path / "b", driver="vfs") as g2:
        check_app(g2.load(io.BytesIO(out.getvalue()))[0])

    def boom(*_: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        graph.save("app:1", tmp_path / "x", progress=boom)
    with pytest.raises(ValueError, match="format"):
        graph.save("app:1", tmp_path / "y", format="tar")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="OCI layout is a directory"):
        graph.save("app:1", io.BytesIO())
    shutil.rmtree(tmp_path / "layout")


def test_a_killed_load_leaves_nothing_named(tmp_path: Path) -> None:
    """A load killed mid-stream (SIGKILL: no clean-up of its own) leaves a
    store that opens with no image, no layer and an empty ``tmp/``."""
    big = tar_of({"big": os.urandom(4 << 20).hex()})
    tar = docker_archive(tmp_path / "a.tar", {"app:1": [BASE, big]}).read_bytes()
    root = tmp_path / "store"
    lamina.Graph(root, driver="vfs").close()
    code = "import lamina, sys; lamina.Graph(sys.argv[1]).load(sys.stdin.buffer)"
    child = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE)
    assert child.stdin is not None
    child.stdin.write(tar[: len(tar) // 2])
    child.stdin.flush()
    deadline = time.monotonic() + 60
    while not os.listdir(root / "tmp"):
        assert time.monotonic() < deadline, "the load never started spooling"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    with lamina.Graph(root) as g:
        untouched(g)


def test_repair_drops_images_whose_layers_it_removed(graph: lamina.Graph) -> None:
    base = graph.register(BASE)
    top = graph.register(TOP, parent=base)
    graph.tag(top, "app:1")
    graph.tag(base, "base:1")
    assert graph.check()["problems"] == []
    # A file of the top layer changed behind lamina's back: it cannot be saved.
    (Path(graph.root, "layers", top.id, "root/app/run")).write_text("changed\n")
    repaired = graph.repair()
    assert repaired["problems"] == []
    assert any("image record removed" in a["what"] for a in repaired["actions"])
    assert [i.name for i in graph.images()] == ["base:1"]
    assert graph.image("base:1").layer == base


def test_an_uncompressed_save_names_blobs_by_their_bytes_and_refuses_a_changed_layer(
    graph: lamina.Graph, tmp_path: Path
) -> None:
    # The blob's digest is the diff ID its reassembly is checked against;
    # a layer whose files changed on disk is refused, not saved misnamed.
    img = graph.tag(graph.register(tar_of({"a": "x" * 100, "b": "y" * 5000})), "one:1")
    out = tmp_path / "out"
    graph.save(img, out, compression=None)
    for blob in (out / "blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert (out / "blobs/sha256" / img.layer.diff_id[7:]).is_file()
    (Path(graph.root) / "layers" / img.layer.id / "root" / "a").write_text("z" * 100)
    with pytest.raises(lamina.CorruptStore, match="changed content"):
        graph.save(img, tmp_path / "bad", compression=None)
    assert not list((tmp_path / "bad").glob("blobs/sha256/*"))
