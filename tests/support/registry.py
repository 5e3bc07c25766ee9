"""Debian's ``docker-registry`` (Docker Distribution 2.8) on loopback, started
by the tests themselves: a free port, storage in a temporary directory, an
access log whose request lines the tests count, optional htpasswd auth and
TLS with a CA made here. ``stop()`` kills it; nothing outlives the fixture."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    dir: Path
    port: int = field(default_factory=_free_port)
    htpasswd: tuple[str, str] | None = None
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "registry.log"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.dir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.dir / 'server.crt'}"]
            lines += [f"    key: {self.dir / 'server.key'}"]
        if self.htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: lamina-test"]
            lines += [f"    path: {self.dir / 'htpasswd'}"]
        return "\n".join(lines) + "\n"

    def _make_tls(self) -> None:
        d = self.dir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        ca_key, key, csr = str(d / "ca.key"), str(d / "server.key"), str(d / "server.csr")
        days = ["-days", "2"]
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", *days,
                "-subj", "/CN=lamina test CA", "-keyout", ca_key, "-out", str(self.ca))  # fmt: skip
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", key, "-out", csr)  # fmt: skip
        openssl("x509", "-req", "-in", csr, "-CA", str(self.ca), "-CAkey", ca_key,
                "-CAcreateserial", *days, "-extfile", str(d / "san.cnf"),
                "-out", str(d / "server.crt"))  # fmt: skip

    def start(self) -> Registry:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.tls and not self.ca.exists():
            self._make_tls()
        if self.htpasswd:
            user, password = self.htpasswd
            out = subprocess.run(
                ["htpasswd", "-Bbn", user, password], check=True, capture_output=True
            ).stdout
            (self.dir / "htpasswd").write_bytes(out)
        (self.dir / "config.yml").write_text(self._config())
        exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "serve", str(self.dir / "config.yml")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry exited:\n{self.log.read_text()}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not listen:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the registry logged, in order."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return REQUEST.findall(text)

    def blob_gets(self, since: int = 0) -> list[str]:
        return [p for m, p in self.requests()[since:] if m == "GET" and "/blobs/" in p]

    def skopeo_push(self, src: str, repo_tag: str, *extra: str) -> None:
        args = ["skopeo", "copy", "--quiet", *extra]
        if self.tls:
            args += ["--dest-cert-dir", str(self.dir / "skopeo-certs")]
            certs = self.dir / "skopeo-certs"
            certs.mkdir(exist_ok=True)
            shutil.copy(self.ca, certs / "ca.crt")
        else:
            args += ["--dest-tls-verify=false"]
        if self.htpasswd:
            args += ["--dest-creds", ":".join(self.htpasswd)]
        subprocess.run([*args, src, f"docker://{self.host}/{repo_tag}"], check=True)

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}/v2/{path}"

    def put_manifest(self, repo_ref: str, body: bytes, media_type: str) -> None:
        req = urllib.request.Request(
            self.url(repo_ref.replace(":", "/manifests/", 1)),
            data=body,
            method="PUT",
            headers={"Content-Type": media_type},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 201, r.status

    def put_blob(self, repo: str, body: bytes) -> str:
        """Upload ``body`` monolithically (POST, then PUT ?digest=); its digest."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        start = urllib.request.Request(self.url(f"{repo}/blobs/uploads/"), method="POST")
        with urllib.request.urlopen(start, timeout=30) as r:
            assert r.status == 202, r.status
            location = urllib.parse.urljoin(self.url(""), r.headers["Location"])
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(
            f"{location}{sep}digest={digest}",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 201, r.status
        return digest

    def get_manifest(self, repo: str, ref: str, accept: str) -> bytes:
        req = urllib.request.Request(
            self.url(f"{repo}/manifests/{ref}"), headers={"Accept": accept}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()  # type: ignore[no-any-return]
