"""dive's analysis of a layer chain, as data: :meth:`lamina.Layer.analyze`.

The numbers are dive's (wagoodman/dive ``dive/filetree/efficiency.go`` and
``dive/image/analysis.go``): every path a layer's tar lists as a leaf counts
its size (a whiteout counts what it removes when that is a directory, else
0); per path, *cumulative* is the sum and *minimum* the smallest of its
counts; the efficiency is the sum of the minimums over the sum of the
cumulatives; a path counted in two or more layers is an inefficiency, and
the wasted bytes are the sum of the inefficiencies' cumulative sizes, and
the user wasted percent is the wasted bytes over the bytes of the layers
above the base. The CI rules are dive's ``--ci`` rules with dive's defaults.

Every copy of such a path counts as wasted, the one the image keeps and the
base layer's included, so the user wasted percent passes 100% whenever the
copies add up to more than what the layers above the base carry (a file of
the base rewritten once above it is already 200%). The displays (``repr``,
the notebook HTML, ``lamina analyze``) say so next to such a number
(:data:`lamina.display.WASTED_NOTE`); the number itself stays dive's, so
``dive --ci`` thresholds mean the same here.

Beside dive's numbers, each layer's own account: the paths it adds,
modifies and removes against the layers below (its naive diff), with the
bytes of their regular files, and its *hidden* bytes (files it carries that
a later layer overwrites or removes).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from lamina._lamina import Layer

__all__ = [
    "DEFAULT_RULES",
    "Inefficiency",
    "LayerAnalysis",
    "PathChange",
    "Report",
    "RuleResult",
    "analyze",
    "parse_bytes",
]


@dataclass(frozen=True)
class PathChange:
    """One path of a layer's account: what it is (or, removed, was) and the
    bytes of its regular files (a whole subtree for a removed directory)."""

    path: str
    type: str
    bytes: int


@dataclass(frozen=True)
class LayerAnalysis:
    """What one layer does against the layers below it."""

    id: str
    size: int
    """dive's layer size: the sum of the layer tar's header sizes."""
    added: tuple[PathChange, ...]
    modified: tuple[PathChange, ...]
    removed: tuple[PathChange, ...]
    added_bytes: int
    modified_bytes: int
    removed_bytes: int
    hidden_bytes: int
    """Bytes of files the layer carries that a later layer overwrites or
    removes: the layer's share of what the image carries for nothing."""


@dataclass(frozen=True)
class Inefficiency:
    """A path counted in more than one layer (dive's ``fileReference``)."""

    path: str
    count: int
    bytes: int
    """dive's cumulative size: the path's bytes in every layer counting it."""
    layers: tuple[str, ...]
    """Ids of the layers that count it, base first."""


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one CI rule: ``status`` is ``"pass"``, ``"fail"`` or
    ``"disabled"``."""

    rule: str
    status: str
    message: str


DEFAULT_RULES: dict[str, str] = {
    "lowestEfficiency": "0.9",
    "highestWastedBytes": "disabled",
    "highestUserWastedPercent": "0.1",
}
"""dive's CI defaults (``cmd/dive/cli/internal/options/ci_rules.go``)."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


def parse_bytes(text: str | int) -> int:
    """A byte count as dive's CI rules read one (go-humanize ``ParseBytes``):
    ``"20MB"`` and ``"20Mb"`` are 20,000,000, ``"1MiB"`` 1,048,576."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a byte count: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _disabled(value: str | float | int | None) -> bool:
    return value is None or (
        isinstance(value, str) and value.strip().lower() in ("", "disabled", "off", "false")
    )


def _ratio(name: str, value: str | float) -> float:
    r = float(value)
    if not 0 <= r <= 1:
        raise ValueError(f"{name} is a ratio between 0 and 1, not {value!r}")
    return r


def _changes(items: Sequence[Sequence[Any]]) -> tuple[PathChange, ...]:
    return tuple(PathChange(str(p), str(t), int(b)) for p, t, b in items)


class Report:
    """dive's analysis of a layer chain (see the module docs).

    Attributes: ``layers`` (a :class:`LayerAnalysis` per layer, base first),
    ``efficiency`` (0 to 1), ``wasted_bytes``, ``user_wasted_percent`` (a
    ratio, as dive's ``WastedUserPercent``), ``size_bytes`` and
    ``user_size_bytes`` (without the base layer), ``inefficiencies``
    (largest first) and ``name`` (the image's name, when an image was
    analysed).
    """

    def __init__(self, data: Mapping[str, Any], *, name: str | None = None) -> None:
        """A report from the dict ``Layer.analyze()`` computes (the shape of
        :meth:`to_dict`)."""
        self.name: str | None = name if name is not None else data.get("name")
        self.layers: list[LayerAnalysis] = [
            LayerAnalysis(
                id=str(d["id"]),
                size=int(d["size"]),
                added=_changes(d["added"]),
                modified=_changes(d["modified"]),
                removed=_changes(d["removed"]),
                added_bytes=int(d["added_bytes"]),
                modified_bytes=int(d["modified_bytes"]),
                removed_bytes=int(d["removed_bytes"]),
                hidden_bytes=int(d["hidden_bytes"]),
            )
            for d in data["layers"]
        ]
        self.efficiency: float = float(data["efficiency"])
        self.wasted_bytes: int = int(data["wasted_bytes"])
        self.user_wasted_percent: float = float(data["user_wasted_percent"])
        self.size_bytes: int = int(data["size_bytes"])
        self.user_size_bytes: int = int(data["user_size_bytes"])
        self.inefficiencies: list[Inefficiency] = [
            Inefficiency(str(i["path"]), int(i["count"]), int(i["bytes"]), tuple(i["layers"]))
            for i in data["inefficiencies"]
        ]

    @property
    def hidden_bytes(self) -> int:
        """Bytes of files some layer carries that a later one overwrites or
        removes, over all layers."""
        return sum(layer.hidden_bytes for layer in self.layers)

    def largest_inefficiencies(self, n: int = 10) -> list[Inefficiency]:
        """The ``n`` inefficient paths that waste the most bytes."""
        return self.inefficiencies[:n]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (lists, dicts, str, int, float): what
        ``lamina analyze --json`` prints."""
        return {
            "name": self.name,
            "efficiency": self.efficiency,
            "wasted_bytes": self.wasted_bytes,
            "user_wasted_percent": self.user_wasted_percent,
            "size_bytes": self.size_bytes,
            "user_size_bytes": self.user_size_bytes,
            "hidden_bytes": self.hidden_bytes,
            "layers": [
                {
                    **{k: v for k, v in asdict(layer).items() if not isinstance(v, tuple)},
                    "added": [[c.path, c.type, c.bytes] for c in layer.added],
                    "modified": [[c.path, c.type, c.bytes] for c in layer.modified],
                    "removed": [[c.path, c.type, c.bytes] for c in layer.removed],
                }
                for layer in self.layers
            ],
            "inefficiencies": [
                {"path": i.path, "count": i.count, "bytes": i.bytes, "layers": list(i.layers)}
                for i in self.inefficiencies
            ],
        }

    def to_pandas(self, what: str = "changes") -> Any:
        """A ``pandas.DataFrame`` (pandas must be installed): ``"changes"``,
        one row per path a layer adds, modifies or removes (columns
        ``layer``, ``index``, ``change``, ``path``, ``type``, ``bytes``);
        ``"layers"``, one row per layer; ``"inefficiencies"``, one row per
        inefficient path."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Report.to_pandas() needs pandas: pip install pandas") from e
        if what == "changes":
            rows = [
                {
                    "layer": layer.id,
                    "index": i,
                    "change": change,
                    "path": c.path,
                    "type": c.type,
                    "bytes": c.bytes,
                }
                for i, layer in enumerate(self.layers)
                for change, items in (
                    ("added", layer.added),
                    ("modified", layer.modified),
                    ("removed", layer.removed),
                )
                for c in items
            ]
            columns = ["layer", "index", "change", "path", "type", "bytes"]
        elif what == "layers":
            rows = [
                {
                    "layer": layer.id,
                    "index": i,
                    "size": layer.size,
                    "added": len(layer.added),
                    "modified": len(layer.modified),
                    "removed": len(layer.removed),
                    "added_bytes": layer.added_bytes,
                    "modified_bytes": layer.modified_bytes,
                    "removed_bytes": layer.removed_bytes,
                    "hidden_bytes": layer.hidden_bytes,
                }
                for i, layer in enumerate(self.layers)
            ]
            columns = list(rows[0]) if rows else ["layer", "index", "size"]
        elif what == "inefficiencies":
            rows = [
                {"path": i.path, "count": i.count, "bytes": i.bytes, "layers": list(i.layers)}
                for i in self.inefficiencies
            ]
            columns = ["path", "count", "bytes", "layers"]
        else:
            raise ValueError(f"what is 'changes', 'layers' or 'inefficiencies', not {what!r}")
        return pandas.DataFrame(rows, columns=columns)

    def ci(
        self,
        *,
        lowest_efficiency: str | float | None = DEFAULT_RULES["lowestEfficiency"],
        highest_wasted_bytes: str | int | None = DEFAULT_RULES["highestWastedBytes"],
        highest_user_wasted_percent: str | float | None = DEFAULT_RULES["highestUserWastedPercent"],
    ) -> list[RuleResult]:
        """dive's CI rules (``dive --ci``): the efficiency must not be below
        ``lowest_efficiency``, the wasted bytes not above
        ``highest_wasted_bytes`` (``"20MB"``, an int, or disabled), the user
        wasted ratio not above ``highest_user_wasted_percent``. ``None`` or
        ``"disabled"`` turns a rule off. ``ValueError`` for a bad threshold."""
        out: list[RuleResult] = []
        if _disabled(lowest_efficiency):
            out.append(RuleResult("lowestEfficiency", "disabled", "rule disabled"))
        else:
            assert lowest_efficiency is not None
            t = _ratio("lowestEfficiency", lowest_efficiency)
            bad = t > self.efficiency
            out.append(
                RuleResult(
                    "lowestEfficiency",
                    "fail" if bad else "pass",
                    "image efficiency is too low "
                    f"(efficiency={self.efficiency:.2f} < threshold={t})"
                    if bad
                    else str(lowest_efficiency),
                )
            )
        if _disabled(highest_wasted_bytes):
            out.append(RuleResult("highestWastedBytes", "disabled", "rule disabled"))
        else:
            assert highest_wasted_bytes is not None
            n = parse_bytes(highest_wasted_bytes)
            bad = self.wasted_bytes > n
            out.append(
                RuleResult(
                    "highestWastedBytes",
                    "fail" if bad else "pass",
                    f"too many bytes wasted (wasted-bytes={self.wasted_bytes} > threshold={n})"
                    if bad
                    else str(highest_wasted_bytes),
                )
            )
        if _disabled(highest_user_wasted_percent):
            out.append(RuleResult("highestUserWastedPercent", "disabled", "rule disabled"))
        else:
            assert highest_user_wasted_percent is not None
            t = _ratio("highestUserWastedPercent", highest_user_wasted_percent)
            bad = self.user_wasted_percent > t
            out.append(
                RuleResult(
                    "highestUserWastedPercent",
                    "fail" if bad else "pass",
                    "too many bytes wasted, relative to the user bytes added "
                    f"(%-user-wasted-bytes={self.user_wasted_percent:.2f} > threshold={t})"
                    if bad
                    else str(highest_user_wasted_percent),
                )
            )
        return out

    def _repr_html_(self) -> str:
        from lamina.display import report_html

        return report_html(self)

    def __repr__(self) -> str:
        from lamina.display import percent, wasted_note

        pct = percent(self.user_wasted_percent)
        name = f" {self.name!r}" if self.name else ""
        note = wasted_note(self)
        return (
            f"<Report{name} layers={len(self.layers)} efficiency={percent(self.efficiency)} "
            f"wasted_bytes={self.wasted_bytes} user_wasted={pct}" + (f" ({note})>" if note else ">")
        )


def analyze(layer: Layer, *, name: str | None = None) -> Report:
    """The report of ``layer``'s chain, named ``name``: what an image's
    ``analyze()`` returns for its top layer and its name."""
    report = layer.analyze()
    report.name = name
    return report
