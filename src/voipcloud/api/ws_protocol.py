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
  client, the path, the query string); the hub reads the credential before it accepts;
- once accepted, the attributes at their at-rest values (`AT_REST`) kept on the class, not in
  each connection's attribute dict;
- `receive` without a coroutine of its own: an open channel's task waits in the inbox's `get`
  directly.

One addition, for the agents' heartbeats (the frame that matters at scale: 5,000 a second at
50,000 agents): the hub registers a callback for the channel (`BEATS_EXTENSION`, an ASGI scope
extension read before the handshake is trimmed), and a text frame that is exactly the beat
message is handed to it from here, in the protocol's own callback, instead of being queued as
an ASGI event for the channel's task: no `websocket.receive` event, no task wake-up, no
pause and resume of reading. websockets' parser has checked the frame as for any other
(masking, reserved bits, UTF-8, size, fragmentation); any other frame, and every frame after
the application closed the connection, takes uvicorn's path unchanged.

Everything else (frames, closing, flow control, errors) is uvicorn's own code.
Measured: docs/benchmarks.md, "Idle upkeep and what a channel costs", "Beats past the
channel's task" and "One frame a channel, and a compact protocol object".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from voipcloud.api.agent_channel import BEAT_TEXT, BEATS_EXTENSION, CHANNEL_PATH

BEAT_FRAME = BEAT_TEXT.encode()  # a beat's whole payload, as the parser hands it over

# what stays of an agent channel's ASGI scope once accepted (uvicorn's log lines read the
# client and path with query string; Starlette's WebSocket reads nothing of it after accept)
KEPT_SCOPE = frozenset({"type", "client", "server", "scheme", "path", "query_string"})


# An accepted agent channel's attributes that hold these values while it is open and idle, as
# uvicorn leaves them: kept once on the class rather than in each connection's attribute dict.
# uvicorn sets 38 attributes on a connection, more than the 30 whose keys instances can share:
# each connection had a whole dict of its own, 1.6 KiB; without these, about 0.6 KiB. An
# attribute set again later (closing, pausing) goes back into the instance; a read finds the
# class's value, which is the value the instance had.
AT_REST: dict[str, Any] = {
    "root_path": "",
    "asgi_version": "3.0",
    "scheme": "ws",
    "handshake_initiated": True,
    "handshake_complete": True,
    "close_sent": False,
    "disconnected": False,
    "close_timer": None,
    "close_timeout": 10.0,
    "initial_response": None,
    "read_paused": False,
    "ping_interval": None,
    "ping_timeout": 20.0,
    "ping_timer": None,
    "pong_timer": None,
    "pending_ping_payload": None,
    "ping_sent_at": 0.0,
    "last_ping_rtt": 0.0,
    "curr_msg_data_type": "text",
    "request": None,
    "response": None,
}

_ABSENT = object()


class _Inbox:
    """What uvicorn uses of `asyncio.Queue`: `put_nowait`, `get`, `empty` (any number of
    waiters, woken in turn; the one uvicorn has is the application's `receive`)."""

    __slots__ = ("_drained", "_items", "_waiters")

    def __init__(self, drained: Callable[[], None]) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None  # exists while someone waits
        self._drained = drained  # called when `get` takes the last item

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
        item = self._items.pop(0)
        if not self._items:
            self._drained()
        return item

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
        self.queue = _Inbox(self._drained)  # type: ignore[assignment]
        self.writable = _Writable()  # type: ignore[assignment]
        self.on_beat: Callable[[], None] | None = None  # set by the hub once the channel is open

    def receive(self) -> Coroutine[Any, Any, Any]:
        """uvicorn's `receive` without a coroutine of its own (an open channel waits in it):
        the inbox resumes reading once drained (`_drained`), as uvicorn's does after a get."""
        return self.queue.get()

    def _drained(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get("path") == CHANNEL_PATH:
            scope["extensions"][BEATS_EXTENSION] = self._take_beats

    def _take_beats(self, callback: Callable[[], None] | None) -> None:
        """The hub's callback for this channel's beats (None: back to uvicorn's path)."""
        self.on_beat = callback

    def handle_text(self, event: Frame) -> None:
        on_beat = self.on_beat
        if on_beat is not None and event.fin and event.data == BEAT_FRAME and not self.close_sent:
            on_beat()
            return
        super().handle_text(event)

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
        kept = {key: value for key, value in scope.items() if key in KEPT_SCOPE}
        scope.clear()  # in place (Starlette's `WebSocket` holds it), and sized for what is kept
        scope.update(kept)
        self._compact()

    def _compact(self) -> None:
        """The attribute dict without the values the class holds (`AT_REST`), in a new dict:
        a dict does not shrink when keys are deleted from it."""
        state = self.__dict__
        for name, value in AT_REST.items():
            held = state.get(name, _ABSENT)
            if type(held) is type(value) and held == value:
                del state[name]
        self.__dict__ = dict(state)


for _name, _value in AT_REST.items():
    setattr(LeanWebSocketProtocol, _name, _value)
del _name, _value
