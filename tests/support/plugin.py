"""Running lamina's pytest plugin in a pytester subprocess."""

from __future__ import annotations

import importlib.metadata


def plugin_args() -> list[str]:
    """``-p lamina.pytest_plugin`` where the entry point is not installed
    (the unprivileged run imports lamina from a copy); where it is, the
    entry point loads it."""
    eps = importlib.metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    if any(ep.value == "lamina.pytest_plugin" for ep in group):
        return []
    return ["-p", "lamina.pytest_plugin"]
