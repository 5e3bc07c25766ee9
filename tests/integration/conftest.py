"""Integration tests run only inside the privileged test container."""

from __future__ import annotations

import os

import pytest

from support import engine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("LAMINA_IN_TEST_CONTAINER") == "1":
        return
    skip = pytest.mark.skip(reason="integration tests run via tests/run_integration.sh (make test)")
    for item in items:
        item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The Docker engine this session started (support/engine.py) stops with it.
    engine.stop_if_started_here()
