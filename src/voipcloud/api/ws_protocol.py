"""uvicorn's sans-I/O WebSocket protocol, lighter per open connection (the agents' channels).

An open agent channel is idle nearly all the time, and there may be tens of thousands per
process. uvicorn's `websockets-sansio` protocol gives each connection an `asyncio.Queue` (three
deques and an `asyncio.Event`, itself a deque) for the frames it hands to the application, and
an `asyncio.Event` for write flow control: about 3.5 KiB per connection in empty deques (each
one allocates a 64-slot block), though the queue holds one message at most (uvicorn pauses
reading until the application takes it). After the handshake it also keeps the handshake's
response. `LeanWebSocketProtocol` is the same protocol with:

- `_Inbox` instead of the queue: a list, and a future only while the application waits;
- `_Writable` instead of the event: a flag, and a future only while writing is paused;
- the handshake response dropped once the connection is accepted (it is not read again);
- on the agent channel, once accepted, the handshake request's headers emptied (websockets'
  parser keeps the request in its generator frame as long as the connection) and the ASGI
  scope kept only with what uvicorn's log lines and the hub read after the handshake (the
  client, the path, the query string); the hub reads the credential before it accepts.

Nothing else changes: frames, closing, flow control and errors are uvicorn's own code.
Measured: docs/benchmarks.md, "Idle upkeep and what a channel costs".
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from voipcloud.api.agent_channel import CHANNEL_PATH

# what stays of an agent channel's ASGI scope once accepted (uvicorn's log lines read the
# client and path with query string; Starlette's WebSocket reads nothing of it after accept)
KEPT_SCOPE = frozenset({"type", "client", "server", "scheme", "path", "query_string"})


class _Inbox:
    """What uvicorn uses of `asyncio.Queue`: `put_nowait`, `get`, `empty` (any number of
    waiters, woken in turn; the one uvicorn has is the application's `receive`)."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None  # exists while someone waits

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        if not waiters:
            self._waiters = None

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
                    if not self._waiters:
                        self._waiters = None
                elif self._items:  # woken, then cancelled: the item goes to the next waiter
                    self._wake_one()
                raise
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Writable:
    """What uvicorn uses of `asyncio.Event` for write flow control: `set`, `clear`, `wait`."""

    __slots__ = ("_set", "_waiting")

    def __init__(self) -> None:
        self._set = True
        self._waiting: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        while not self._set:
            if self._waiting is None or self._waiting.done():
                self._waiting = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiting)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Writable()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.response = None  # type: ignore[assignment]  # read only to accept
            if self.scope.get("path") == CHANNEL_PATH and not self.close_sent:
                self._trim_handshake()

    def _trim_handshake(self) -> None:
        """What only the handshake read, dropped from an accepted agent channel: about 4 KiB
        of an idle connection's objects (docs/benchmarks.md, "What a channel costs")."""
        request = getattr(self, "request", None)
        if request is not None:
            request.headers.clear()  # the same object stays in websockets' parser frame
            self.request = None  # type: ignore[assignment]
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        headers = scope.get("headers")
        if isinstance(headers, list):
            headers.clear()  # in place: Starlette's `WebSocket.headers` holds this list
        for key in [key for key in scope if key not in KEPT_SCOPE]:
            del scope[key]
