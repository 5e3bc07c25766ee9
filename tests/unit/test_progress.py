"""``progress=`` on every long call: for an input of several 4 MiB steps
the callback is called along the way (not only at the start and end), its
last call has the counts at their totals, and those totals are what the
store says (the source's size, ``tar_size``, the layers). An exception
from the callback stops the call as Ctrl-C does: it is what the call
raises, the callback is not called again, and the store is as it was."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import scratch_vfs_graph, tar_of

MIB = 1 << 20
Info = tuple[int, int, int, int]


class Boom(Exception):
    pass


class Recorder:
    """A progress callback that records its calls, raising ``Boom`` at the
    first call whose bytes are past ``raise_past`` (if given)."""

    def __init__(self, raise_past: int | None = None) -> None:
        self.calls: list[Info] = []
        self.raise_past = raise_past

    def __call__(self, *info: int) -> None:
        assert len(info) == 4
        self.calls.append((info[0], info[1], info[2], info[3]))
        if self.raise_past is not None and info[0] > self.raise_past:
            raise Boom(str(info))

    @property
    def last(self) -> Info:
        return self.calls[-1]

    def along_the_way(self) -> int:
        """Calls with some but not all of the bytes done."""
        return sum(1 for b, t, _, _ in self.calls if b > 0 and (t == 0 or b < t))


@pytest.fixture
def g() -> Iterator[lamina.Graph]:
    with scratch_vfs_graph() as g:
        yield g


def _big(n: int = 14, prefix: str = "f") -> bytes:
    return tar_of({f"{prefix}{i}": os.urandom(MIB) for i in range(n)})


def _state(g: lamina.Graph) -> tuple[list[str], list[str], list[str]]:
    return (
        sorted(lay.id for lay in g.layers()),
        sorted(i.name for i in g.images()),
        sorted(os.listdir(Path(g.root, "tmp"))),
    )


def _raises_and_keeps(g: lamina.Graph, call: Callable[[Recorder], object]) -> Recorder:
    before = _state(g)
    rec = Recorder(raise_past=0)
    with pytest.raises(Boom):
        call(rec)
    assert _state(g) == before
    # Not called again after it raised.
    assert rec.calls[-1][0] > 0 and sum(1 for c in rec.calls if c[0] > 0) == 1
    return rec


@pytest.mark.parametrize("kind", ["path", "bytes", "file"])
def test_register(g: lamina.Graph, tmp_path: Path, kind: str) -> None:
    data = _big()
    path = tmp_path / "l.tar"
    path.write_bytes(data)
    sources: dict[str, Callable[[], Any]] = {
        "path": lambda: path,
        "bytes": lambda: data,
        # Closed when collected: a file object left open is no concern here.
        "file": lambda: open(path, "rb"),  # noqa: SIM115
    }
    rec = Recorder()
    layer = g.register(sources[kind](), progress=rec)
    assert rec.along_the_way() >= 2, rec.calls
    assert rec.last == (len(data), len(data), 1, 1)
    assert layer.tar_size == len(data)
    g.delete(layer)
    _raises_and_keeps(g, lambda p: g.register(sources[kind](), progress=p))


def test_layer_diff(g: lamina.Graph, tmp_path: Path) -> None:
    layer = g.register(_big())
    n = layer.tar_size
    assert n
    for dst in (None, tmp_path / "out.tar"):
        rec = Recorder()
        layer.diff(dst, progress=rec)
        assert rec.along_the_way() >= 2
        assert rec.last == (n, n, 1, 1)
    with open(tmp_path / "f.tar", "wb") as f:
        rec = Recorder()
        assert layer.diff(f, progress=rec) == n
    assert rec.last == (n, n, 1, 1)
    _raises_and_keeps(g, lambda p: layer.diff(tmp_path / "stopped.tar", progress=p))


def _container(g: lamina.Graph) -> tuple[lamina.Image, lamina.Layer]:
    img = g.tag(g.register(tar_of({"etc/os": b"x\n"})), "base:1")
    box = g.create(img)
    with box.mounted() as root:
        for i in range(14):
            Path(root, f"big{i}").write_bytes(os.urandom(MIB))
    return img, box


def _two_phases(rec: Recorder, tar_size: int) -> None:
    """The tar counted as written (total not known), then as applied."""
    assert rec.last == (tar_size, tar_size, 1, 1)
    written = [c for c in rec.calls if c[1] == 0 and c[0] > 0]
    applied = [c for c in rec.calls if c[1] == tar_size and 0 < c[0] < tar_size]
    assert len(written) >= 2 and len(applied) >= 2, rec.calls


def test_commit(g: lamina.Graph) -> None:
    _, box = _container(g)
    _raises_and_keeps(g, lambda p: g.commit(box, progress=p))
    rec = Recorder()
    made = g.commit(box, progress=rec)
    assert made.tar_size
    _two_phases(rec, made.tar_size)


def test_commit_image(g: lamina.Graph) -> None:
    _, box = _container(g)
    _raises_and_keeps(g, lambda p: g.commit_image(box, "app:1", progress=p))
    rec = Recorder()
    img = g.commit_image(box, "app:1", progress=rec)
    assert img.layer.tar_size
    _two_phases(rec, img.layer.tar_size)


def test_squash(g: lamina.Graph) -> None:
    base = g.register(_big(7, "a"))
    img = g.tag(g.register(_big(7, "b"), parent=base), "two:1")
    _raises_and_keeps(g, lambda p: g.squash(img, "one:1", progress=p))
    rec = Recorder()
    one = g.squash(img, "one:1", progress=rec)
    assert one.layer.tar_size
    _two_phases(rec, one.layer.tar_size)


def test_check_and_repair(g: lamina.Graph) -> None:
    layers = [g.register(_big(5, "a"))]
    layers.append(g.register(_big(5, "b"), parent=layers[0]))
    total = sum(lay.tar_size or 0 for lay in layers)
    rec = Recorder()
    assert g.check(progress=rec)["problems"] == []
    assert rec.along_the_way() >= 2
    assert rec.last == (total, total, 2, 2)
    _raises_and_keeps(g, lambda p: g.check(progress=p))

    # A leftover under tmp/ for repair to remove; stopped, it stays.
    Path(g.root, "tmp", "leftover").mkdir()
    _raises_and_keeps(g, lambda p: g.repair(progress=p))
    assert g.check()["problems"]
    rec = Recorder()
    done = g.repair(progress=rec)
    assert done["actions"] and done["problems"] == []
    # Both checks, before and after, counted.
    assert rec.last == (2 * total, 2 * total, 4, 4)


def test_diff_images(g: lamina.Graph) -> None:
    base = g.register(tar_of({"etc/a": b"a"}))
    a = g.tag(g.register(tar_of({"etc/b": b"b"}), parent=base), "a:1")
    top = base
    for i in range(3):
        top = g.register(tar_of({f"etc/c{i}": b"c"}), parent=top)
    b = g.tag(top, "b:1")
    rec = Recorder()
    assert len(g.diff_images(a, b, progress=rec)) == 5
    # The four layers not shared, one by one.
    assert [c[2] for c in rec.calls] == [0, 1, 2, 3, 4] and rec.last[3] == 4
    boom = Recorder()

    def raising(*info: int) -> None:
        boom(*info)
        if info[2] == 2:
            raise Boom()

    with pytest.raises(Boom):
        g.diff_images(a, b, progress=raising)
    assert boom.calls[-1][2] == 2


def test_load_stops_and_keeps_nothing(g: lamina.Graph, tmp_path: Path) -> None:
    img = g.tag(g.register(_big()), "x:1")
    g.save(img, tmp_path / "x.tar", format="docker-archive", compression=None)
    with lamina.Graph(tmp_path / "other", driver="vfs") as h:
        _raises_and_keeps(h, lambda p: h.load(tmp_path / "x.tar", progress=p))
        rec = Recorder()
        assert [i.name for i in h.load(tmp_path / "x.tar", progress=rec)] == ["x:1"]
        assert rec.last[2:] == (1, 1) and rec.last[0] == rec.last[1] > 0


def test_not_a_callable(g: lamina.Graph) -> None:
    with pytest.raises(TypeError, match="progress"):
        g.check(progress=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["register", "commit", "diff", "check", "load"])
def test_ctrl_c_stops_the_call_and_keeps_the_store(
    g: lamina.Graph, tmp_path: Path, call: str
) -> None:
    """SIGINT mid-call (sent by the callback, which then waits until the
    main thread has handled it) is a KeyboardInterrupt and the store is as
    it was, as for pull and push."""
    data = _big()
    _, box = _container(g)
    layer = g.register(data)
    g.save(g.tag(layer, "x:1"), tmp_path / "x.tar", format="docker-archive", compression=None)
    other = lamina.Graph(tmp_path / "other", driver="vfs")
    calls: dict[str, Callable[[Any], object]] = {
        "load": lambda p: other.load(tmp_path / "x.tar", progress=p),
        "register": lambda p: g.register(data, parent=layer, progress=p),
        "commit": lambda p: g.commit(box, progress=p),
        "diff": lambda p: layer.diff(tmp_path / "out.tar", progress=p),
        "check": lambda p: g.check(progress=p),
    }
    handled = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        handled.set()
        raise KeyboardInterrupt

    def progress(done: int, *_: int) -> None:
        if done > 0 and not handled.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            handled.wait(60)

    before = _state(g), _state(other)
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            calls[call](progress)
    finally:
        signal.signal(signal.SIGINT, old)
    assert handled.is_set()
    assert (_state(g), _state(other)) == before
    other.close()
