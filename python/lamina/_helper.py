"""lamina's rootless mount helper: ``python -m lamina._helper PARENT_PID``.

Started by lamina itself (never by hand) when a process without root mounts
an overlay store: it holds a user + mount namespace and mounts overlayfs
there on request (see the Rust module ``driver::userns`` for why it is a
separate, single-threaded interpreter rather than a fork or a thread).
"""

from __future__ import annotations

import sys

from lamina._lamina import _mount_helper_main

if __name__ == "__main__":
    _mount_helper_main(int(sys.argv[1]))
