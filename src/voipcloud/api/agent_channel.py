"""One WebSocket per node agent: beats and reports come up, desired state goes down.

Why a persistent channel (docs/architecture.md has the figures): a heartbeat is one small
frame on an open connection, handled in the event loop with a dict write (no request
parsing, no database write, no thread hop), and an administrator's Activate reaches the
agent as soon as its transaction commits, because the commit wakes the node's channel.

Lean by design (docs/benchmarks.md, "Agent channel: heartbeats at scale"): an open channel
does no periodic work of its own. It is one object and the connection's own task reading
frames; the desired state is computed only when something wakes the channel, in a short task
started for it. The periodic work is one sweep for all channels (`AgentHub._sweep`):

- every missed-beats window (30 s by default), one narrow query for every node's stamp (row
  version, credential digest); only the channels whose node's stamp differs from the one
  their last desired state was read with are woken (a change missed by the commit wake-up, a
  credential revoked or replaced, a node deleted);
- every heartbeat interval, a look at when each channel was last heard from: a channel silent
  for twice the missed-beats window is closed (4408). The agent's beats are the one liveness
  mechanism: the server sends no WebSocket pings (`api/server.py`), the agent none either
  (it detects a dead controller by TCP: its beats go unacknowledged, see agent/runner.py).

Opening many channels at once (a controller restart: docs/reliability.md, "Mass reconnect"):
the credential checks of every channel waiting, and then their first desired states, are read
in batches, one transaction and one thread hop per batch (`_Batcher`,
services/channel_reads.py), and the desired states come from a cache keyed by what they were
built from. At most `max_handshakes` handshakes are in progress (upgrade to first desired
state sent); beyond that the upgrade is answered `503` with `Retry-After`, before any
database work (services/admission.py chooses the seconds).

Database work runs in two thread limiters of its own, so neither queues behind the other nor
an administrator's request behind them: `urgent` for what an administrator waits for (the
desired state after a commit, an operation's outcome and its ack), `chores` for everything
else the agents cause (credential check at connect, hello, inventory, the first desired state,
the sweep, problems, health).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Generic, TypeVar

import anyio
from fastapi import WebSocket
from pydantic import TypeAdapter, ValidationError
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from voipcloud import protocol
from voipcloud.domain.errors import DatabaseUnavailable, NodeGone, NotAuthenticated, NotFound
from voipcloud.services.admission import Admission
from voipcloud.services.channel_reads import ChannelReads, DesiredAnswer, DesiredRequest
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import token_digest
from voipcloud.store.channels import Stamp

log = logging.getLogger("voipcloud.agents")
SILENT_WINDOWS = 2  # a channel silent for this many missed-beats windows is closed
URGENT_THREADS = 8  # what an administrator waits for
CHORE_THREADS = 4  # everything else the agents cause
FIRST_PUSH_WAIT = 0.5  # seconds the first desired state waits for the hello
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the database is unavailable
BEAT_TEXT = protocol.Beat().model_dump_json()  # '{"type":"beat"}': no validation needed
INVENTORY_REQUEST = protocol.InventoryRequest().model_dump_json()
MAX_HANDSHAKES = 256  # channel handshakes in progress at once (setting max_channel_handshakes)
OPEN_RATE = 400.0  # channels/s assumed before one is measured (setting channel_open_rate)
MAX_FEATURE_SETS = 64  # distinct feature sets shared between channels (more: not shared)
BATCH = 64  # channels per batched read (smaller: completions flow instead of coming in lumps)
# While channels keep opening (a batch ended less than BUSY_SECONDS ago), a batch smaller than
# BATCH waits GATHER_SECONDS for more before it is read: a transaction costs about the same for
# one channel as for dozens (docs/benchmarks.md, "Batches that gather"). An open after a quiet
# moment is read at once.
GATHER_SECONDS = 0.02
BUSY_SECONDS = 1.0
_messages: TypeAdapter[protocol.AgentMessage] = TypeAdapter(protocol.AgentMessage)
T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


class _Batcher(Generic[K, R]):
    """Requests from the event loop, answered by one thread call for a whole batch: while a
    batch is read, the requests arriving meanwhile gather into the next one; while requests
    keep coming (a batch ended within `busy` seconds), a batch not yet full waits `gather`
    seconds for more first."""

    def __init__(
        self,
        run: Callable[[list[K]], list[R | Exception]],
        thread: Callable[[Callable[[list[K]], list[R | Exception]], list[K]], Any],
        size: int = BATCH,
        *,
        gather: float = GATHER_SECONDS,
        busy: float = BUSY_SECONDS,
    ) -> None:
        self._run = run
        self._thread = thread
        self._size = size
        self._gather = gather
        self._busy = busy
        self._ended = -math.inf  # loop time the last batch was answered
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            if len(self._waiting) < self._size and loop.time() - self._ended < self._busy:
                await asyncio.sleep(self._gather)
            batch, self._waiting = self._waiting[: self._size], self._waiting[self._size :]
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                answers = await self._thread(self._run, [item for item, _ in batch])
            except Exception as exc:  # e.g. DatabaseUnavailable: every one of them gets it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._ended = loop.time()
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


CHANNEL_PATH = "/api/v1/agent/channel"
# ASGI scope extension of `voipcloud serve`'s WebSocket protocol (api/ws_protocol.py): a
# function taking the callback that handles this channel's beats without waking its task
BEATS_EXTENSION = "voipcloud.beats"


class _Closed(Exception):
    pass


class _DenialIsComplete(logging.Filter):
    """uvicorn (0.54) logs "ASGI callable returned without completing handshake." at ERROR
    after an upgrade answered with a denial response (our 503), although the response was
    sent whole: at tens of thousands of refusals a minute that line is noise and costs the
    event loop. One such line is dropped per refusal the hub answered (`pending`: uvicorn
    logs it right after the hub returns, in the same event loop); any other is kept."""

    MESSAGE = "ASGI callable returned without completing handshake."
    pending = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if _DenialIsComplete.pending and record.getMessage() == self.MESSAGE:
            _DenialIsComplete.pending -= 1
            return False
        return True


logging.getLogger("uvicorn.error").addFilter(_DenialIsComplete())


class ChannelDispatch:
    """The ASGI application uvicorn is given (`api/server.py`, `config`): the agent channel's
    upgrade goes to the hub, everything else (lifespan included) to the FastAPI application.

    `ChannelRoute` sits inside FastAPI: an open channel's coroutine then kept Starlette's and
    every middleware's frame alive as long as the connection (ServerErrorMiddleware, the
    HTTPS headers, the request timer, the body limit: none of them does anything for a
    WebSocket). What matters for the channel is in the hub: the shedding 503 before any
    database work (`AgentHub.handle`), its metric (`on_refused`) and its log filter. TLS is
    the server's (uvicorn's SSL context): the same for both paths."""

    __slots__ = ("app", "hub")

    def __init__(self, app: ASGIApp, hub: AgentHub) -> None:
        self.app = app
        self.hub = hub

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # not a coroutine of its own: an open channel waits in the hub's frame alone
        # (`AgentHub.handle`); `api/server.py` tells uvicorn this is ASGI 3
        if scope["type"] == "websocket" and scope["path"] == CHANNEL_PATH:
            return self.hub.handle(WebSocket(scope, receive, send), receive)
        return self.app(scope, receive, send)


class ChannelRoute(ChannelDispatch):
    """ASGI middleware: the agent channel's upgrade goes straight to the hub, not through the
    router (which matched every upgrade against each route of the API and the web interface
    first: about a third of the event loop's time per channel opened). A served controller
    reaches the hub earlier still, through `ChannelDispatch` (given to uvicorn by
    `api/server.py`); this one serves the channel when the FastAPI application is run on its
    own (in-process test clients). routes/agent.py documents the channel."""

    __slots__ = ()


class _Channel:
    """One open agent channel. Small on purpose: there may be tens of thousands."""

    __slots__ = (
        "admitted",
        "closing",
        "digest",
        "features",
        "first",
        "heard",
        "node_id",
        "pushing",
        "send_lock",
        "senders",
        "sent",
        "stamp",
        "urgent",
        "wanted",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, node_id: int, digest: str, now: float) -> None:
        self.websocket = websocket
        self.node_id = node_id
        self.digest = digest  # of the agent's credential (the credential itself is not kept)
        self.features: frozenset[str] = frozenset()  # what the agent announced in its hello
        self.heard = now  # loop time of the last frame from the agent
        self.stamp: Stamp | None = None  # of the row the last desired state was read from
        self.sent = 0  # hash of the last desired state sent
        # sends go one at a time; the lock exists only while a send is under way (`sending`)
        self.send_lock: asyncio.Lock | None = None
        self.senders = 0
        self.pushing = False  # a push task runs
        self.wanted = False  # another push is wanted after the running one
        self.urgent = False  # an administrator is waiting for it
        self.closing = False
        self.first: asyncio.TimerHandle | None = None  # the first push, if no hello comes
        self.admitted = True  # holds a handshake slot until its first desired state is sent

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """One send at a time on this channel (desired state, ack, close)."""
        self.senders += 1
        lock = self.send_lock
        if lock is None:
            lock = self.send_lock = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            self.senders -= 1
            if not self.senders:
                self.send_lock = None


class AgentHub:
    def __init__(
        self,
        controller: Controller,
        *,
        max_handshakes: int = MAX_HANDSHAKES,
        open_rate: float = OPEN_RATE,
    ) -> None:
        self._controller = controller
        self.reads = ChannelReads(controller, open_rate=open_rate)
        self._open = 0  # channels registered (an int: read from the reads' threads)
        self.reads.connected = lambda: self._open
        self.admission = Admission(max_handshakes, open_rate=open_rate)
        self.on_refused: Callable[[], None] | None = None  # the metrics count 503 answers
        self._told_until = 0.0  # monotonic time by which every agent told to retry is due
        self._authenticate: _Batcher[str, int] = _Batcher(
            self.reads.authenticate_many, functools.partial(self._thread, False)
        )
        self._first: _Batcher[DesiredRequest, DesiredAnswer] = _Batcher(
            self.reads.desired_many, functools.partial(self._thread, False)
        )
        self._inventory_known: _Batcher[tuple[int, str], bool] = _Batcher(
            self.reads.inventory_known_many, functools.partial(self._thread, False)
        )
        # a node's open channels (one, nearly always: a list of one is 64 bytes, a set 216)
        self._channels: dict[int, list[_Channel]] = {}
        self._feature_sets: dict[frozenset[str], frozenset[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiters: tuple[anyio.CapacityLimiter, anyio.CapacityLimiter] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # pushes and closes (kept referenced)
        self._sweeper: asyncio.Task[None] | None = None
        self.sweeps = 0  # version sweeps done (tests and benchmarks read it)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # threads
    def _limiter(self, urgent: bool) -> anyio.CapacityLimiter:
        if self._limiters is None:  # created in the event loop, on first use
            self._limiters = (
                anyio.CapacityLimiter(URGENT_THREADS),
                anyio.CapacityLimiter(CHORE_THREADS),
            )
        return self._limiters[0 if urgent else 1]

    async def _thread(self, urgent: bool, call: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(call, *args, limiter=self._limiter(urgent))

    # wake-ups
    def notify_threadsafe(self, node_ids: set[int]) -> None:
        """Called after a commit (from any thread): wake the channels of these nodes."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake_nodes, set(node_ids))

    def _wake_nodes(self, node_ids: set[int]) -> None:
        for node_id in node_ids:
            for channel in self._channels.get(node_id, ()):
                self._push(channel, urgent=True)

    def connected_count(self) -> int:
        return sum(len(v) for v in self._channels.values())

    def _push(self, channel: _Channel, *, urgent: bool) -> None:
        """Send the channel its desired state (if it changed), in a task of its own."""
        channel.urgent = channel.urgent or urgent
        if channel.closing:
            return
        if channel.pushing:
            channel.wanted = True
            return
        channel.pushing = True
        task = asyncio.get_running_loop().create_task(self._pushes(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pushes(self, channel: _Channel) -> None:
        try:
            while not channel.closing:
                channel.wanted = False
                urgent, channel.urgent = channel.urgent, False
                await self._send_desired(channel, urgent)
                if not channel.wanted:
                    return
        except NotAuthenticated:
            await self._close(channel, protocol.CLOSE_UNAUTHORIZED, "credential revoked")
        except (NodeGone, NotFound):
            await self._close(channel, protocol.CLOSE_DELETED, "node deleted")
        except DatabaseUnavailable:  # the agent reconnects with backoff
            await self._close(channel, CLOSE_TRY_AGAIN, "database unavailable; try again later")
        except (RuntimeError, OSError):  # the connection went away meanwhile
            pass
        except Exception:  # never lose the channel's wake-ups silently
            log.exception("pushing the desired state to node %s failed", channel.node_id)
            await self._close(channel, 1011, "internal error")
        finally:
            channel.pushing = False

    async def _send_desired(self, channel: _Channel, urgent: bool) -> None:
        request = DesiredRequest(channel.node_id, channel.digest, channel.features)
        if urgent:  # an administrator waits: alone, in the urgent limiter, never batched
            answer = (await self._thread(True, self.reads.desired_many, [request]))[0]
            if isinstance(answer, Exception):
                raise answer
        else:
            answer = await self._first(request)
        if channel.closing:
            return
        sent = hash(answer.payload)  # a hash, not the text: there may be tens of thousands
        if sent != channel.sent:
            async with channel.sending():
                if not channel.closing:
                    await channel.websocket.send_text(answer.payload)
            channel.sent = sent
        channel.stamp = answer.stamp
        self._admitted(channel, opened=True)

    def _admitted(self, channel: _Channel, *, opened: bool) -> None:
        """The channel's handshake is over (first desired state sent, or it failed)."""
        if channel.admitted:
            channel.admitted = False
            self.admission.leave(asyncio.get_running_loop().time(), opened=opened)

    async def _close(self, channel: _Channel, code: int, reason: str) -> None:
        if channel.closing:
            return
        channel.closing = True
        with suppress(RuntimeError, OSError):
            async with channel.sending():
                await channel.websocket.close(code, reason)

    # the sweep: the only periodic work, one for all channels
    def _start_sweep(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close silent channels every heartbeat interval; every missed-beats window wake the
        channels whose node's stamp changed (a safety net: commits wake channels at once).
        Started by the first channel; ends when there are none left (the next starts it)."""
        presence = self._controller.agents.presence
        interval = presence.heartbeat_interval
        window = interval * presence.missed_beats
        loop = asyncio.get_running_loop()
        next_recheck = loop.time() + window
        while self._channels:
            await asyncio.sleep(interval)
            try:
                await self.close_silent()
                if loop.time() >= next_recheck:
                    next_recheck = loop.time() + window
                    await self.recheck()
            except DatabaseUnavailable as exc:
                log.warning("agent channel sweep skipped: database unavailable (%s)", exc.reason)
            except Exception:
                log.exception("agent channel sweep failed")

    async def close_silent(self) -> int:
        presence = self._controller.agents.presence
        limit = presence.heartbeat_interval * presence.missed_beats * SILENT_WINDOWS
        now = asyncio.get_running_loop().time()
        silent = [
            channel
            for channels in self._channels.values()
            for channel in channels
            if now - channel.heard > limit and not channel.closing
        ]
        loop = asyncio.get_running_loop()
        for channel in silent:
            log.info("node %s: nothing heard for %.0f s; closing", channel.node_id, limit)
            # in tasks: a half-open connection's closing handshake waits for its timeout
            task = loop.create_task(
                self._close(channel, protocol.CLOSE_SILENT, "no beats; reconnect")
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(silent)

    async def recheck(self) -> int:
        """One query for every node's stamp; wake the channels whose stamp differs."""
        if not self._channels:
            return 0
        stamps = await self._thread(False, self._controller.agents.channel_stamps)
        self.sweeps += 1
        woken = 0
        for node_id, channels in list(self._channels.items()):
            row = stamps.get(node_id)
            for channel in channels:
                if channel.stamp is None:
                    continue  # its first desired state is still coming
                if row is None or row != channel.stamp or row[1] != channel.digest:
                    self._push(channel, urgent=False)
                    woken += 1
        return woken

    # one channel
    async def handle(self, websocket: WebSocket, receive: Receive | None = None) -> None:
        """One agent channel, from its upgrade to its end. An open channel's task waits in this
        one frame (and the protocol's): each nested coroutine it would wait in costs ~0.23 KiB,
        11 MiB at 50,000 channels. `receive` is the ASGI callable the frames come from (from
        `ChannelDispatch`; without it, through Starlette's `WebSocket.receive`)."""
        loop = asyncio.get_running_loop()
        retry_after = self.admission.try_enter(loop.time())
        if retry_after is not None:  # shed: before any database work
            await self._refuse(websocket, retry_after)
            return
        # read before accepting: the protocol trims the scope once the channel is accepted
        take_beats = websocket.scope.get("extensions", {}).get(BEATS_EXTENSION)
        channel = None
        try:
            channel = await self._accept(websocket)
        finally:
            if channel is None:  # the handshake ended before its channel existed
                self.admission.leave(loop.time(), opened=False)
        if channel is None:
            return
        # the channel holds the handshake slot from here (`_admitted` gives it back)
        node_id = channel.node_id
        presence = self._controller.agents.presence
        self._channels.setdefault(node_id, []).append(channel)
        self._open += 1
        presence.opened(node_id, self._controller.ctx.clock())
        if take_beats is not None:  # beats from here on skip this task (`_beat`)
            take_beats(functools.partial(self._beat, channel))
        self._start_sweep()
        # the first desired state follows the hello (its features shape it); a client that
        # sends none gets it after FIRST_PUSH_WAIT anyway
        channel.first = loop.call_later(
            FIRST_PUSH_WAIT, functools.partial(self._push, channel, urgent=False)
        )
        next_frame = websocket.receive if receive is None else receive
        try:
            while True:  # the frames the protocol does not hand to `_beat`
                frame = await next_frame()
                if frame["type"] == "websocket.disconnect":
                    break
                text = frame.get("text")
                del frame  # this frame waits for the next one as long as the channel is open
                if text == BEAT_TEXT:  # the frame that matters at scale: no parsing at all
                    self._beat(channel)  # (served by `voipcloud serve`, beats rarely come here)
                    continue
                channel.heard = loop.time()
                if text is None:  # a binary frame: the protocol is JSON text only
                    await self._close(
                        channel, protocol.CLOSE_POLICY, "binary frames are not accepted"
                    )
                    break
                # in a call of its own: the message (a hello, an inventory) is not kept meanwhile
                await self._message(channel, text)
                del text
        except DatabaseUnavailable:
            await self._close(channel, CLOSE_TRY_AGAIN, "database unavailable; try again later")
        except (_Closed, RuntimeError, OSError):
            pass
        finally:
            channel.closing = True
            if take_beats is not None:
                take_beats(None)
            self._admitted(channel, opened=False)
            if channel.first is not None:
                channel.first.cancel()
            self._open -= 1
            listeners = self._channels.get(node_id, [])
            if channel in listeners:
                listeners.remove(channel)
            if not listeners:
                self._channels.pop(node_id, None)
            presence.closed(node_id)

    def shedding(self) -> bool:
        """Whether agents this controller told to come back later may still be on their way
        (the agent-lost watch waits for them: services/agent_watch.py)."""
        return time.monotonic() < self._told_until

    async def _refuse(self, websocket: WebSocket, retry_after: int) -> None:
        if self.on_refused is not None:
            self.on_refused()
        due = time.monotonic() + retry_after + protocol.RETRY_AFTER_JITTER + FIRST_PUSH_WAIT
        self._told_until = max(self._told_until, due)
        answer = PlainTextResponse(
            f"Too many agent channels opening; retry after {retry_after} s.\n",
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )
        with suppress(RuntimeError, OSError):
            await websocket.send_denial_response(answer)
            _DenialIsComplete.pending += 1

    async def _accept(self, websocket: WebSocket) -> _Channel | None:
        """Accept the upgrade and check the credential: the channel, or None once it is closed
        with the reason (its frame ends here: the credential is not kept)."""
        header = websocket.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        await websocket.accept()
        try:
            if scheme.lower() != "bearer" or not token:
                raise NotAuthenticated("missing agent credential")
            node_id = await self._authenticate(token)
        except NotAuthenticated:
            await websocket.close(protocol.CLOSE_UNAUTHORIZED, "credential refused; join again")
            return None
        except NodeGone:
            await websocket.close(protocol.CLOSE_DELETED, "node deleted")
            return None
        except DatabaseUnavailable:
            await websocket.close(CLOSE_TRY_AGAIN, "database unavailable; try again later")
            return None
        now = asyncio.get_running_loop().time()
        return _Channel(websocket, node_id, token_digest(token), now)

    def _beat(self, channel: _Channel) -> None:
        """A beat frame: from `handle`'s read loop, or handed over by the WebSocket protocol
        (api/ws_protocol.py) without waking the channel's task."""
        channel.heard = asyncio.get_running_loop().time()
        self._controller.agents.presence.beat(channel.node_id, self._controller.ctx.clock())

    async def _message(self, channel: _Channel, text: str) -> None:
        node_id = channel.node_id
        agents = self._controller.agents
        try:
            message = _messages.validate_json(text)
        except ValidationError as exc:
            reason = f"invalid message: {exc.errors()[0]['msg']}"[:120]
            await self._close(channel, protocol.CLOSE_POLICY, reason)
            raise _Closed from None
        agents.presence.beat(node_id, self._controller.ctx.clock())
        if isinstance(message, protocol.Beat):
            return
        if isinstance(message, protocol.Hello):
            await self._hello(channel, message)
        elif isinstance(message, protocol.InventoryUpdate):
            await self._thread(False, agents.record_inventory, node_id, message.inventory)
        elif isinstance(message, protocol.OutcomeReport):
            await self._record(channel, message)
        elif isinstance(message, protocol.Problem):
            await self._thread(False, agents.problem, node_id, message.reason)
        elif isinstance(message, protocol.HealthReport):
            await self._thread(False, agents.health, node_id, message)

    async def _hello(self, channel: _Channel, hello: protocol.Hello) -> None:
        agents = self._controller.agents
        features = frozenset(hello.features or ())
        # agents of one version announce the same features: one set shared by their channels
        if len(self._feature_sets) < MAX_FEATURE_SETS:
            features = self._feature_sets.setdefault(features, features)
        channel.features = self._feature_sets.get(features, features)
        if channel.first is not None:
            channel.first.cancel()
            channel.first = None
        if hello.inventory is not None:  # an older agent: written only when it changed
            await self._thread(False, agents.record_inventory, channel.node_id, hello.inventory)
        elif hello.inventory_digest is not None:  # checked in a batch with other hellos
            known = await self._inventory_known((channel.node_id, hello.inventory_digest))
            if not known:
                async with channel.sending():
                    await channel.websocket.send_text(INVENTORY_REQUEST)
        for outcome in hello.outcomes:
            await self._record(channel, outcome)
        self._push(channel, urgent=False)  # the first desired state, with the features known

    async def _record(self, channel: _Channel, outcome: protocol.OutcomeReport) -> None:
        result = await self._thread(True, self._controller.agents.report, channel.node_id, outcome)
        ack = protocol.Ack(operation_id=outcome.operation_id, recorded=result.recorded)
        async with channel.sending():
            await channel.websocket.send_text(ack.model_dump_json())
