"""Layer metadata reads back exactly or is refused before anything is
written; over the size cap it is refused too, so a listing never meets a
record it cannot read (a 50 MiB string once made every listing of the
store fail with CorruptStore)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import lamina
from support.layers import tar_of

CAP = 1 << 20


def _store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "tmp" not in p.parts)


@pytest.fixture
def graph(tmp_path: Path):  # type: ignore[no-untyped-def]
    with lamina.Graph(tmp_path / "s", driver="vfs") as g:
        yield g


REFUSED: dict[str, tuple[Any, type[Exception], str]] = {
    "int key": ({1: "a"}, TypeError, r"key 1 is int"),
    "nested int key": ({"a": {2.5: 1}}, TypeError, r"metadata\[\"a\"\]: key 2.5"),
    "tuple": ({"a": (1, 2)}, TypeError, r"tuple would read back as a list"),
    "set": ({"a": {1}}, TypeError, r"set is not a JSON value"),
    "bytes": ({"a": b"x"}, TypeError, r"bytes is not a JSON value"),
    "int past 2**53": ({"a": [2**53 + 1]}, ValueError, r"metadata\[\"a\"\]\[0\]: 9007199254740993"),
    "negative int past 2**53": ({"a": -(2**53) - 1}, ValueError, r"outside"),
    "huge int": ({"a": 10**30}, ValueError, r"outside"),
    "nan": ({"a": math.nan}, ValueError, r"not a JSON number"),
    "inf": ({"a": math.inf}, ValueError, r"not a JSON number"),
    "not a dict": ([1], TypeError, r"metadata is a dict, not list"),
    "too deep": (json.loads("[" * 200 + "]" * 200), ValueError, r"nested deeper"),
    "over the cap": ({"a": "x" * CAP}, ValueError, r"limit is 1048576"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
@pytest.mark.parametrize("call", ["register", "create", "commit"])
def test_refused_before_anything_is_written(
    graph: lamina.Graph, tmp_path: Path, case: str, call: str
) -> None:
    value, exc, message = REFUSED[case]
    if case == "too deep":
        value = {"a": value}
    base = graph.register(tar_of({"f": b"f"}))
    box = graph.create(base)
    before = _store_files(tmp_path / "s")
    with pytest.raises(exc, match=message):
        if call == "register":
            graph.register(tar_of({"f": b"f"}), parent=base, metadata=value)
        elif call == "create":
            graph.create(base, metadata=value)
        else:
            graph.commit(box, metadata=value)
    assert _store_files(tmp_path / "s") == before
    assert len(graph) == 2


def test_fifty_mib_string_leaves_the_store_listable(graph: lamina.Graph) -> None:
    with pytest.raises(ValueError, match="limit"):
        graph.register(tar_of({"f": b"f"}), metadata={"blob": "x" * (50 << 20)})
    assert graph.layers() == []
    layer = graph.register(tar_of({"f": b"f"}))
    graph.delete(layer)


ACCEPTED: list[Any] = [
    {},
    {"s": "é\u2603", "i": 2**53, "n": -(2**53), "f": 0.1, "b": True, "z": None},
    {"nested": {"l": [1, [2, {"k": "v"}]], "e": []}},
    {"just under the cap": "x" * (CAP - 40)},
]


@pytest.mark.parametrize("value", ACCEPTED, ids=range(len(ACCEPTED)))
def test_accepted_values_read_back_exactly(graph: lamina.Graph, tmp_path: Path, value: Any) -> None:
    layer = graph.register(tar_of({"f": b"f"}), metadata=value)
    assert layer.metadata == value
    with lamina.Graph(tmp_path / "s") as again:
        back = again[layer.id].metadata
    assert back == value
    assert json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)
