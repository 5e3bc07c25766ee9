"""Rootless overlay2 (issue 17): ``nobody`` mounts the kernel's overlayfs in
lamina's own user namespace, and the container it writes through the mount
diffs byte for byte as the same steps done as root; no mount and no helper
outlive close(), a killed helper is reported once and replaced."""

from __future__ import annotations

import io
import os
import signal
import tarfile
from pathlib import Path

import lamina
from support.unprivileged import run_as_nobody, staging_dir


def _base() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [("etc/motd", b"hello\n"), ("etc/keep", b"keep\n"), ("bin/sh", b"#!\n")]:
            for d in (name.split("/")[0],):
                if d not in t.getnames():
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    t.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(tar: Path) -> list[tuple[object, ...]]:
    with tarfile.open(tar) as t:
        return [
            (
                m.name,
                m.type,
                m.mode,
                m.uid,
                m.gid,
                m.uname,
                m.gname,
                m.size,
                m.linkname,
                (m.devmajor, m.devminor),
                t.extractfile(m).read() if m.isfile() else None,
            )  # type: ignore[union-attr]
            for m in t.getmembers()
        ]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _helpers() -> list[int]:
    """Live rootless mount helpers of this test run's processes."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"lamina._helper" in cmd:
                out.append(int(p.name))
    return out


def steps(root: str, out: str) -> None:
    """Mount, read, write, delete a lower file, mount again, unmount,
    changes, commit; the diff and the change list go to ``out``."""
    with lamina.Graph(root, driver="overlay2") as g:
        if os.geteuid() != 0:
            assert "user namespace" in g.status()["mount"], g.status()["mount"]
        base = g.register(_base())
        c = g.create(parent=base)
        m = Path(c.mount())
        assert (m / "etc/motd").read_bytes() == b"hello\n"
        (m / "etc/y").write_text("x\n")
        (m / "etc/motd").unlink()
        (m / "newdir").mkdir()
        assert Path(c.mount()) == m
        assert c.mount_count == 2
        c.unmount()
        c.unmount()
        assert c.mount_count == 0
        changes = sorted((ch.path, str(ch.kind)) for ch in c.changes())
        c.mount()
        diff = c.diff()
        c.unmount()
        top = g.commit(c)
        Path(out).write_text(repr(changes))
        Path(out + ".tar").write_bytes(diff)
        assert top.diff() == diff
    if os.geteuid() != 0:
        assert _helpers() == [] or all(p == os.getpid() for p in _helpers())


def helper_killed(root: str) -> None:
    """SIGKILL the helper: the next call reports it, the one after works."""
    with lamina.Graph(root, driver="overlay2") as g:
        base = g.register(_base())
        c = g.create(parent=base)
        c.mount()
        pids = _helpers()
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        while _state(pids[0]) != "Z":  # dead: its namespace went first
            pass
        try:
            c.mount()
        except lamina.LaminaError as e:
            assert "died" in str(e), e
        else:
            raise AssertionError("a dead helper went unreported")
        m = Path(c.mount())
        assert (m / "etc/keep").read_bytes() == b"keep\n"
        assert c.mount_count == 1
        assert len(_helpers()) == 1
    assert _helpers() == []


def test_rootless_steps_diff_as_root() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "steps", str(base / "nobody"), str(base / "nobody.out"))
        steps(str(base / "root"), str(base / "root.out"))
        assert (base / "nobody.out").read_text() == (base / "root.out").read_text()
        # Byte-exact but for the times of the writes (two runs, two clocks).
        assert _members(base / "nobody.out.tar") == _members(base / "root.out.tar")
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_rootless_helper_killed_recovers() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "helper_killed", str(base / "nobody"))
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def parent_killed(root: str) -> None:
    """A child Python mounts and is SIGKILLed: its helper dies with it, the
    mount with the helper's namespace, and the next open clears the record."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, lamina, nobody_case as t\n"
        "g = lamina.Graph(sys.argv[1], driver='overlay2')\n"
        "c = g.create(parent=g.register(t._base()), id='c' * 64)\n"
        "c.mount()\n"
        "print('mounted', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "mounted\n"
    assert len(_helpers()) == 1
    child.kill()
    child.wait()
    deadline = time.monotonic() + 30
    while _helpers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _helpers() == []
    with lamina.Graph(root, driver="overlay2") as g:
        c = g.get("c" * 64)
        assert c.mount_count == 0
        m = Path(c.mount())
        assert (m / "etc/keep").read_bytes() == b"keep\n"
        c.unmount()
    assert _helpers() == []


def test_rootless_parent_killed_leaves_nothing() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "parent_killed", str(base / "nobody"))
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def two_processes(root: str) -> None:
    """Each process has its own namespace: a layer another live process
    has mounted is refused, never mounted twice on one upper."""
    import subprocess
    import sys

    code = (
        "import sys, lamina, nobody_case as t\n"
        "g = lamina.Graph(sys.argv[1], driver='overlay2')\n"
        "c = g.create(parent=g.register(t._base()), id='d' * 64)\n"
        "c.mount()\n"
        "print('mounted', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == "mounted\n"
    with lamina.Graph(root, driver="overlay2") as g:
        c = g.get("d" * 64)
        try:
            c.mount()
        except lamina.LayerInUse as e:
            assert f"pid {child.pid}" in str(e), e
        else:
            raise AssertionError("mounted a second time in another namespace")
        child.stdin.close()
        assert child.wait() == 0
        Path(c.mount())  # its owner gone, the layer is free
        c.unmount()
    assert _helpers() == []


def test_rootless_two_processes_never_share_an_upper() -> None:
    base = staging_dir()
    try:
        run_as_nobody(base, __file__, "two_processes", str(base / "nobody"))
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
