"""The agent's main loop: join, keep the channel open, carry out the desired state.

    join (HTTP, session key) → channel (WebSocket, agent credential)
        up:   hello (inventory + unacknowledged outcomes), beats, inventory changes, outcomes
        down: desired state (roles + pending operation), acks

It survives controller restarts (reconnects with exponential backoff and full jitter),
sends its full state again on every reconnect, and never carries out an operation twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from voipcloud import protocol
from voipcloud.agent import inventory as inventory_module
from voipcloud.agent.handlers import AgentConfig, HandlerError, HandlerRegistry
from voipcloud.agent.state import AgentState, SavedOutcome, StateStore

log = logging.getLogger("voipcloud.agent")

EXIT_DELETED = 0
EXIT_REFUSED = 2


class AgentExit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Rejoin(Exception):
    pass


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0


def _digest(parameters: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()


class Agent:
    def __init__(
        self,
        *,
        controller_url: str,
        session_key: str | Callable[[], str],
        state_dir: Path,
        config: AgentConfig | None = None,
        inventory_interval: float = 60.0,
        collect_inventory: Callable[[], protocol.Inventory] = inventory_module.collect,
    ) -> None:
        self.controller_url = controller_url.rstrip("/")
        self._session_key = session_key
        self.store = StateStore(state_dir)
        self.state: AgentState = self.store.load()
        self.handlers = HandlerRegistry(state_dir, config or AgentConfig())
        self.inventory_interval = inventory_interval
        self._collect = collect_inventory
        self._inventory: protocol.Inventory | None = None
        self._desired: protocol.Desired | None = None
        self._desired_changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._ws: ClientConnection | None = None
        if self.state.controller and self.state.controller != self.controller_url:
            log.info("controller address changed; keeping the node credential")
        self.state.controller = self.controller_url
        self._recover_interrupted_operation()

    # the loop
    async def run(self) -> int:
        backoff = Backoff()
        while True:
            try:
                if not self.state.agent_token:
                    await self._join()
                await self._channel(backoff)
            except _Rejoin:
                self.state.agent_token = None
                self.store.save(self.state)
                continue
            except AgentExit as done:
                log.warning("%s", done.message)
                return done.code
            except (OSError, TimeoutError, httpx.TransportError, InvalidHandshake) as exc:
                log.info("controller unreachable (%s); retrying", type(exc).__name__)
            except ConnectionClosed as exc:
                log.info("channel closed (%s); reconnecting", exc)
            except Exception:  # never die on a surprise: log it and try again
                log.exception("unexpected error; retrying")
            delay = backoff.next_delay()
            await asyncio.sleep(delay)

    async def _join(self) -> None:
        key = self._session_key() if callable(self._session_key) else self._session_key
        inventory = await self._current_inventory()
        request = protocol.JoinRequest(
            session_key=key, node_id=self.state.node_id, inventory=inventory
        )
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{self.controller_url}/api/v1/agent/join",
                content=request.model_dump_json(),
                headers={"content-type": "application/json"},
            )
        if answer.status_code in (401, 403):
            detail = answer.json().get("detail", "") if answer.content else ""
            raise AgentExit(EXIT_REFUSED, f"the controller refused the session key: {detail}")
        if answer.status_code >= 500 or answer.status_code == 429:
            raise OSError(f"controller answered {answer.status_code}")
        if answer.status_code != 200:
            raise AgentExit(EXIT_REFUSED, f"join failed: {answer.status_code} {answer.text}")
        joined = protocol.JoinAnswer.model_validate_json(answer.content)
        if self.state.node_id not in (None, joined.node_id):  # pragma: no cover - refused above
            raise AgentExit(EXIT_REFUSED, "the controller answered for another node")
        self.state.node_id = joined.node_id
        self.state.agent_token = joined.agent_token
        self.state.heartbeat_interval = joined.heartbeat_interval
        self.store.save(self.state)
        log.info("joined as node %s", joined.node_id)

    def _ws_url(self) -> str:
        base = self.controller_url.replace("https://", "wss://").replace("http://", "ws://")
        return f"{base}/api/v1/agent/channel"

    async def _channel(self, backoff: Backoff) -> None:
        headers = {"Authorization": f"Bearer {self.state.agent_token}"}
        try:
            async with connect(
                self._ws_url(),
                additional_headers=headers,
                max_size=protocol.MAX_MESSAGE_BYTES,
                open_timeout=10,
                # no per-message deflate: frames are tiny, and each compressed channel costs
                # the controller a zlib context (hundreds of KiB) and an inflate per beat
                compression=None,
            ) as ws:
                self._ws = ws
                await self._send(
                    protocol.Hello(
                        inventory=await self._current_inventory(), outcomes=self._unacked()
                    )
                )
                backoff.reset()
                log.info("channel open")
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._receive(ws))
                    group.create_task(self._beat())
                    group.create_task(self._watch_inventory())
                    group.create_task(self._work())
        except* ConnectionClosed as closed:
            exc = closed.exceptions[0]
            assert isinstance(exc, ConnectionClosed)
            code = exc.rcvd.code if exc.rcvd else None
            if code == protocol.CLOSE_DELETED:
                await asyncio.to_thread(self._stop_all)
                self.state.agent_token = None
                self.store.save(self.state)
                raise AgentExit(
                    EXIT_DELETED, "the node was deleted; roles stopped, exiting"
                ) from None
            if code == protocol.CLOSE_UNAUTHORIZED:
                raise _Rejoin from None
            raise exc from None
        except* InvalidURI as bad:
            raise AgentExit(EXIT_REFUSED, f"bad controller address: {bad.exceptions[0]}") from None
        finally:
            self._ws = None

    # the tasks of one channel
    async def _send(self, message: BaseModel) -> None:
        if self._ws is None:
            return
        async with self._send_lock:
            await self._ws.send(message.model_dump_json())

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            data = json.loads(raw)
            if data.get("type") == "desired":
                self._desired = protocol.Desired.model_validate(data)
                self._desired_changed.set()
            elif data.get("type") == "ack":
                ack = protocol.Ack.model_validate(data)
                saved = self.state.outcomes.get(ack.operation_id)
                if saved and not saved.acked:
                    saved.acked = True
                    self.store.save(self.state)
        raise ws.protocol.close_exc

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.state.heartbeat_interval)
            await self._send(protocol.Beat())

    async def _watch_inventory(self) -> None:
        while True:
            await asyncio.sleep(self.inventory_interval)
            previous = self._inventory
            current = await asyncio.to_thread(self._collect)
            if current != previous:
                self._inventory = current
                await self._send(protocol.InventoryUpdate(inventory=current))

    async def _current_inventory(self) -> protocol.Inventory:
        if self._inventory is None:
            self._inventory = await asyncio.to_thread(self._collect)
        return self._inventory

    async def _work(self) -> None:
        while True:
            await self._desired_changed.wait()
            self._desired_changed.clear()
            desired = self._desired
            if desired is not None:
                await self._carry_out(desired)

    # carrying out the desired state
    async def _carry_out(self, desired: protocol.Desired) -> None:
        operation = desired.operation
        if operation is None:
            problem = await asyncio.to_thread(self._reconcile, desired)
            if problem:
                await self._send(protocol.Problem(reason=problem))
            return
        saved = self.state.outcomes.get(operation.id)
        if saved is None:
            self.state.started = operation.id
            self.store.save(self.state)
            if operation.kind == "deactivate":
                success, reason = await asyncio.to_thread(self._stop_all_reporting)
            else:
                success, reason = await asyncio.to_thread(self._apply_all, desired)
            saved = SavedOutcome(success=success, reason=reason)
            self.state.outcomes[operation.id] = saved
            self.state.started = None
            self.state.generation = desired.generation
            self.store.save(self.state)
            log.info(
                "%s %s %s", operation.kind, "succeeded" if success else "failed:", reason or ""
            )
        if not saved.acked:
            await self._send(
                protocol.OutcomeReport(
                    operation_id=operation.id, success=saved.success, reason=saved.reason
                )
            )

    def _apply_all(self, desired: protocol.Desired) -> tuple[bool, str | None]:
        wanted = {role.code for role in desired.roles}
        for code in list(self.state.applied):
            if code not in wanted:
                self._stop_role(code)
        for role in desired.roles:
            try:
                self.handlers.for_role(role.code).apply(role.code, role.parameters)
            except HandlerError as exc:
                return False, str(exc)
            self.state.applied[role.code] = _digest(role.parameters)
        return True, None

    def _reconcile(self, desired: protocol.Desired) -> str | None:
        """No operation pending: stop removed roles; on Online, re-apply changed ones."""
        if desired.generation == self.state.generation:
            return None
        wanted = {role.code: role for role in desired.roles}
        problems = []
        for code in list(self.state.applied):
            if code not in wanted:
                try:
                    self._stop_role(code)
                except HandlerError as exc:
                    problems.append(str(exc))
        if desired.status == "Online":
            for role in desired.roles:
                if self.state.applied.get(role.code) == _digest(role.parameters):
                    continue
                try:
                    self.handlers.for_role(role.code).apply(role.code, role.parameters)
                    self.state.applied[role.code] = _digest(role.parameters)
                except HandlerError as exc:
                    problems.append(str(exc))
        self.state.generation = desired.generation
        self.store.save(self.state)
        return "; ".join(problems) or None

    def _stop_role(self, code: str) -> None:
        self.handlers.for_role(code).stop(code)
        self.state.applied.pop(code, None)
        log.info("role %s stopped", code)

    def _stop_all_reporting(self) -> tuple[bool, str | None]:
        try:
            self._stop_all()
        except HandlerError as exc:
            return False, str(exc)
        return True, None

    def _stop_all(self) -> None:
        for code in list(self.state.applied):
            self._stop_role(code)
        self.store.save(self.state)

    def _unacked(self) -> list[protocol.OutcomeReport]:
        return [
            protocol.OutcomeReport(operation_id=op_id, success=o.success, reason=o.reason)
            for op_id, o in self.state.outcomes.items()
            if not o.acked
        ][-100:]

    def _recover_interrupted_operation(self) -> None:
        """An operation cut short by our own restart is reported failed, never redone."""
        if self.state.started and self.state.started not in self.state.outcomes:
            self.state.outcomes[self.state.started] = SavedOutcome(
                success=False,
                reason="interrupted: the agent restarted while carrying out the operation",
            )
        self.state.started = None
        self.store.save(self.state)
