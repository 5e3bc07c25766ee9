"""lamina: a container image layer store with a Rust core.

Apply tar layers, stack them with overlayfs, mount them, diff them and export
them byte for byte, as a library, with no daemon.
"""

from __future__ import annotations

import atexit as _atexit
import os as _os

from lamina import _lamina
from lamina._lamina import (
    DRIVERS,
    INIT_LAYER_ENTRIES,
    Change,
    Entry,
    Graph,
    Image,
    Layer,
    __version__,
    _close_all,
    apply_layer,
    changes,
    copy_dir,
    export_diff,
    export_upper_diff,
    setup_init_layer,
    upper_changes,
)
from lamina.analysis import Report
from lamina.errors import (
    ArchiveError,
    AuthenticationError,
    CorruptStore,
    DriverError,
    ImageNotFound,
    LaminaError,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LimitExceeded,
    ManifestUnknown,
    NotMounted,
    RegistryError,
    UnsafeArchive,
    UnsupportedManifest,
)

__all__ = [
    "DRIVERS",
    "INIT_LAYER_ENTRIES",
    "ArchiveError",
    "AuthenticationError",
    "Change",
    "CorruptStore",
    "DriverError",
    "Entry",
    "Graph",
    "Image",
    "ImageNotFound",
    "LaminaError",
    "Layer",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "LimitExceeded",
    "ManifestUnknown",
    "NotMounted",
    "RegistryError",
    "Report",
    "UnsafeArchive",
    "UnsupportedManifest",
    "__version__",
    "apply_layer",
    "changes",
    "copy_dir",
    "export_diff",
    "export_upper_diff",
    "setup_init_layer",
    "upper_changes",
]

# Unmount what open graphs mounted, even if they are never collected.
_atexit.register(_close_all)

# Rootless overlay mounts, Layer.run and lamina unshare go through a helper
# interpreter that loads this very extension (lamina._helper).
from lamina import _helper as _helper_command  # noqa: E402

_lamina._set_mount_helper(_helper_command.command(_os.path.abspath(_lamina.__file__)))
