"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that checks each delivery's
signature the way docs/operations.md tells receivers to, and keeps what it got."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered
    signature_ok: bool

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300) -> bool:
    """The receiver's check: t and v1 from the header, HMAC-SHA256 of "<t>.<body>"."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    if abs(time.time() - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


@dataclass
class Receiver:
    secret: str
    # (number of the request, its parsed body) -> status to answer; default 200
    answer: Callable[[int, dict[str, Any]], int] = lambda _n, _body: 200
    delay: float = 0.0  # seconds to wait before answering
    hold: float = 0.0  # seconds between recording a request in `got` and answering it
    got: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests that came in (counted before the delay)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.arrived += 1
                ok = verify(receiver.secret, self.headers.get("X-Voipcloud-Signature", ""), body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    number = len(receiver.got)
                    status = receiver.answer(number, json.loads(body)) if ok else 401
                    receiver.got.append(Received(dict(self.headers), body, status, ok))
                if receiver.hold:
                    time.sleep(receiver.hold)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"accepted" if status < 300 else b"try again later")

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def accepted(self) -> list[dict[str, Any]]:
        """The bodies we answered 2xx, in the order they came."""
        with self._lock:
            return [r.json for r in self.got if 200 <= r.status < 300]
