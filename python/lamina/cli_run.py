"""``lamina run CONTAINER -- CMD...`` and ``lamina unshare [-- CMD...]``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parsers(verbs: Any) -> None:
    v = verbs.add_parser(
        "run",
        help="run a command in a container's tree (new mount, pid, ipc, uts, net namespaces)",
    )
    v.add_argument("id", metavar="CONTAINER", help="layer id or prefix (a writable layer)")
    v.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    v.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("-w", "--workdir", default="/", help="working directory in the container")
    v.add_argument("-u", "--user", default=None, help="user[:group] or uid[:gid]")
    v.add_argument("--network", choices=["none", "host"], default="none")
    v.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]")
    v.add_argument("--hostname", default=None)
    v.add_argument("--timeout", type=float, default=None, help="seconds; then the tree is killed")
    verbs.add_parser(
        "unshare",
        help="run a command (default: $SHELL) in a user + mount namespace of its own, "
        "where lamina mounts at the ordinary paths (as podman unshare)",
    ).add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.command)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    return cmd


def run(g: Any, args: argparse.Namespace) -> int:
    """``lamina run``: the command's exit status is lamina's (128+N for a signal)."""
    import subprocess

    cmd = _command(args)
    if not cmd:
        raise ValueError("run needs a command: lamina run CONTAINER -- CMD...")
    env = {}
    for e in args.env:
        k, sep, val = e.partition("=")
        if not sep:
            # As docker run -e KEY: the variable from this environment.
            if k not in os.environ:
                continue
            val = os.environ[k]
        env[k] = val
    try:
        r = g.get(args.id).run(
            cmd,
            env=env,
            cwd=args.workdir,
            user=args.user,
            network=args.network,
            mounts=args.volume,
            hostname=args.hostname,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"lamina: run: timed out after {args.timeout} s; killed", file=sys.stderr)
        return 124
    code: int = r.returncode
    return code if code >= 0 else 128 - code


def unshare(args: argparse.Namespace) -> int:
    """``lamina unshare``: exec the command in a new user + mount namespace
    (the caller's ids mapped to 0); as root, just exec it."""
    cmd = _command(args) or [os.environ.get("SHELL") or "/bin/sh"]
    if os.geteuid() == 0:
        os.execvp(cmd[0], cmd)
    from lamina import _lamina
    from lamina.cli import default_root

    # Inside, lamina runs as uid 0: its default store must stay this user's.
    os.environ.setdefault("LAMINA_ROOT", default_root())
    helper = _lamina._unshare_command()
    os.execv(helper[0], [*helper, "unshare", *cmd])
    return 127
