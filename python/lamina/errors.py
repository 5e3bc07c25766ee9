"""The lamina exception hierarchy: one class per kind of failure, all
under :class:`LaminaError`. Where a failure is also one of Python's own
kinds, the class has that base too (``LayerNotFound`` is a ``KeyError``,
``ArchiveError`` a ``ValueError``, ``DriverError`` an ``OSError``,
``LimitExceeded`` a ``MemoryError``), so code that knows nothing of lamina
still catches it.

Plain OS failures are not wrapped: they surface as the matching ``OSError``
subclass (``FileNotFoundError``, ``PermissionError``, ...) with ``errno`` and
``filename`` set.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "AuthenticationError",
    "CorruptStore",
    "DriverError",
    "ImageNotFound",
    "LaminaError",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "LimitExceeded",
    "ManifestUnknown",
    "NotMounted",
    "RegistryError",
    "UnsafeArchive",
    "UnsupportedManifest",
]


class LaminaError(Exception):
    """Base class of every error lamina raises itself."""


class LayerNotFound(LaminaError, KeyError):
    """No layer has this id, or no id starts with this prefix; or the prefix
    is ambiguous (then ``candidates`` lists the ids it matches).

    ``reference`` is what was looked up, ``root`` the store it was looked up in.
    """

    reference: str = ""
    root: str = ""
    candidates: list[str] = []  # noqa: RUF012 - a class default, never mutated

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better plain.
        return str(self.args[0]) if self.args else ""


class ImageNotFound(LaminaError, KeyError):
    """No image has this name. ``name`` is what was looked up, normalized
    (``app`` is ``app:latest``); ``root`` the store it was looked up in."""

    name: str = ""
    root: str = ""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LayerExists(LaminaError, FileExistsError):
    """A layer with this id already exists (``id``)."""

    id: str = ""


class LayerInUse(LaminaError):
    """The layer ``id`` is mounted or has children."""

    id: str = ""


class ArchiveError(LaminaError, ValueError):
    """A malformed tar archive, image layout or docker archive: a blob whose
    digest or size is not its descriptor's, a layer whose diff ID is not its
    config's, a missing blob (the message names it)."""


class UnsafeArchive(ArchiveError):
    """A tar archive that tries to reach outside the layer it is applied to."""


class DriverError(LaminaError, OSError):
    """A mount or storage-driver failure. A failed mount or unmount call has
    ``errno``, ``strerror`` and ``filename`` (the mount point) set."""


class CorruptStore(LaminaError):
    """The store's own files are not what lamina wrote: unparsable, of a newer
    format, inconsistent, or changed since they were written. ``path`` names
    the file or directory."""

    path: str = ""


class NotMounted(LaminaError, ValueError):
    """An unmount with nothing to give back: the layer ``id`` is not mounted
    by this process (more unmounts than mounts)."""

    id: str = ""


class RegistryError(LaminaError):
    """A registry failed or refused a pull or push; the message names the
    reference and, where one is involved, the blob."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials, or asked for some and none were
    given (``auth=``, ``lamina login`` or Docker's config file)."""


class ManifestUnknown(RegistryError, KeyError):
    """The registry has no such manifest, or none for the platform asked."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnsupportedManifest(RegistryError, ValueError):
    """A manifest lamina does not pull: Docker schema 1, or a media type that
    is not an image manifest or index (the message names it)."""


class LimitExceeded(LaminaError, MemoryError):
    """A limit that protects the process was reached: the memory an apply may
    keep about a layer's paths (``apply_layer(memory_limit=...)``, 512 MiB by
    default), or the zstd window a layer asks for (``zstd_window_log_max``,
    2^25 = 32 MiB by default)."""
