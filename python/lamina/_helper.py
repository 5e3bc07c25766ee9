"""lamina's rootless mount helper, ``python -m lamina._helper PARENT_PID``, and
the runner of ``Layer.run``, ``python -m lamina._helper run SPEC``, and
``lamina unshare``'s, ``python -m lamina._helper unshare CMD...``.

Started by lamina itself (never by hand) when a process without root mounts
an overlay store: it holds a user + mount namespace and mounts overlayfs
there on request (see the Rust module ``driver::userns`` for why it is a
separate, single-threaded interpreter rather than a fork or a thread). The
runner enters a container's namespaces and starts its command (the Rust
module ``run``): it needs one thread for the same reason.
"""

from __future__ import annotations

import sys

from lamina._lamina import _mount_helper_main, _run_main, _unshare_main

if __name__ == "__main__":
    if sys.argv[1] == "run":
        _run_main(sys.argv[2])
    elif sys.argv[1] == "unshare":
        _unshare_main(sys.argv[2:])
    else:
        _mount_helper_main(int(sys.argv[1]))
