"""lamina: a container image layer store with a Rust core.

Apply tar layers, stack them with overlayfs, mount them, diff them and export
them byte for byte, as a library, with no daemon.
"""

from __future__ import annotations

from lamina._lamina import (
    INIT_LAYER_ENTRIES,
    __version__,
    apply_layer,
    setup_init_layer,
)
from lamina.errors import (
    ArchiveError,
    DriverError,
    LaminaError,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    UnsafeArchive,
)

__all__ = [
    "INIT_LAYER_ENTRIES",
    "ArchiveError",
    "DriverError",
    "LaminaError",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "UnsafeArchive",
    "__version__",
    "apply_layer",
    "setup_init_layer",
]
