"""The lamina exception hierarchy (DESIGN.md §4).

Plain OS failures are not wrapped: they surface as the matching ``OSError``
subclass (``FileNotFoundError``, ``PermissionError``, ...) with ``errno`` and
``filename`` set.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "DriverError",
    "LaminaError",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "UnsafeArchive",
]


class LaminaError(Exception):
    """Base class of every error lamina raises itself."""


class LayerNotFound(LaminaError, KeyError):
    """No layer has this id, or no id starts with this prefix."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better plain.
        return str(self.args[0]) if self.args else ""


class LayerExists(LaminaError, FileExistsError):
    """A layer with this id already exists."""


class LayerInUse(LaminaError):
    """The layer is mounted or has children."""


class ArchiveError(LaminaError, ValueError):
    """A malformed tar archive."""


class UnsafeArchive(ArchiveError):
    """A tar archive that tries to reach outside the layer it is applied to."""


class DriverError(LaminaError, OSError):
    """A mount or storage-driver failure."""
