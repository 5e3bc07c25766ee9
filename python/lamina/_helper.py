"""The command line of lamina's helper interpreter, started by lamina itself
(never by hand), for three jobs that each need a process with one thread:

- the rootless mount helper (``PARENT_PID``): holds a user + mount namespace
  and mounts overlayfs there on request (the Rust module ``driver::userns``);
- the runner of ``Layer.run`` (``run SPEC``): enters the container's
  namespaces and starts its command (the Rust module ``run``);
- ``lamina unshare`` (``unshare CMD...``).

``unshare(CLONE_NEWUSER)`` and ``setns`` into a user namespace are refused to
a process with more than one thread, and forking a multithreaded one is no
place to allocate, so each is a fresh interpreter. It loads the extension
module from its file and nothing else (``-I -S``: no site, no package
``__init__``), which makes its start about 20 ms rather than 30: ``Layer.run``
pays it once per command.
"""

from __future__ import annotations

import sys

# The first line names the helper in `ps` and `pgrep -f lamina._helper`.
BOOT = """# lamina._helper
import sys, importlib.util as u, importlib.machinery as m
p = sys.argv.pop(1)
loader = m.ExtensionFileLoader("lamina._lamina", p)
s = u.spec_from_file_location("lamina._lamina", p, loader=loader)
x = u.module_from_spec(s)
s.loader.exec_module(x)
a = sys.argv[1:]
if a[0] == "run":
    x._run_main(a[1])
elif a[0] == "unshare":
    x._unshare_main(a[1:])
else:
    x._mount_helper_main(int(a[0]))
"""


def command(extension: str) -> list[str]:
    """The helper's argv before its job's arguments."""
    return [sys.executable, "-I", "-S", "-c", BOOT, extension]
