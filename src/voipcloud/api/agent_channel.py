"""One WebSocket per node agent: beats and reports come up, desired state goes down.

Why a persistent channel (docs/architecture.md has the figures): a heartbeat is one small
frame on an open connection, handled in the event loop with a dict write (no request
parsing, no database write, no thread hop), and an administrator's Activate reaches the
agent as soon as its transaction commits, because the commit wakes the node's channel.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from contextlib import suppress

import anyio
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from voipcloud import protocol
from voipcloud.domain.errors import DatabaseUnavailable, NodeGone, NotAuthenticated, NotFound
from voipcloud.services.controller import Controller

log = logging.getLogger("voipcloud.agents")
RECHECK_SECONDS = 30.0  # a safety net; commits wake the channel at once
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the database is unavailable
_messages: TypeAdapter[protocol.AgentMessage] = TypeAdapter(protocol.AgentMessage)


class _Closed(Exception):
    pass


class AgentHub:
    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._wake: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify_threadsafe(self, node_ids: set[int]) -> None:
        """Called after a commit (from any thread): wake the channels of these nodes."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wake_nodes, set(node_ids))

    def _wake_nodes(self, node_ids: set[int]) -> None:
        for node_id in node_ids:
            for event in self._wake.get(node_id, ()):
                event.set()

    def connected_count(self) -> int:
        return sum(len(v) for v in self._wake.values())

    async def handle(self, websocket: WebSocket) -> None:
        agents = self._controller.agents
        header = websocket.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        await websocket.accept()
        try:
            if scheme.lower() != "bearer" or not token:
                raise NotAuthenticated("missing agent credential")
            node_id = await anyio.to_thread.run_sync(agents.authenticate, token)
        except NotAuthenticated:
            await websocket.close(protocol.CLOSE_UNAUTHORIZED, "credential refused; join again")
            return
        except NodeGone:
            await websocket.close(protocol.CLOSE_DELETED, "node deleted")
            return
        except DatabaseUnavailable:
            await websocket.close(CLOSE_TRY_AGAIN, "database unavailable; try again later")
            return
        await self._serve(websocket, node_id, token)

    async def _serve(self, websocket: WebSocket, node_id: int, token: str) -> None:
        presence = self._controller.agents.presence
        wake = asyncio.Event()
        wake.set()
        send_lock = asyncio.Lock()
        features: set[str] = set()  # what the agent announced in its hello
        self._wake.setdefault(node_id, set()).add(wake)
        presence.opened(node_id, self._controller.ctx.clock())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(websocket, node_id, wake, send_lock, features))
                group.create_task(self._write(websocket, node_id, token, wake, send_lock, features))
        except* DatabaseUnavailable:
            with suppress(RuntimeError):  # the agent reconnects with backoff
                await websocket.close(CLOSE_TRY_AGAIN, "database unavailable; try again later")
        except* (WebSocketDisconnect, _Closed, RuntimeError):
            pass
        finally:
            listeners = self._wake.get(node_id, set())
            listeners.discard(wake)
            if not listeners:
                self._wake.pop(node_id, None)
            presence.closed(node_id)

    async def _read(
        self,
        websocket: WebSocket,
        node_id: int,
        wake: asyncio.Event,
        send_lock: asyncio.Lock,
        features: set[str],
    ) -> None:
        agents = self._controller.agents
        clock = self._controller.ctx.clock
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(frame.get("code", 1000))
            text = frame.get("text")
            if text is None:  # a binary frame: the protocol is JSON text only
                await websocket.close(protocol.CLOSE_POLICY, "binary frames are not accepted")
                raise _Closed
            try:
                message = _messages.validate_json(text)
            except ValidationError as exc:
                reason = f"invalid message: {exc.errors()[0]['msg']}"[:120]
                await websocket.close(protocol.CLOSE_POLICY, reason)
                raise _Closed from None
            agents.presence.beat(node_id, clock())
            if isinstance(message, protocol.Beat):
                continue
            if isinstance(message, protocol.Hello):
                features.clear()
                features.update(message.features or ())
                await anyio.to_thread.run_sync(agents.record_inventory, node_id, message.inventory)
                for outcome in message.outcomes:
                    await self._record(websocket, node_id, outcome, send_lock)
                wake.set()
            elif isinstance(message, protocol.InventoryUpdate):
                await anyio.to_thread.run_sync(agents.record_inventory, node_id, message.inventory)
            elif isinstance(message, protocol.OutcomeReport):
                await self._record(websocket, node_id, message, send_lock)
            elif isinstance(message, protocol.Problem):
                await anyio.to_thread.run_sync(agents.problem, node_id, message.reason)
            elif isinstance(message, protocol.HealthReport):
                await anyio.to_thread.run_sync(agents.health, node_id, message)

    async def _record(
        self,
        websocket: WebSocket,
        node_id: int,
        outcome: protocol.OutcomeReport,
        send_lock: asyncio.Lock,
    ) -> None:
        result = await anyio.to_thread.run_sync(self._controller.agents.report, node_id, outcome)
        ack = protocol.Ack(operation_id=outcome.operation_id, recorded=result.recorded)
        async with send_lock:
            await websocket.send_text(ack.model_dump_json())

    async def _write(
        self,
        websocket: WebSocket,
        node_id: int,
        token: str,
        wake: asyncio.Event,
        send_lock: asyncio.Lock,
        features: set[str],
    ) -> None:
        agents = self._controller.agents
        last_sent = ""
        while True:
            # jittered, so channels opened together (all agents reconnect after a controller
            # restart) do not re-check together forever
            recheck = RECHECK_SECONDS * random.uniform(0.5, 1.5)  # noqa: S311 - not crypto
            with suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=recheck)
            wake.clear()  # before reading, so a commit during the read wakes us again
            try:
                desired = await anyio.to_thread.run_sync(
                    functools.partial(agents.desired, node_id, token, features=frozenset(features))
                )
            except NotAuthenticated:
                await websocket.close(protocol.CLOSE_UNAUTHORIZED, "credential revoked")
                raise _Closed from None
            except (NodeGone, NotFound):
                await websocket.close(protocol.CLOSE_DELETED, "node deleted")
                raise _Closed from None
            # an older agent refuses unknown fields: "node" only when there is one
            payload = desired.model_dump_json(exclude={"node"} if desired.node is None else None)
            if payload != last_sent:
                async with send_lock:
                    await websocket.send_text(payload)
                last_sent = payload
