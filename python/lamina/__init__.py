"""lamina: a container image layer store with a Rust core.

Apply tar layers, stack them with overlayfs, mount them, diff them and export
them byte for byte, as a library, with no daemon.
"""

from __future__ import annotations

from lamina._lamina import (
    INIT_LAYER_ENTRIES,
    Change,
    __version__,
    apply_layer,
    changes,
    copy_dir,
    export_diff,
    export_upper_diff,
    setup_init_layer,
    upper_changes,
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
    "Change",
    "DriverError",
    "LaminaError",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "UnsafeArchive",
    "__version__",
    "apply_layer",
    "changes",
    "copy_dir",
    "export_diff",
    "export_upper_diff",
    "setup_init_layer",
    "upper_changes",
]
