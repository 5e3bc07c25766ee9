"""Graph.diff_images on the drivers that mount (overlay2, overlay): the
cases of tests/unit/test_diff_images.py, each against the naive diff of
the two images' kernel mounts, in order, and the untouched directories
of the shared base never opened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from unit import test_diff_images as unit

import lamina

CASES: list[Callable[[lamina.Graph], Any]] = unit.CASES


@pytest.mark.parametrize("driver", ["overlay2", "overlay"])
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_case(driver: str, case: Callable[[lamina.Graph], Any], tmp_path: Path) -> None:
    with lamina.Graph(tmp_path / "s", driver=driver) as g:
        case(g)
