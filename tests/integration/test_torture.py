"""Crash torture on every driver: writers killed at crash points drawn
from a seed, the store checked after each (tests/support/torture.py).
`make test` runs a few trials per driver; `make torture` runs 250."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.layers import DRIVERS
from support.torture import torture

TRIALS = int(os.environ.get("LAMINA_TORTURE_TRIALS", "20"))
SEED = int(os.environ.get("LAMINA_TORTURE_SEED", "12"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_writers_leave_a_checked_store(driver: str, tmp_path: Path) -> None:
    done = torture(tmp_path / "store", driver, SEED, TRIALS, Path(__file__).parents[1])
    assert len(done) == TRIALS
    # Most trials die at their crash point; the rest complete and are
    # checked all the same.
    assert sum(t.killed for t in done) >= TRIALS // 2
