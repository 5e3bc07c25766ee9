"""Type stubs for the native module ``lamina._lamina``."""

from collections.abc import Iterable
from os import PathLike
from typing import TypeAlias

_Path: TypeAlias = str | PathLike[str]
InitEntry: TypeAlias = tuple[str, str] | tuple[str, str, str]

__version__: str
INIT_LAYER_ENTRIES: tuple[InitEntry, ...]

def setup_init_layer(path: _Path, entries: Iterable[InitEntry] | None = None) -> None:
    """Create a container's ``-init`` layer entries under ``path``.

    ``entries`` defaults to the seed's (``INIT_LAYER_ENTRIES``): each is
    ``("dir", path)``, ``("file", path)`` or ``("symlink", path, target)``.
    Whatever non-directory stands on a component of an entry's path is
    replaced, never followed. Running it twice changes nothing.
    """
