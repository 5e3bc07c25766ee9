"""``Layer.analyze()`` against independent computations: dive's formula
ported to Python over ``tarfile`` (support/dive_reference.py) for the
image-level numbers, and ``Layer.changes()`` (the naive diff of the layers'
trees) plus the merged views for each layer's account; on seeded random
chains of layers with whiteouts, opaque directories, hard links and
directories replaced by files."""

from __future__ import annotations

import io
import json
import math
import random
import tarfile
from pathlib import Path

import pytest

import lamina
from lamina.analysis import Report, parse_bytes
from support import dive_reference
from support.layers import open_graph

T = 1_700_000_000


def _at_or_under(p: str, top: str) -> bool:
    return p == top or p.startswith(top + "/")


class Chain:
    """A random image: a model of its tree and the tars of its layers."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: dict[str, int] = {}  # path -> size
        self.dirs: set[str] = set()
        self.tars: list[bytes] = []
        self.n = 0

    def _name(self) -> str:
        self.n += 1
        return f"n{self.n}"

    def layer(self) -> bytes:
        rng = self.rng
        buf = io.BytesIO()
        listed: set[str] = set()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:

            def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
                info.mtime = T + len(self.tars)
                t.addfile(info, io.BytesIO(data) if data is not None else None)

            def parents(path: str) -> None:
                parts = path.strip("/").split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in listed:
                        listed.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        add(info)
                        self.dirs.add(d)

            def put_file(path: str) -> None:
                parents(path)
                size = rng.choice([0, 1, 7, 100, 4096, 10_000])
                info = tarfile.TarInfo(path)
                info.size, info.mode = size, 0o644
                add(info, bytes(rng.getrandbits(8) for _ in range(size)))
                self.files[path] = size

            def whiteout(path: str) -> None:
                parents(path)
                head, _, tail = path.rpartition("/")
                info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
                add(info)
                self.files = {p: s for p, s in self.files.items() if not _at_or_under(p, path)}
                self.dirs = {d for d in self.dirs if not _at_or_under(d, path)}

            for _ in range(rng.randint(2, 8)):
                op = rng.random()
                dirs = sorted(self.dirs)
                files = sorted(self.files)
                if op < 0.35 or not files:
                    top = rng.choice([*dirs, *["a", "b"]]) if dirs else rng.choice(["a", "b"])
                    put_file(f"{top}/{self._name()}")
                elif op < 0.5:
                    put_file(rng.choice(files))  # overwritten
                elif op < 0.65:
                    victim = rng.choice(files + dirs)
                    if victim not in listed and not any(p.startswith(victim + "/") for p in listed):
                        whiteout(victim)
                elif op < 0.75 and dirs:
                    d = rng.choice(dirs)
                    if d not in listed and not any(p.startswith(d + "/") for p in listed):
                        parents(f"{d}/x")  # lists d itself
                        add(tarfile.TarInfo(f"{d}/.wh..wh..opq"))
                        kept = {p: s for p, s in self.files.items() if not _at_or_under(p, d)}
                        self.files = kept
                        self.dirs = {x for x in self.dirs if x == d or not _at_or_under(x, d)}
                        put_file(f"{d}/{self._name()}")
                elif op < 0.85:
                    src = rng.choice(files)
                    if src in listed:
                        continue
                    # A hard link next to its target, named to sort after it.
                    put_file(src)
                    info = tarfile.TarInfo(src + "-link")
                    info.type, info.linkname = tarfile.LNKTYPE, src
                    add(info)
                    self.files[src + "-link"] = self.files[src]
                    listed.add(src + "-link")
                else:
                    path = f"{rng.choice(['a', 'b'])}/{self._name()}"
                    parents(path)
                    info = tarfile.TarInfo(path)
                    info.type, info.linkname = tarfile.SYMTYPE, "../target"
                    add(info)
                    self.files[path] = 0
        data = buf.getvalue()
        self.tars.append(data)
        return data


def _register(g: lamina.Graph, tars: list[bytes]) -> list[lamina.Layer]:
    out: list[lamina.Layer] = []
    for t in tars:
        out.append(g.register(t, parent=out[-1] if out else None))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_chains_against_dive_and_changes(seed: int, tmp_path: Path) -> None:
    c = Chain(seed)
    for _ in range(5):
        c.layer()
    paths = []
    for i, t in enumerate(c.tars):
        p = tmp_path / f"l{i}.tar"
        p.write_bytes(t)
        paths.append(p)
    want = dive_reference.analyze(paths, stop_at_missing=False)
    with open_graph(tmp_path / "s", "vfs") as g:
        layers = _register(g, c.tars)
        r = layers[-1].analyze()
        assert r.efficiency == pytest.approx(want.efficiency, rel=0, abs=1e-12)
        assert r.wasted_bytes == want.wasted_bytes
        assert (r.size_bytes, r.user_size_bytes) == (want.size_bytes, want.user_size_bytes)
        assert [lay.size for lay in r.layers] == want.layer_sizes
        assert {i.path: (i.count, i.bytes) for i in r.inefficiencies} == want.inefficiencies
        if want.wasted_bytes:
            assert r.user_wasted_percent == pytest.approx(want.user_wasted_percent)
        for i, (layer, acct) in enumerate(zip(layers, r.layers)):
            assert acct.id == layer.id
            got = {(c.path, "A") for c in acct.added}
            got |= {(c.path, "C") for c in acct.modified}
            got |= {(c.path, "D") for c in acct.removed}
            assert got == {(ch.path, ch.kind) for ch in layer.changes()}, f"layer {i}"
            for ch in acct.added + acct.modified:
                if ch.type == "file":
                    assert ch.bytes == layer.stat(ch.path).size, ch.path
            parent = layers[i - 1] if i else None
            for ch in acct.removed:
                if ch.type in ("hardlink", "symlink"):
                    assert ch.bytes == 0
                    continue
                assert parent is not None
                files = [e for e in parent.walk(ch.path) if e.type == "file"]
                assert ch.bytes == sum(e.size for e in files), ch.path
            assert acct.added_bytes == sum(x.bytes for x in acct.added)
            assert acct.removed_bytes == sum(x.bytes for x in acct.removed)
        # Hidden: bytes of a layer's files the top's view does not take
        # from it (the top's provenance says whose each file is).
        top = {e.path: e.layer for e in layers[-1].walk()}
        for i, layer in enumerate(layers):
            with tarfile.open(fileobj=io.BytesIO(c.tars[i])) as t:
                members = [m for m in t if m.isreg() and ".wh." not in m.name]
            # A member a later member of the same tar replaces is hidden too.
            last = {m.name: m for m in members}
            hidden = sum(
                m.size
                for m in members
                if last[m.name] is not m or top.get("/" + m.name) != layer.id
            )
            assert r.layers[i].hidden_bytes == hidden, f"layer {i}"


def test_a_container_layer_is_analysed_from_its_changes(tmp_path: Path) -> None:
    c = Chain(99)
    for _ in range(3):
        c.layer()
    with open_graph(tmp_path / "s", "vfs") as g:
        layers = _register(g, c.tars)
        box = g.create(layers[-1])
        with box.mounted() as root:
            Path(root, "grown").write_bytes(b"x" * 1234)
        r = box.analyze()
        acct = r.layers[-1]
        assert acct.id == box.id and acct.size == 1234
        assert [(x.path, x.type, x.bytes) for x in acct.added] == [("/grown", "file", 1234)]


def test_report_as_data(tmp_path: Path) -> None:
    c = Chain(7)
    for _ in range(4):
        c.layer()
    with open_graph(tmp_path / "s", "vfs") as g:
        r = _register(g, c.tars)[-1].analyze()
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Report(d).to_dict() == d
    assert d["efficiency"] == r.efficiency and len(d["layers"]) == 4
    assert r.hidden_bytes == sum(layer.hidden_bytes for layer in r.layers)
    assert "efficiency=" in repr(r)
    pandas = pytest.importorskip("pandas")
    df = r.to_pandas()
    assert isinstance(df, pandas.DataFrame)
    assert list(df.columns) == ["layer", "index", "change", "path", "type", "bytes"]
    assert len(df) == sum(len(x.added) + len(x.modified) + len(x.removed) for x in r.layers)
    assert df[df.change == "added"].bytes.sum() == sum(x.added_bytes for x in r.layers)
    assert list(r.to_pandas("layers").hidden_bytes) == [x.hidden_bytes for x in r.layers]
    assert len(r.to_pandas("inefficiencies")) == len(r.inefficiencies)
    with pytest.raises(ValueError):
        r.to_pandas("nope")


def test_an_image_is_analysed_as_its_top_layer(tmp_path: Path) -> None:
    c = Chain(11)
    for _ in range(3):
        c.layer()
    with open_graph(tmp_path / "s", "vfs") as g:
        top = _register(g, c.tars)[-1]
        img = g.tag(top, "analysed:1")
        r = img.analyze()
        want = top.analyze().to_dict()
    assert r.name == "analysed:1"
    got = r.to_dict()
    got.pop("name", None)
    want.pop("name", None)
    assert got == want


def test_ci_rules_as_dive_has_them() -> None:
    layer = {
        "id": "x",
        "size": 100,
        "added": [],
        "modified": [],
        "removed": [],
        "added_bytes": 0,
        "modified_bytes": 0,
        "removed_bytes": 0,
        "hidden_bytes": 0,
    }
    r = Report(
        {
            "layers": [layer, {**layer, "id": "y"}],
            "efficiency": 0.8,
            "wasted_bytes": 30,
            "user_wasted_percent": 0.3,
            "size_bytes": 200,
            "user_size_bytes": 100,
            "inefficiencies": [{"path": "/a", "count": 2, "bytes": 30, "layers": ["x", "y"]}],
        }
    )
    status = {x.rule: x.status for x in r.ci()}
    assert status == {
        "lowestEfficiency": "fail",
        "highestWastedBytes": "disabled",
        "highestUserWastedPercent": "fail",
    }
    ok = r.ci(lowest_efficiency="0.5", highest_wasted_bytes="1kB", highest_user_wasted_percent=0.5)
    assert {x.status for x in ok} == {"pass"}
    bad = r.ci(lowest_efficiency=None, highest_wasted_bytes=29, highest_user_wasted_percent="off")
    assert [x.status for x in bad] == ["disabled", "fail", "disabled"]
    with pytest.raises(ValueError):
        r.ci(lowest_efficiency="1.5")
    assert parse_bytes("20MB") == parse_bytes("20Mb") == 20_000_000
    assert parse_bytes("1MiB") == 1 << 20 and parse_bytes("512") == 512
    with pytest.raises(ValueError):
        parse_bytes("lots")
    assert math.isfinite(r.user_wasted_percent)
