"""``Layer.run``: a command with a layer's merged tree as its root, in new
mount, pid, ipc and uts namespaces (and a network namespace holding only
``lo`` unless ``network="host"``), returning what ``subprocess.run`` returns.

The Rust core mounts the layer and writes the per-container files
(``Layer._prepare_run``); the command is started here with
:class:`subprocess.Popen` through lamina's runner (``python -m
lamina._helper run``), so ``stdin``/``stdout``/``stderr``, ``input``,
``capture_output``, ``text`` and ``timeout`` mean exactly what they mean to
``subprocess.run``. A timeout or a Ctrl-C kills the runner, and with it
every process of the container (its pid namespace dies with its pid 1)
before the call returns.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from lamina._lamina import Layer

Mount = Union[str, Sequence[Any]]


def _argv(argv: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(argv, (str, os.PathLike)):
        return [os.fspath(argv)]
    if isinstance(argv, (bytes, bytearray)) or not isinstance(argv, Sequence):
        raise TypeError(f"argv must be a sequence of str, not {type(argv).__name__}")
    out = []
    for a in argv:
        if not isinstance(a, (str, os.PathLike)):
            raise TypeError(f"argv items must be str, not {type(a).__name__}")
        out.append(os.fspath(a))
    if not out:
        raise ValueError("argv is empty")
    return out


def _env(env: Mapping[str, str] | None) -> list[str]:
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, not {type(env).__name__}")
    out = []
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"env keys and values must be str, not {type(k).__name__}: {type(v).__name__}"
            )
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise ValueError(f"bad environment variable name {k!r}")
        out.append(f"{k}={v}")
    return out


def _mounts(mounts: Iterable[Mount]) -> list[tuple[str, str, bool]]:
    """``"SRC:DST[:ro|rw]"`` as ``docker run -v`` reads it, or ``(src, dst)`` /
    ``(src, dst, "ro")`` tuples."""
    out = []
    for m in mounts:
        if isinstance(m, str):
            parts = m.split(":")
            if len(parts) not in (2, 3):
                raise ValueError(f"a mount is SRC:DST[:ro|rw], not {m!r}")
        elif isinstance(m, Sequence) and len(m) in (2, 3):
            parts = [os.fspath(p) for p in m]
        else:
            raise TypeError(f"a mount is 'SRC:DST[:ro]' or a (src, dst[, 'ro']) tuple, not {m!r}")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise ValueError(f"a mount's mode is 'ro' or 'rw', not {mode!r}")
        out.append((os.path.abspath(parts[0]), parts[1], mode == "ro"))
    return out


def _stop(proc: subprocess.Popen[Any]) -> None:
    """End the run: SIGTERM makes the runner kill the container's pid 1 and
    wait until every process of it is gone (see the Rust module ``run``)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(
    layer: Layer,
    argv: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    user: str | int | None = None,
    network: str = "none",
    mounts: Iterable[Mount] = (),
    hostname: str | None = None,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    input: Any = None,
    capture_output: bool = False,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    timeout: float | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` in the layer's merged tree; see the module docs."""
    args = _argv(argv)
    if network not in ("none", "host"):
        raise ValueError(f'network must be "none" or "host", not {network!r}')
    if input is not None and stdin is not None:
        raise ValueError("stdin and input arguments may not both be used.")
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = subprocess.PIPE
    if input is not None:
        stdin = subprocess.PIPE
    prepared = layer._prepare_run(
        args,
        _env(env),
        cwd,
        None if user is None else str(user),
        network,
        _mounts(mounts),
        hostname,
    )
    r, w = os.pipe()
    try:
        runner = prepared.runner_argv(os.getpid(), w)
        with subprocess.Popen(
            runner,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(w,),
            text=text,
            encoding=encoding,
            errors=errors,
        ) as proc:
            os.close(w)
            w = -1
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                _stop(proc)
                exc.stdout, exc.stderr = proc.communicate()
                exc.cmd = args
                raise
            except BaseException:
                _stop(proc)
                raise
            code = proc.poll()
        report = b""
        while chunk := os.read(r, 65536):
            report += chunk
        type(prepared).raise_failure(report)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        prepared.finish()
    assert code is not None
    if check and code:
        raise subprocess.CalledProcessError(code, args, out, err)
    return subprocess.CompletedProcess(args, code, out, err)
