"""lamina's pytest plugin: fixtures and assertions for tests of image builds.

Registered through the ``pytest11`` entry point, so installing lamina makes
it available to every test suite (``-p no:lamina.pytest_plugin`` turns it
off; ``-p lamina.pytest_plugin`` loads it where the entry point is not
installed).

Fixtures:

- ``lamina_graph``: a fresh :class:`lamina.Graph` in a temporary directory,
  with the ``vfs`` driver when not running as root (``auto`` as root;
  ``--lamina-driver`` chooses), every mount given back and the graph
  closed after the test.
- ``lamina_layer_from_dir``: a function making a read-only layer of that
  graph from a directory tree: ``lamina_layer_from_dir(path, parent=None)``.

Assertions, which fail with a readable diff:

- :func:`assert_layer_tree`: the merged view of a layer against the entries
  expected (content, type, mode, owner, symlink target);
- :func:`assert_changes`: a layer's changes against its parent;
- :func:`assert_image_config`: fields of an image's config;
- :func:`assert_image_diff`: what changes from one image's tree to
  another's (:meth:`lamina.Graph.diff_images`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

import pytest

import lamina

__all__ = [
    "Dir",
    "File",
    "Symlink",
    "assert_changes",
    "assert_image_config",
    "assert_image_diff",
    "assert_layer_tree",
    "lamina_graph",
    "lamina_layer_from_dir",
]


@dataclass(frozen=True)
class File:
    """An expected regular file: its ``content`` (``str`` is UTF-8) and
    metadata; ``None`` fields are not checked."""

    content: str | bytes | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Dir:
    """An expected directory; ``None`` fields are not checked."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Symlink:
    """An expected symlink to ``target``."""

    target: str


Expected = Union[str, bytes, File, Dir, Symlink, None]
"""What :func:`assert_layer_tree` takes per path: ``str``/``bytes`` for a
regular file with that content, :class:`File`, :class:`Dir`,
:class:`Symlink`, or ``None`` for "an entry of any kind". A path ending in
``/`` is a directory."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--lamina-driver``: the driver of ``lamina_graph``."""
    group = parser.getgroup("lamina")
    group.addoption(
        "--lamina-driver",
        default=None,
        help="storage driver of the lamina_graph fixture (default: vfs, auto as root)",
    )


def _default_driver(config: pytest.Config) -> str:
    chosen = config.getoption("--lamina-driver", default=None)
    if chosen:
        return str(chosen)
    return "auto" if os.geteuid() == 0 else "vfs"


@pytest.fixture
def lamina_graph(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[lamina.Graph]:
    """A fresh layer store in a temporary directory, closed after the test
    with every mount given back (persistent ones too)."""
    root = tmp_path_factory.mktemp("lamina") / "store"
    g = lamina.Graph(root, driver=_default_driver(pytestconfig))
    try:
        yield g
    finally:
        try:
            for layer in g.layers():
                while layer.mount_count:
                    layer.unmount()
        finally:
            g.close()


@pytest.fixture
def lamina_layer_from_dir(lamina_graph: lamina.Graph) -> Callable[..., lamina.Layer]:
    """``make(path, *, parent=None, metadata=None, source_date_epoch=None)``:
    a read-only layer of ``lamina_graph`` whose diff is the tree at
    ``path`` (every entry added on ``parent``), exported reproducibly."""

    def make(
        path: str | os.PathLike[str],
        *,
        parent: lamina.Layer | str | None = None,
        metadata: dict[str, Any] | None = None,
        source_date_epoch: int | None = None,
    ) -> lamina.Layer:
        tar = lamina.export_diff(None, path, source_date_epoch=source_date_epoch)
        return lamina_graph.register(tar, parent=parent, metadata=metadata)

    return make


def _norm(path: str) -> str:
    p = "/" + path.strip("/")
    return p


def _within(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def _show(data: bytes) -> list[str] | None:
    try:
        return data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _content_diff(path: str, want: bytes, got: bytes, layer_name: str) -> str:
    a, b = _show(want), _show(got)
    if a is None or b is None:
        return f"{path}: content differs ({len(got)} bytes, expected {len(want)} bytes)"
    lines = difflib.unified_diff(a, b, "expected", f"{path} in {layer_name}", n=2)
    body = "".join("      " + line if line.endswith("\n") else f"      {line}\n" for line in lines)
    return f"{path}: content differs:\n{body.rstrip()}"


def _check_meta(path: str, entry: lamina.Entry, spec: File | Dir) -> list[str]:
    out = []
    if spec.mode is not None and entry.mode != spec.mode:
        out.append(f"{path}: mode 0o{entry.mode:o}, expected 0o{spec.mode:o}")
    if spec.uid is not None and entry.uid != spec.uid:
        out.append(f"{path}: uid {entry.uid}, expected {spec.uid}")
    if spec.gid is not None and entry.gid != spec.gid:
        out.append(f"{path}: gid {entry.gid}, expected {spec.gid}")
    return out


def _check(layer: lamina.Layer, path: str, entry: lamina.Entry, spec: Expected) -> list[str]:
    name = f"layer {layer.id[:12]}"
    kind = entry.type
    if spec is None:
        return []
    if isinstance(spec, Symlink):
        if kind != "symlink":
            return [f"{path}: a {kind}, expected a symlink to {spec.target!r}"]
        if entry.linkname != spec.target:
            return [f"{path}: symlink to {entry.linkname!r}, expected {spec.target!r}"]
        return []
    if isinstance(spec, Dir):
        if kind != "dir":
            return [f"{path}: a {kind}, expected a directory"]
        return _check_meta(path, entry, spec)
    if isinstance(spec, (str, bytes)):
        spec = File(content=spec)
    if kind not in ("file", "hardlink"):
        return [f"{path}: a {kind}, expected a regular file"]
    out = _check_meta(path, entry, spec)
    if spec.content is not None:
        want = spec.content.encode() if isinstance(spec.content, str) else spec.content
        got = layer.read(path)
        if got != want:
            out.append(_content_diff(path, want, got, name))
    return out


def _describe(entry: lamina.Entry) -> str:
    if entry.type == "symlink":
        return f"symlink to {entry.linkname!r}"
    if entry.type in ("file", "hardlink"):
        return f"{entry.type}, {entry.size} bytes"
    return entry.type


def assert_layer_tree(
    layer: lamina.Layer,
    expected: Mapping[str, Expected],
    *,
    path: str = "/",
    exact: bool = True,
) -> None:
    """Assert that ``layer``'s merged view holds the ``expected`` entries.

    Keys are paths (absolute, or relative to ``path``); a key ending in
    ``/`` is a directory. Values: ``str``/``bytes`` (a regular file with
    that content), :class:`File`, :class:`Dir`, :class:`Symlink`, or
    ``None`` (any entry). With ``exact`` (the default) every entry under
    ``path`` must be expected too, save the directories on the way to an
    expected one. On failure, lists what is missing, what is unexpected
    and, per entry, how it differs (a unified diff of text content).
    """
    __tracebackhide__ = True
    top = _norm(path)
    want: dict[str, Expected] = {}
    for key, spec in expected.items():
        p = _norm(key if key.startswith("/") else f"{top}/{key}")
        want[p] = Dir() if key.endswith("/") and spec is None else spec
    missing: list[str] = []
    unexpected: list[str] = []
    differ: list[str] = []
    if exact:
        got = {e.path: e for e in layer.walk(top)}
        implied = {p.rsplit("/", i)[0] or "/" for p in want for i in range(1, p.count("/") + 1)}
        for p, e in sorted(got.items()):
            if p in want or p in implied or p == top:
                continue
            unexpected.append(f"unexpected: {p} ({_describe(e)})")
    else:
        got = {}
    for p, spec in sorted(want.items()):
        entry = got.get(p)
        if entry is None:
            try:
                entry = layer.stat(p)
            except (FileNotFoundError, NotADirectoryError):
                missing.append(f"missing:    {p}" + (f" ({_show_spec(spec)})" if spec else ""))
                continue
        differ.extend(_check(layer, p, entry, spec))
    problems = missing + unexpected + differ
    if problems:
        head = f"layer {layer.id[:12]}: the tree under {top} differs from what was expected"
        raise AssertionError(head + ":\n  " + "\n  ".join(problems))


def _show_spec(spec: Expected) -> str:
    if isinstance(spec, (str, bytes)):
        return f"a file of {len(spec)} bytes"
    if isinstance(spec, Symlink):
        return f"a symlink to {spec.target!r}"
    if isinstance(spec, Dir):
        return "a directory"
    return "a file"


def _path_set(paths: Iterable[str | os.PathLike[str]] | None) -> set[str] | None:
    if paths is None:
        return None
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("give a list of paths, not one path")
    return {_norm(os.fspath(p)) for p in paths}


def assert_changes(
    layer: lamina.Layer,
    *,
    added: Iterable[str | os.PathLike[str]] | None = None,
    modified: Iterable[str | os.PathLike[str]] | None = None,
    deleted: Iterable[str | os.PathLike[str]] | None = None,
) -> None:
    """Assert ``layer.changes()``: exactly these paths added, modified and
    deleted against the parent (a kind given as ``None`` is not checked).

    A directory that is modified only because something below it changed
    (its mtime moved when an entry was added in it) need not be listed in
    ``modified``; listed, it must be modified. On failure, lists what is
    missing and unexpected per kind, and the layer's actual changes.
    """
    __tracebackhide__ = True
    changes = layer.changes()
    actual: dict[str, set[str]] = {"A": set(), "C": set(), "D": set()}
    for c in changes:
        actual[c.kind].add(c.path)
    want = {"A": _path_set(added), "C": _path_set(modified), "D": _path_set(deleted)}
    if want["C"] is not None:
        every = {c.path for c in changes}
        for p in sorted(actual["C"] - want["C"]):
            below = any(q.startswith(p.rstrip("/") + "/") for q in every)
            if below and layer.stat(p).type == "dir":
                actual["C"].discard(p)
    problems = []
    for kind, label in (("A", "added"), ("C", "modified"), ("D", "deleted")):
        exp = want[kind]
        if exp is None:
            continue
        missing, extra = sorted(exp - actual[kind]), sorted(actual[kind] - exp)
        parts = [f"missing {p}" for p in missing] + [f"unexpected {p}" for p in extra]
        if parts:
            problems.append(f"{label + ':':10}" + "; ".join(parts))
    if problems:
        listing = "\n    ".join(f"{c.kind} {c.path}" for c in changes[:60])
        more = f"\n    ... and {len(changes) - 60} more" if len(changes) > 60 else ""
        raise AssertionError(
            f"layer {layer.id[:12]}: its changes differ from what was expected:\n  "
            + "\n  ".join(problems)
            + f"\n  its changes:\n    {listing or '(none)'}{more}"
        )


def assert_image_config(image: lamina.Image, **expected: object) -> None:
    """Assert fields of ``image``'s ``config`` object (``Cmd=[...]``,
    ``Env=[...]``, ``WorkingDir="/app"``; ``Env`` may also be a dict,
    compared with :attr:`lamina.Image.env`). On failure, lists each field
    that differs with what was wanted and what the image has."""
    __tracebackhide__ = True
    config = image.config.get("config") or {}
    problems = []
    for key, want in expected.items():
        got: object = image.env if key == "Env" and isinstance(want, dict) else config.get(key)
        if got != want:
            problems.append(f"{key}: wanted {want!r}, the image has {got!r}")
    if problems:
        raise AssertionError(f"image {image.name}: its config differs:\n  " + "\n  ".join(problems))


def assert_image_diff(
    graph: lamina.Graph,
    a: lamina.Image | str,
    b: lamina.Image | str,
    *,
    added: Iterable[str | os.PathLike[str]] | None = None,
    modified: Iterable[str | os.PathLike[str]] | None = None,
    deleted: Iterable[str | os.PathLike[str]] | None = None,
) -> None:
    """Assert ``graph.diff_images(a, b)``: exactly these paths added,
    modified and deleted from ``a``'s tree to ``b``'s (a kind given as
    ``None`` is not checked); on failure, what is missing and unexpected."""
    __tracebackhide__ = True
    changes = graph.diff_images(a, b)
    actual: dict[str, set[str]] = {"A": set(), "C": set(), "D": set()}
    for c in changes:
        actual[c.kind].add(c.path)
    problems = []
    kinds = (("A", "added", added), ("C", "modified", modified), ("D", "deleted", deleted))
    for kind, label, paths in kinds:
        exp = _path_set(paths)
        if exp is None:
            continue
        parts = [f"missing {p}" for p in sorted(exp - actual[kind])]
        parts += [f"unexpected {p}" for p in sorted(actual[kind] - exp)]
        if parts:
            problems.append(f"{label + ':':10}" + "; ".join(parts))
    if problems:
        listing = "\n    ".join(f"{c.kind} {c.path}" for c in changes[:60])
        raise AssertionError(
            "the images' trees differ from what was expected:\n  "
            + "\n  ".join(problems)
            + f"\n  their changes:\n    {listing or '(none)'}"
        )
