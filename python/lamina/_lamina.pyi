"""Type stubs for the native module ``lamina._lamina``."""

from collections.abc import Iterable
from os import PathLike
from typing import Union

_Path = Union[str, PathLike[str]]
InitEntry = Union[tuple[str, str], tuple[str, str, str]]

__version__: str
INIT_LAYER_ENTRIES: tuple[InitEntry, ...]

def copy_dir(src: _Path, dst: _Path, *, hardlink: bool = False) -> None:
    """Copy the tree at ``src`` to ``dst`` losslessly.

    ``dst`` must not exist (its parent must) or be an empty directory.
    Every entry keeps its type (directories, regular files, symlinks with
    their target unchanged, FIFOs, sockets, character and block devices),
    owner, mode (setuid/setgid/sticky included), every extended attribute
    (capabilities, POSIX ACLs, ``trusted.*``, ``user.*``, SELinux labels),
    and atime and mtime to the nanosecond; hard-link groups stay groups.
    Regular files are reflinked where the filesystem can, else copied with
    ``copy_file_range``, keeping holes. With ``hardlink=True`` each regular
    file becomes a hard link to the source's inode, which is never modified.

    As a non-root caller, ownership that cannot be given is not (and the
    setuid/setgid bits are then dropped), and ``trusted.*`` and
    ``security.capability`` are skipped, as ``cp -a`` does; anything else
    that cannot be copied (device nodes without CAP_MKNOD, unreadable
    files) raises. Errors are ``OSError`` subclasses with ``errno`` and
    ``filename`` set; the file being written is removed, but ``dst`` is
    left partial. A ``dst`` inside ``src`` raises ``ValueError``. The GIL is
    released while copying.
    """

def setup_init_layer(path: _Path, entries: Iterable[InitEntry] | None = None) -> None:
    """Create a container's ``-init`` layer entries under ``path``.

    ``entries`` defaults to the seed's (``INIT_LAYER_ENTRIES``): each is
    ``("dir", path)``, ``("file", path)`` or ``("symlink", path, target)``.
    Whatever non-directory stands on a component of an entry's path is
    replaced, never followed. Running it twice changes nothing.
    """
