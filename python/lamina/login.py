"""``lamina login`` / ``logout``: credentials kept where Docker keeps them.

The Docker config file (``$DOCKER_CONFIG/config.json``, else
``~/.docker/config.json``) is what ``pull`` and ``push`` read: a login is
checked against the registry first (``/v2/`` with the credentials, through
its token service where it has one), then stored through the credential
helper the file names for the host (``credHelpers``, else ``credsStore``:
the ``docker-credential-*`` protocol's ``store``), else as ``auths[host].auth``
(base64 of ``user:password``), as ``docker login`` stores them. The file
keeps every other key, is replaced atomically and is readable by its owner
only.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lamina import _lamina


def config_path() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    if d:
        return Path(d) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _write(path: Path, cfg: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _helper(cfg: dict[str, Any], host: str) -> str | None:
    helpers = cfg.get("credHelpers") or {}
    name = helpers.get(host) if isinstance(helpers, dict) else None
    store = cfg.get("credsStore")
    return name or (store if isinstance(store, str) and store else None)


def _run_helper(name: str, verb: str, payload: bytes) -> None:
    prog = f"docker-credential-{name}"
    try:
        r = subprocess.run([prog, verb], input=payload, capture_output=True, check=False)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"credential helper {prog} not found", prog) from None
    if r.returncode != 0:
        msg = (r.stdout or r.stderr).decode(errors="replace").strip()
        raise RuntimeError(f"{prog} {verb} failed: {msg}")


def login(host: str, username: str, password: str, *, insecure: bool = False) -> Path:
    """Check ``username``/``password`` against ``host`` and store them;
    the config file written (or whose helper stored them)."""
    _lamina._check_login(host, username, password, insecure=insecure)
    path = config_path()
    cfg = _read(path)
    helper = _helper(cfg, host)
    if helper:
        payload = {"ServerURL": host, "Username": username, "Secret": password}
        _run_helper(helper, "store", json.dumps(payload).encode())
        return path
    auths = cfg.setdefault("auths", {})
    auths[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write(path, cfg)
    return path


def logout(host: str) -> bool:
    """Forget ``host``'s credentials; whether there were any."""
    path = config_path()
    cfg = _read(path)
    helper = _helper(cfg, host)
    if helper:
        _run_helper(helper, "erase", host.encode())
        return True
    auths = cfg.get("auths") or {}
    found = False
    for key in (host, f"https://{host}", f"http://{host}"):
        if key in auths:
            del auths[key]
            found = True
    if found:
        _write(path, cfg)
    return found
