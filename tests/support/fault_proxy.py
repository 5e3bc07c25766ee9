"""A TCP proxy in front of a test registry that misbehaves on purpose: it
cuts a blob's answer after some bytes, answers 429, or drops the client's
``Range`` header (a registry that ignores ranges). One request per client
connection (the upstream is asked ``Connection: close`` and says so to the
client), so each request is seen whole and faults hit exactly the requests
asked for. Every request is logged with its fate for the tests to count."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    fault: str = ""


@dataclass
class FaultProxy:
    upstream_port: int
    # Blob GETs (not ranged) to cut, in order, and after how many body bytes.
    cut_blobs: int = 0
    cut_after: int = 64 << 10
    # Blob GETs to answer 429 first.
    throttle_blobs: int = 0
    strip_range: bool = False
    # Called (once) when the first cut happens, before the sockets close.
    on_cut: Callable[[], None] | None = None
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sock: socket.socket | None = None

    @property
    def host(self) -> str:
        assert self._sock is not None
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> FaultProxy:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        self._sock = s
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _decide(self, req: Seen) -> str:
        blob_get = req.method == "GET" and "/blobs/sha256:" in req.path
        with self._lock:
            if blob_get and self.throttle_blobs > 0:
                self.throttle_blobs -= 1
                return "429"
            if blob_get and "range" not in req.headers and self.cut_blobs > 0:
                self.cut_blobs -= 1
                return "may-cut"
        return ""

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            raw, _, body = head.partition(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            req = Seen(method, path, headers)
            with self._lock:
                self.seen.append(req)
            req.fault = self._decide(req)
            if req.fault == "429":
                req.status = 429
                conn.sendall(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            want = int(headers.get("content-length", "0"))
            while len(body) < want:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            out = [lines[0]]
            for line in lines[1:]:
                k = line.partition(":")[0].strip().lower()
                if k == "connection" or (k == "range" and self.strip_range):
                    continue
                out.append(line)
            out.append("Connection: close")
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port))
            except ConnectionRefusedError:
                req.fault = "refused"  # the registry is down: the client sees a cut
                return
            with up:
                try:
                    up.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
                    self._pump(up, conn, req)
                except (ConnectionResetError, BrokenPipeError):
                    # The registry was killed mid-answer (a test does it):
                    # the client sees the cut, as it would from the registry.
                    req.fault = "reset"

    def _pump(self, up: socket.socket, conn: socket.socket, req: Seen) -> None:
        sent_body = 0
        header_done = False
        buf = b""
        while True:
            chunk = up.recv(65536)
            if not chunk:
                if req.fault == "may-cut":
                    # Shorter than the cut point: the budget goes to the next.
                    req.fault = ""
                    with self._lock:
                        self.cut_blobs += 1
                return
            if not header_done:
                buf += chunk
                if b"\r\n\r\n" not in buf:
                    continue
                header_done = True
                status_line = buf.split(b"\r\n", 1)[0].decode("latin-1")
                req.status = int(status_line.split()[1])
                head, _, rest = buf.partition(b"\r\n\r\n")
                conn.sendall(head + b"\r\n\r\n")
                chunk = rest
            if req.fault == "may-cut" and sent_body + len(chunk) > self.cut_after:
                req.fault = "cut"
                conn.sendall(chunk[: self.cut_after - sent_body])
                if self.on_cut is not None:
                    cb, self.on_cut = self.on_cut, None
                    cb()
                conn.shutdown(socket.SHUT_RDWR)
                return
            conn.sendall(chunk)
            sent_body += len(chunk)
