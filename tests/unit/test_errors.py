"""The exception hierarchy of DESIGN.md §4."""

from __future__ import annotations

import pytest

import lamina


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (lamina.LayerNotFound, (lamina.LaminaError, KeyError)),
        (lamina.LayerExists, (lamina.LaminaError, FileExistsError)),
        (lamina.LayerInUse, (lamina.LaminaError,)),
        (lamina.ArchiveError, (lamina.LaminaError, ValueError)),
        (lamina.UnsafeArchive, (lamina.ArchiveError, lamina.LaminaError, ValueError)),
        (lamina.DriverError, (lamina.LaminaError, OSError)),
    ],
)
def test_hierarchy(cls: type, bases: tuple[type, ...]) -> None:
    for b in bases:
        assert issubclass(cls, b)
    assert issubclass(cls, Exception)


def test_layer_not_found_message_is_plain() -> None:
    assert str(lamina.LayerNotFound("layer not found: abc")) == "layer not found: abc"


def test_version() -> None:
    assert lamina.__version__.count(".") == 2
