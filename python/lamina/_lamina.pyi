"""Type stubs for the native module ``lamina._lamina``."""

from collections.abc import Iterable
from os import PathLike
from typing import IO, Literal, TypeAlias

_Path: TypeAlias = str | PathLike[str]
LayerSource: TypeAlias = str | PathLike[str] | bytes | bytearray | IO[bytes]
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

def apply_layer(
    dst: _Path,
    source: LayerSource,
    *,
    whiteouts: Literal["apply", "overlay"] = "apply",
    rootless_overlay: bool = False,
    tar_split: _Path | None = None,
) -> int:
    """Apply a layer tar (plain, gzip or zstd, by magic bytes) onto ``dst``.

    ``source`` is a path, bytes, or a binary file object (read in chunks with
    ``.read()``). Returns the bytes of uncompressed tar applied.

    Every path is resolved inside ``dst`` by the kernel; a tar that tries to
    reach outside it raises :class:`lamina.UnsafeArchive`, a malformed one
    :class:`lamina.ArchiveError`. ``whiteouts="apply"`` removes what AUFS
    whiteouts (``.wh.NAME``, ``.wh..wh..opq``) name; ``"overlay"`` writes them
    as an overlayfs upper dir holds them (0/0 character devices, the
    ``trusted.overlay.opaque`` xattr, or ``user.overlay.opaque`` with
    ``rootless_overlay=True``). ``tar_split`` writes the record that
    :func:`_reassemble` turns back into the exact tar (file mode 0600).
    Owners are kept when running as root; the GIL is released throughout.
    """

def _apply_layer_report(
    dst: _Path,
    source: LayerSource,
    *,
    whiteouts: Literal["apply", "overlay"] = "apply",
    rootless_overlay: bool = False,
    tar_split: _Path | None = None,
) -> tuple[int, str, int]:
    """``apply_layer`` returning ``(bytes, diff_id, entries)``; ``diff_id`` is
    ``"sha256:<hex>"`` of the uncompressed tar."""

def _reassemble(record: _Path, root: _Path, out: _Path) -> int:
    """Write the exact original tar of the layer applied at ``root`` to
    ``out`` from its tar-split ``record``; returns the bytes written. A file
    changed since the apply raises :class:`lamina.ArchiveError` naming it."""
