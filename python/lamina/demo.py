"""``lamina demo`` / ``make demo``: the life of an image and a container.

1. three tar layers made from real directories of this machine (with
   ``tarfile``), registered one on the other, each with its diff id, and a
   check that a layer's ``diff()`` gives back the registered bytes exactly;
2. a container layer with its ``-init`` layer (what ``docker create`` does),
   mounted, written to, its ``changes()`` listed;
3. the container committed as a new image layer, its diff exported, and the
   store printed as a tree.

Runs with an overlay driver (``auto``: overlay2) where the kernel lets this
process mount it, else with the vfs driver (plain copies, no mounts).
"""

from __future__ import annotations

import io
import os
import shutil
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import lamina
from lamina.errors import DriverError


def _step(title: str) -> float:
    print(f"\n== {title}")
    return time.perf_counter()


def _tar(entries: list[tuple[Path, str]], whiteouts: tuple[str, ...] = ()) -> bytes:
    """A PAX tar of the trees ``(source, name in the layer)`` plus AUFS
    whiteouts, as ``docker save`` lays a layer out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            # Sockets and devices have no place in a demo image.
            return info if info.isfile() or info.isdir() or info.issym() else None

        for src, name in entries:
            parts = Path(name).parts
            for i in range(1, len(parts)):
                d = tarfile.TarInfo("/".join(parts[:i]))
                d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                tar.addfile(d)
            tar.add(src, arcname=name, filter=keep)
        for w in whiteouts:
            head, _, tail = w.rpartition("/")
            info = tarfile.TarInfo(f"{head}/.wh.{tail}" if head else f".wh.{tail}")
            tar.addfile(info)
    return buf.getvalue()


def _sources() -> tuple[Path, Path, Path]:
    """Three real directories: a config tree, a library, a small package."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    base = Path("/etc") if os.geteuid() == 0 else stdlib / "email"
    return base, stdlib / "json", stdlib / "urllib"


def _show_layer(layer: lamina.Layer, took: float) -> None:
    print(f"   {layer.id[:12]}  {layer.diff_id}  {layer.size / 1e6:.2f} MB  {took:.3f}s")


def _open(root: Path) -> lamina.Graph:
    g = lamina.Graph(root, driver="auto")
    if g.driver == "vfs":
        return g
    # auto picked an overlay driver: prove a mount works here before relying on it.
    probe = g.create()
    try:
        probe.mount()
        probe.unmount()
    except DriverError as e:
        print(f"   overlay cannot mount here ({e}); using vfs")
        g.delete(probe)
        g.close()
        return lamina.Graph(root.with_name("store-vfs"), driver="vfs")
    g.delete(probe)
    return g


def run(source: str | None = None, keep: bool = False) -> int:
    """Run the demo in a fresh temporary store; ``source`` replaces the
    base layer's directory."""
    work = Path(tempfile.mkdtemp(prefix="lamina-demo-"))
    print(f"lamina {lamina.__version__}: image and container demo in {work}")
    base_src, lib_src, app_src = _sources()
    if source:
        base_src = Path(source)
    try:
        with _open(work / "store") as g:
            print(f"   driver: {g.driver}   store: {g.root}")

            t = _step("three layers from real directories, registered on each other")
            tars = [
                _tar([(base_src, base_src.name)]),
                _tar([(lib_src, "usr/lib/python/json")]),
                _tar(
                    [(app_src, "usr/lib/python/urllib")], whiteouts=("usr/lib/python/json/tool.py",)
                ),
            ]
            image: list[lamina.Layer] = []
            for data in tars:
                t = time.perf_counter()
                layer = g.register(data, parent=image[-1] if image else None)
                _show_layer(layer, time.perf_counter() - t)
                image.append(layer)
            top = image[-1]
            assert top.diff() == tars[-1], "diff() must give back the registered bytes"
            print("   top layer's diff() == the registered tar, byte for byte")
            again = g.register(tars[-1], parent=image[-2])
            print(f"   registering it again returns the same layer: {again == top}")

            _step("a container: writable layer on its -init layer (docker create)")
            box = g.create(top, init=True, metadata={"name": "demo"})
            print(f"   {box!r}\n   on {box.parent!r}")
            with box.mounted() as rootfs:
                print(f"   mounted at {rootfs} ({box.mount_count} reference)")
                hello = Path(rootfs, "hello.txt")
                hello.write_text("written in the container\n")
                os.chmod(hello, 0o644)
                shutil.rmtree(Path(rootfs, "usr/lib/python/urllib"))
                Path(rootfs, "usr/lib/python/json/__init__.py").write_text("# patched\n")
            print("   changes():")
            for c in box.changes():
                print(f"     {c.kind} {c.path}")
            print(f"   diff_size(): {box.diff_size()} bytes")

            _step("commit the container (docker commit) and export its diff")
            t = time.perf_counter()
            committed = g.commit(box, metadata={"comment": "demo commit"})
            _show_layer(committed, time.perf_counter() - t)
            out = work / "commit.tar"
            n = committed.diff(out)
            with tarfile.open(out) as tar:
                names = tar.getnames()
            print(f"   {out}: {n} bytes, {len(names)} entries: {', '.join(names[:6])}, ...")

            _step("the store")
            from lamina.cli import _tree

            print(_tree(g))
            g.delete(box)
            print(f"\n   deleted the container (and its -init layer): {len(g)} layers left")
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work)
    return 0
