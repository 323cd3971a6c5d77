"""The HTTP server: uvicorn with its fast parser (httptools), bounded against misbehaving clients.

uvicorn's httptools protocol accepts a request head of any size (it joins a long header value
piece by piece, in quadratic time: one 100 MiB header held the event loop, and so every other
request and agent channel, for about 11 s), any number of headers, and waits for a slow or
idle client forever. `BoundedHttpToolsProtocol` adds, per connection:

- head size: the request line and headers together at most `max_header_bytes`; past it the
  answer is 431 and the connection is closed (the excess is never parsed);
- header count: at most `max_headers` (431), and the request target at most
  `max_request_line` bytes (414);
- head time: a request head must be complete within `header_timeout` seconds of the
  connection opening (or of the previous response): a client sending a byte a second
  (slowloris) gets 408 and is closed; a connection that sends nothing at all is closed after
  `timeout_keep_alive` seconds, like one idle between requests;
- body time: while a request body is arriving, a pause longer than `body_timeout` closes the
  connection (the application sees the client go away).

A WebSocket (the agents' channel) passes these checks once, with its upgrade request; after
that uvicorn's WebSocket protocol owns the connection (`ws_max_size`, pings) and none of the
timers above run. Measured figures and the reasons for httptools over h11: docs/reliability.md.

Transport (`transport()`, docs/security.md "Transport"): HTTPS with a certificate you bring
(`tls_cert`/`tls_key`), or, when listening beyond loopback (or with `tls=on`), with the
controller's own CA (`voipcloud.services.tls`); `tls=off` is plain HTTP. `Server` reloads a
changed certificate into the live `SSLContext` from uvicorn's own loop tick.
"""

from __future__ import annotations

import asyncio
import http
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from voipcloud import protocol
from voipcloud.config import Settings
from voipcloud.services import tls


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_request_line: int = 8 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_request_line=settings.max_request_line,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
        )


class ServerConfig(uvicorn.Config):
    """uvicorn's Config carrying the request limits for `BoundedHttpToolsProtocol`."""

    def __init__(self, app: Any, *, limits: RequestLimits, **kwargs: Any) -> None:
        super().__init__(app, http=BoundedHttpToolsProtocol, **kwargs)
        self.request_limits = limits


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: RequestLimits = getattr(config, "request_limits", None) or RequestLimits()
        self._in_head = True  # waiting for (the rest of) a request head
        self._in_body = False
        self._upgrading = False
        self._body_seen = 0.0
        self._head_bytes = 0
        self._header_count = 0
        self._parsed_head_bytes = 0  # request target and headers parsed so far
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # --- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # nothing sent yet: closed after the keep-alive time, as between two requests
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self.transport.is_closing():
            return  # refused: the rest is not parsed
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_timers()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, self._too_large())
        elif self._in_body:  # a body still arriving: its clock watches for stalls
            self._watch_body()

    def _too_large(self) -> str:
        return f"Request head larger than {self.limits.max_header_bytes} bytes."

    # --- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._parsed_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head_bytes += len(url)
        if len(self.url) > self.limits.max_request_line:
            self._refusal = (
                414,
                f"Request target longer than {self.limits.max_request_line} bytes.",
            )
            raise _Refused()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, f"More than {self.limits.max_headers} request headers.")
            raise _Refused()
        # a whole head may come in one read: its size is checked here too
        self._parsed_head_bytes += len(name) + len(value) + 4
        if self._parsed_head_bytes > self.limits.max_header_bytes:
            self._refusal = (431, self._too_large())
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_clock()
        self._upgrading = self.parser.should_upgrade() and self._should_upgrade()
        self._in_body = not self._upgrading
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._upgrading:
            return
        self._in_body = False
        self._in_head = True  # what follows is the next request's head
        if self.cycle is not None and self.cycle.response_complete:  # answered early
            self._start_head_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # no pipelined request left
        if idle and self._in_head and not self.transport.is_closing():
            self._start_head_clock()  # the next request's head: counted from now

    # --- refusals and timers -----------------------------------------------------------------
    # One timer per request at most: a body's clock is armed once and re-armed when it fires
    # if data came meanwhile (`_body_seen`), instead of a new timer for every read.

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self._stop_timers()
        if self.transport.is_closing():
            return
        body = message.encode("ascii")
        phrase = http.HTTPStatus(status).phrase
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("ascii")
            + body
        )
        self.transport.close()

    def _start_head_clock(self) -> None:
        self._cancel_head_clock()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _cancel_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                return  # still answering a request: its response restarts the clock
            if self._head_bytes == 0:  # idle, nothing of a request yet: close quietly
                self._stop_timers()
                self.transport.close()
                return
            timeout = self.limits.header_timeout
            self._refuse(408, f"Request head not received within {timeout:g} s.")

    def _watch_body(self) -> None:
        self._body_seen = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application is behind, not the client
            self._body_seen = self.loop.time()
        quiet = self.loop.time() - self._body_seen
        if quiet < self.limits.body_timeout:
            remaining = self.limits.body_timeout - quiet
            self._body_timer = self.loop.call_later(remaining, self._body_check)
            return
        self.logger.warning("Request body stalled for %g s: closing.", self.limits.body_timeout)
        self.transport.close()

    def _cancel_body_clock(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _stop_timers(self) -> None:
        self._cancel_head_clock()
        self._cancel_body_clock()


@dataclass
class Transport:
    """How the controller serves: plain HTTP, or HTTPS with a (reloadable) SSLContext."""

    context: ssl.SSLContext | None = None
    watcher: tls.CertificateWatcher | None = None
    ca_fingerprint: str | None = None  # what agents pin (the top of the presented chain)
    ca_file: Path | None = None  # our own CA's certificate (the IC node's agent trusts it)
    reason: str = "loopback"

    @property
    def scheme(self) -> str:
        return "https" if self.context is not None else "http"


class TransportRefused(Exception):
    """Settings that cannot be served (e.g. a certificate without its key)."""


def transport(settings: Settings) -> Transport:
    """HTTP or HTTPS, as the settings and the listen address decide (docs/security.md)."""
    brought = settings.tls_cert is not None or settings.tls_key is not None
    if settings.tls == "off":
        if brought:
            raise TransportRefused("--tls off contradicts --tls-cert/--tls-key: choose one")
        return Transport(reason="off")
    if brought:
        if settings.tls_cert is None or settings.tls_key is None:
            raise TransportRefused("--tls-cert and --tls-key go together: give both files")
        files = tls.ServerFiles(settings.tls_cert, settings.tls_key)
        try:
            context = tls.server_context(files)
            pinned = tls.chain_fingerprint(files.cert_file)
        except tls.TlsError as exc:
            raise TransportRefused(str(exc)) from None
        watcher = tls.CertificateWatcher(context, files)
        return Transport(context, watcher, pinned, None, reason="certificate given")
    if settings.tls == "auto" and tls.is_loopback(settings.host):
        return Transport(reason="loopback")
    names = tls.default_names(settings.host, settings.tls_names.split(","))
    try:
        files = tls.ensure_own(settings.data_dir, names)
        context = tls.server_context(files)
    except tls.TlsError as exc:
        raise TransportRefused(str(exc)) from None
    watcher = tls.CertificateWatcher(
        context,
        files,
        data_dir=settings.data_dir,
        names=names,
        renew_every=settings.tls_renew_check,
    )
    assert files.ca_file is not None
    fingerprint = tls.cert_fingerprint(tls.load_pem_certs(files.ca_file.read_bytes())[0])
    reason = "own CA" if settings.tls == "on" else "own CA (listening beyond loopback)"
    return Transport(context, watcher, fingerprint, files.ca_file, reason=reason)


class Server(uvicorn.Server):
    """uvicorn's server, checking the certificate files every `reload_interval` seconds."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        watcher: tls.CertificateWatcher | None = None,
        reload_interval: float = 5.0,
    ) -> None:
        super().__init__(config)
        self.watcher = watcher
        self.reload_ticks = max(1, round(reload_interval * 10))  # uvicorn ticks every 0.1 s

    async def on_tick(self, counter: int) -> bool:
        if self.watcher is not None and counter % self.reload_ticks == 0 and counter:
            try:
                self.watcher.check(self.reload_ticks / 10)
            except Exception:  # never stop serving over a certificate file
                tls.log.exception("certificate reload failed")
        return await super().on_tick(counter)


def config(
    app: Any, settings: Settings, *, secure: Transport | None = None, **overrides: Any
) -> ServerConfig:
    """The server configuration `voipcloud serve` runs with (tests start the same one)."""
    from voipcloud.api.ws_protocol import LeanWebSocketProtocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "proxy_headers": False,
        "ws_max_size": protocol.MAX_MESSAGE_BYTES,
        # no WebSocket pings: the agents' beats are the one liveness mechanism (a channel
        # silent for twice the missed-beats window is closed: api/agent_channel.py)
        "ws_ping_interval": None,
        "ws_per_message_deflate": False,
        # the sans-I/O WebSocket protocol: no tasks of its own per connection, one message
        # read ahead at most; against uvicorn's default (`websockets`) at 8,000 open agent
        # channels: 25-27 KiB each instead of 44 KiB; at 3,000, opened 265/s instead of 190/s
        # (docs/benchmarks.md, "What a channel costs")
        # ... with its queue and flow-control event made lighter (api/ws_protocol.py)
        "ws": LeanWebSocketProtocol,
        # said, not guessed: `ChannelDispatch` is ASGI 3 with a plain `__call__` (uvicorn's
        # guess would take it for ASGI 2)
        "interface": "asgi3",
        "timeout_keep_alive": settings.keep_alive_timeout,
        **overrides,
    }
    if secure is not None and secure.context is not None:
        context = secure.context
        options["ssl_context_factory"] = lambda _config, _default: context
    hub = getattr(getattr(app, "state", None), "hub", None)
    if hub is not None:  # the agents' channels reach the hub before FastAPI and its middleware
        from voipcloud.api.agent_channel import ChannelDispatch

        app = ChannelDispatch(app, hub)
    return ServerConfig(app, limits=RequestLimits.from_settings(settings), **options)
