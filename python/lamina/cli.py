"""The ``lamina`` command line: one verb per ``Graph`` call (``lamina
--help`` lists them; the README shows each).

``lamina [--root DIR] [--driver NAME] VERB ...``; the default root is
``$LAMINA_ROOT``, else ``/var/lib/lamina`` for root and
``$XDG_DATA_HOME/lamina`` otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamina.display import human, short, tree_rows
from lamina.errors import LaminaError


def default_root() -> str:
    """``$LAMINA_ROOT``, else ``/var/lib/lamina`` for root, else under XDG."""
    if env := os.environ.get("LAMINA_ROOT"):
        return env
    if os.geteuid() == 0:
        return "/var/lib/lamina"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(data, "lamina")


class _Bar:
    """What a ``progress=`` call reports (bytes, and layers when there are
    several), as a bar on stderr drawn only on a terminal: a callable to
    pass as ``progress``, used in a ``with`` that ends its line."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() and not quiet
        self.drawn = False

    def __call__(self, done: int, total: int, layers: int, total_layers: int) -> None:
        if not self.enabled:
            return
        mb = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f} MB" if total else " MB")
        frac = min(done / total, 1.0) if total else 0.0
        bar = "#" * int(frac * 30)
        pct = f"{frac:>4.0%} " if total else ""
        tail = f"layers {layers}/{total_layers}" if total_layers > 1 else ""
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {pct}{mb} {tail}\033[K")
        sys.stderr.flush()
        self.drawn = True

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.drawn:
            sys.stderr.write("\n")


def _image_row(image: Any) -> list[str]:
    layers = image.layers
    return [
        image.name,
        short(image.layer.id),
        image.digest[7:19],
        str(len(layers)),
        human(sum(lay.size for lay in layers)),
        image.created.strftime("%Y-%m-%d %H:%M:%S"),
    ]


def _rmi(g: Any, name: str, keep_layers: bool) -> None:
    """Untag ``name``; unless ``keep_layers``, delete its layers, top first,
    that no other image and no other layer uses (as ``docker rmi``)."""
    image = g.image(name)
    layers = image.layers
    g.untag(image.name)
    if keep_layers:
        return
    from lamina.errors import LayerInUse

    for layer in reversed(layers):
        try:
            g.delete(layer)
        except LayerInUse:
            break


def _save_format(path: str, given: str | None) -> str:
    if given:
        return given
    return "docker-archive" if path == "-" or path.endswith(".tar") else "oci"


def _layer_row(layer: Any) -> list[str]:
    return [
        short(layer.id),
        short(layer.parent.id) if layer.parent else "-",
        "rw" if layer.writable else "ro",
        human(layer.size),
        layer.created.strftime("%Y-%m-%d %H:%M:%S"),
        (layer.diff_id or "-")[:19],
    ]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _tree(graph: Any) -> str:
    """The layers as a tree (parents before children, any depth)."""
    out = [
        f"{prefix}{short(layer.id)} ({'rw' if layer.writable else 'ro'}, {human(layer.size)})"
        for prefix, layer in tree_rows(graph.layers())
    ]
    return "\n".join(out) if out else "(empty store)"


def _encodes(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def escape_path(path: str, encoding: str = "utf-8") -> str:
    """``path`` safe to print on a terminal, as ``ls -b`` shows names: bytes
    that are not printable text in ``encoding`` (control characters, escape
    sequences, newlines, invalid UTF-8 from a layer) as C escapes, backslash
    doubled."""
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "surrogateescape")
    out: list[str] = []
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\{ord(ch) - 0xDC00:03o}")
        elif ch.isprintable() and _encodes(ch, encoding):
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return "".join(out)


def _inspect(layer: Any) -> dict[str, Any]:
    return {
        "id": layer.id,
        "parent": layer.parent.id if layer.parent else None,
        "chain": [lay.id for lay in layer.chain],
        "writable": layer.writable,
        "created": layer.created.isoformat(),
        "size": layer.size,
        "tar_size": layer.tar_size,
        "diff_id": layer.diff_id,
        "chain_id": layer.chain_id,
        "mount_count": layer.mount_count,
        "metadata": layer.metadata,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina", description="A container image layer store.")
    p.add_argument("--root", default=None, help="store directory ($LAMINA_ROOT, else per user)")
    from lamina._lamina import DRIVERS

    p.add_argument(
        "--driver",
        default="auto",
        choices=[*DRIVERS, "auto"],
        help="storage driver of a new store (default: the store's own, or the host's best)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (they are drawn on a terminal)"
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    v = verbs.add_parser("register", help="apply a tar layer (plain, gzip, zstd) as a layer")
    v.add_argument("tar", help="path of the tar, or - for standard input")
    v.add_argument("--parent", help="parent layer id or prefix")
    v.add_argument("--id", help="layer id (default: its chain id)")
    v = verbs.add_parser("create", help="create a writable layer")
    v.add_argument("parent", nargs="?", help="parent layer id or prefix")
    v.add_argument("--image", help="create it on this image's top layer")
    v.add_argument("--init", action="store_true", help="put an -init layer under it")
    v.add_argument("--id", help="layer id (default: random)")
    v = verbs.add_parser("pull", help="pull an image from a registry")
    v.add_argument("reference", help="[host[:port]/]repo[:tag][@digest]")
    v.add_argument("--platform", help="os/arch[/variant] of an index (default: this machine)")
    v.add_argument("--insecure", action="store_true", help="allow plain HTTP / unverified TLS")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v = verbs.add_parser("push", help="push an image to a registry")
    v.add_argument("name", help="the image")
    v.add_argument("reference", nargs="?", help="where to (default: the image's name)")
    v.add_argument(
        "--compression",
        choices=["gzip", "zstd", "none"],
        default="gzip",
        help="compression of the layers that are uploaded (default: gzip)",
    )
    v.add_argument(
        "--format",
        choices=["oci", "docker"],
        help="manifest format (default: the image's own)",
    )
    v.add_argument("--insecure", action="store_true", help="allow plain HTTP / unverified TLS")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v = verbs.add_parser("login", help="check and store credentials for a registry")
    v.add_argument("host", help="host[:port] of the registry")
    v.add_argument("-u", "--username", help="default: asked on the terminal")
    v.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    v.add_argument("--insecure", action="store_true", help="allow plain HTTP / unverified TLS")
    v = verbs.add_parser("logout", help="forget a registry's credentials")
    v.add_argument("host", help="host[:port] of the registry")
    v = verbs.add_parser(
        "commit",
        help="turn a writable layer's diff into a read-only layer; with NAME, an image "
        "(docker commit)",
    )
    v.add_argument("id")
    v.add_argument("name", nargs="?", help="tag an image NAME with the inherited config")
    v.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="a config change as docker commit reads it (ENV, CMD, ENTRYPOINT, LABEL, "
        "WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL); repeatable",
    )
    v.add_argument("-a", "--author", help="the image's author")
    v.add_argument("-m", "--message", help="the history entry's comment")
    v.add_argument("--created-by", help="the history entry's created_by")
    verbs.add_parser("ls", help="list layers")
    from lamina import cli_explore

    cli_explore.add_tree_args(
        verbs.add_parser("tree", help="the layers as a tree; with REF, a layer's files as a tree")
    )
    cli_explore.add_analyze(verbs)
    for name, helptext in (
        ("inspect", "a layer as JSON"),
        ("mount", "mount a layer, print its path"),
        ("umount", "unmount a layer"),
        ("changes", "list a layer's changes against its parent"),
        ("rm", "delete a layer"),
    ):
        verbs.add_parser(name, help=helptext).add_argument("id")
    v = verbs.add_parser("diff", help="write a layer's tar (to stdout or -o FILE)")
    v.add_argument("id")
    v.add_argument("-o", "--output", help="file to write (default: stdout)")
    v = verbs.add_parser("load", help="load images: an OCI layout (dir or tar) or a docker archive")
    v.add_argument("path", help="layout directory or tar (plain, gzip, zstd), or - for stdin")
    v = verbs.add_parser("save", help="save images as an OCI layout or a docker archive")
    v.add_argument("refs", nargs="+", metavar="REF", help="image names")
    v.add_argument("path", help="layout directory, or tar file (- for stdout)")
    v.add_argument(
        "--format",
        choices=["oci", "docker-archive"],
        help="default: docker-archive for - and *.tar, else oci",
    )
    v.add_argument(
        "--compression",
        choices=["gzip", "zstd", "none"],
        help="layer compression (default: gzip for oci, none for docker-archive)",
    )
    verbs.add_parser("images", help="list images")
    v = verbs.add_parser("tag", help="name an image or a layer (and its ancestors) an image")
    v.add_argument("source", help="image name, or layer id or prefix")
    v.add_argument("name", help="the new name, e.g. app:1")
    v = verbs.add_parser("rmi", help="remove images, and their layers nothing else uses")
    v.add_argument("names", nargs="+", metavar="NAME")
    v.add_argument("--keep-layers", action="store_true", help="only remove the names")
    verbs.add_parser("check", help="check every layer; exit 1 if something is wrong")
    verbs.add_parser("repair", help="remove what cannot be saved, rebuild what can")
    from lamina import cli_run

    cli_run.add_parsers(verbs)
    v = verbs.add_parser("demo", help="build a layered image and show each step")
    v.add_argument("--keep", action="store_true", help="keep the demo's work directory")
    v.add_argument("--source", default=None, help="real directory to copy into the base layer")
    return p


def _login(args: argparse.Namespace) -> int:
    from lamina import login as creds

    if args.verb == "logout":
        if creds.logout(args.host):
            print(f"Removed login credentials for {args.host}")
        else:
            print(f"Not logged in to {args.host}")
        return 0
    user = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass("Password: ")
    path = creds.login(args.host, user, password, insecure=args.insecure)
    print(f"Login Succeeded (credentials for {args.host} in {path})")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.verb == "demo":
        from lamina.demo import run

        return run(source=args.source, keep=args.keep)

    if args.verb in ("login", "logout"):
        return _login(args)
    if args.verb == "unshare":
        from lamina import cli_run

        return cli_run.unshare(args)

    from lamina import Graph  # type: ignore[attr-defined,unused-ignore]

    root = args.root or default_root()
    with Graph(root, driver=args.driver) as g:
        if args.verb == "register":
            src = sys.stdin.buffer if args.tar == "-" else args.tar
            with _Bar(f"register {os.path.basename(args.tar)}", args.quiet) as bar:
                layer = g.register(src, parent=args.parent, id=args.id, progress=bar)
            print(layer.id)
        elif args.verb == "create":
            if args.image and args.parent:
                raise ValueError("create takes a parent layer or --image, not both")
            parent = g.image(args.image) if args.image else args.parent
            print(g.create(parent, id=args.id, init=args.init).id)
        elif args.verb == "load":
            with _Bar("load", args.quiet) as bar:
                src = sys.stdin.buffer if args.path == "-" else args.path
                loaded = g.load(src, progress=bar)
            for image in loaded:
                print(f"Loaded image: {image.name}")
        elif args.verb == "pull":
            with _Bar("pull", args.quiet) as bar:
                pulled = g.pull(
                    args.reference, platform=args.platform, insecure=args.insecure, progress=bar
                )
            print(f"{pulled.name} {pulled.digest}")
        elif args.verb == "push":
            with _Bar("push", args.quiet) as bar:
                digest = g.push(
                    args.name,
                    args.reference,
                    compression=None if args.compression == "none" else args.compression,
                    format=args.format,
                    insecure=args.insecure,
                    progress=bar,
                )
            print(digest)
        elif args.verb == "save":
            fmt: Any = _save_format(args.path, args.format)
            comp: Any = args.compression or ("gzip" if fmt == "oci" else "none")
            with _Bar("save", args.quiet) as bar:
                dst = sys.stdout.buffer if args.path == "-" else args.path
                g.save(
                    args.refs,
                    dst,
                    format=fmt,
                    compression=None if comp == "none" else comp,
                    progress=bar,
                )
        elif args.verb == "images":
            rows = [_image_row(i) for i in g.images()]
            print(table(rows, ["NAME", "LAYER", "DIGEST", "LAYERS", "SIZE", "CREATED"]))
        elif args.verb == "tag":
            try:
                source: Any = g.image(args.source).layer
            except (KeyError, ValueError):
                source = args.source
            print(g.tag(source, args.name).name)
        elif args.verb == "rmi":
            for name in args.names:
                _rmi(g, name, args.keep_layers)
        elif args.verb == "commit" and args.name:
            with _Bar(f"commit {short(args.id)}", args.quiet) as bar:
                img = g.commit_image(
                    g.get(args.id),
                    args.name,
                    changes=args.change,
                    created_by=args.created_by,
                    author=args.author,
                    comment=args.message,
                    progress=bar,
                )
            print(f"{img.name} {img.digest}")
        elif args.verb == "commit":
            if args.change or args.author or args.message or args.created_by:
                raise ValueError("--change, --author, --message, --created-by need an image NAME")
            with _Bar(f"commit {short(args.id)}", args.quiet) as bar:
                committed = g.commit(g.get(args.id), progress=bar)
            print(committed.id)
        elif args.verb == "ls":
            rows = [_layer_row(lay) for lay in g.layers()]
            print(table(rows, ["ID", "PARENT", "MODE", "SIZE", "CREATED", "DIFF ID"]))
        elif args.verb == "tree" and args.ref:
            from lamina.cli_explore import run_file_tree

            return run_file_tree(g, args)
        elif args.verb == "tree":
            print(_tree(g))
        elif args.verb == "analyze":
            from lamina.cli_explore import run_analyze

            return run_analyze(g, args)
        elif args.verb == "inspect":
            print(json.dumps(_inspect(g.get(args.id)), indent=2))
        elif args.verb == "run":
            from lamina import cli_run

            return cli_run.run(g, args)
        elif args.verb == "mount":
            # The mount outlives this process: the store's persisted refcount
            # keeps it until `lamina umount`.
            print(g.get(args.id).mount(persist=True))
        elif args.verb == "umount":
            g.get(args.id).unmount()
        elif args.verb == "changes":
            enc = sys.stdout.encoding or "utf-8"
            for c in g.get(args.id).changes():
                print(f"{c.kind} {escape_path(c.path, enc)}")
        elif args.verb == "diff":
            layer = g.get(args.id)
            with _Bar(f"diff {short(layer.id)}", args.quiet) as bar:
                layer.diff(args.output or sys.stdout.buffer, progress=bar)
        elif args.verb == "rm":
            g.delete(args.id)
        elif args.verb in ("check", "repair"):
            return _check(g, repair=args.verb == "repair", quiet=args.quiet)
    return 0


def _finding(f: dict[str, Any]) -> str:
    where = " ".join(
        p for p in (short(f["layer"]) if f["layer"] else "", escape_path(f["path"] or "")) if p
    )
    return f"{where}: {f['what']}" if where else str(f["what"])


def _check(g: Any, *, repair: bool, quiet: bool) -> int:
    with _Bar("repair" if repair else "check", quiet) as bar:
        report = g.repair(progress=bar) if repair else g.check(progress=bar)
    for a in report.get("actions", []):
        print(f"repaired {_finding(a)}")
    for p in report["problems"]:
        print(f"problem {_finding(p)}")
    n, bad = report["layers"], len(report["problems"])
    print(f"{n} layer(s), {bad} problem(s)" + (" left" if repair else ""), file=sys.stderr)
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamina`` console script and ``python -m lamina``."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (LaminaError, OSError, ValueError) as e:
        print(f"lamina: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
