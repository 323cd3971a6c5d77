"""The agent's main loop: join, keep the channel open, carry out the desired state.

    join (HTTP, session key) → channel (WebSocket, agent credential)
        up:   hello (inventory + unacknowledged outcomes), beats, inventory changes, outcomes
        down: desired state (roles + pending operation), acks

It survives controller restarts (reconnects with capped exponential backoff and full
jitter), sends its full state again on every reconnect, and never carries out an operation
twice: operations run in one worker task that belongs to the Agent, not to a channel, so a
channel that drops and comes back while a role's apply command runs finds the operation
already under way; its outcome is saved, then sent on whichever channel is up (or in the next
hello). Rules and figures: docs/protocol.md.

Role health: a second task, also the Agent's, checks every applied role every
`health_interval` seconds (at once after an apply) and sends the whole picture when it
changed and on every new channel; it also restarts supervised programs whose backoff is
over. An activation or fix succeeds only when every role's first check passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voipcloud import protocol
from voipcloud.agent import inventory as inventory_module
from voipcloud.agent.handlers import AgentConfig, HandlerError, HandlerRegistry, NodeInfo
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
    """Capped exponential backoff with full jitter: attempt n waits uniform(0, min(cap,
    base * 2**n)) seconds, so agents that lost the controller together come back spread out.

    `window` (the controller's `desired.reconnect_window`, feature "reconnect-window"): the
    first attempt after a healthy channel waits uniform(0, window) instead, so a fleet that
    lost its controller at once (a restart) arrives spread over the time the controller
    needs to take it back, not within the first second; later attempts double as before."""

    base: float = protocol.RECONNECT_BASE
    cap: float = protocol.RECONNECT_CAP
    attempt: int = 0
    window: float | None = None

    def ceiling(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 32))
        if self.attempt == 0 and self.window is not None:
            ceiling = max(ceiling, min(self.cap, self.window))
        return ceiling

    def next_delay(self) -> float:
        delay = self.ceiling()
        self.attempt += 1
        return random.uniform(0, delay)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0


def retry_after(exc: InvalidStatus) -> float | None:
    """The seconds of a `503` answer's `Retry-After` (the controller sheds channel opens:
    docs/protocol.md, "Load shedding"); None for any other refusal or an unreadable value
    (an HTTP date is not used by the controller: the agent's own backoff then applies)."""
    if exc.response.status_code != 503:
        return None
    value = exc.response.headers.get("Retry-After", "")
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, float(protocol.RETRY_AFTER_MAX))


def retry_after_delay(seconds: float) -> float:
    """What the agent waits after `Retry-After: seconds`: that, plus jitter."""
    return seconds + random.uniform(0, protocol.RETRY_AFTER_JITTER)  # noqa: S311 - jitter


def deactivate_retry_delay(attempts: int) -> float:
    """Seconds before retrying a deactivation that failed `attempts` times: doubling from
    2 s to 5 min, jittered down by up to a quarter, whole seconds (the reason shows them)."""
    ceiling = min(
        protocol.DEACTIVATE_RETRY_CAP,
        protocol.DEACTIVATE_RETRY_BASE * 2.0 ** min(attempts - 1, 32),
    )
    return float(math.ceil(ceiling * random.uniform(0.75, 1.0)))  # noqa: S311 - jitter


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
        # https: the pinned CA's context, and a check before each connection (agent/trust.py)
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        before_connect: Callable[[], Awaitable[None]] | None = None,
        # several controllers on one database (docs/operations.md, "Several controllers"):
        # the others, tried in turn when the current one fails
        more_controllers: Sequence[str] = (),
    ) -> None:
        self.controller_url = controller_url.rstrip("/")
        self.controller_urls = list(
            dict.fromkeys([self.controller_url, *(u.rstrip("/") for u in more_controllers)])
        )
        self._ssl_context = ssl_context
        self._before_connect = before_connect
        self._session_key = session_key
        self.store = StateStore(state_dir)
        self.state: AgentState = self.store.load()
        self.config = config or AgentConfig()
        self.handlers = HandlerRegistry(state_dir, self.config)
        self.inventory_interval = inventory_interval
        self._collect = collect_inventory
        self._inventory: protocol.Inventory | None = None
        self._desired: protocol.Desired | None = None
        self._desired_changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._ws: ClientConnection | None = None
        # the worker holds it while it carries something out (a thread may be running)
        self._busy = asyncio.Lock()
        self._exiting = False
        self._retry_at: float | None = None  # monotonic time of the next try...
        self._retry_op: str | None = None  # ...of this deactivation (None: after an error)
        self._stop_attempts = 0  # failed stops of a Deactivated node's roles, in a row
        self._healthy = False  # this channel has received the desired state
        self._window: float | None = None  # the controller's reconnect window, if it sent one
        self._check_now = asyncio.Event()  # run the health checks without waiting
        self._health: protocol.HealthReport | None = None  # the latest report
        if self.state.controller and self.state.controller != self.controller_url:
            log.info("controller address changed; keeping the node credential")
        self.state.controller = self.controller_url
        self._recover_interrupted_operation()

    # the loop
    async def run(self) -> int:
        backoff = Backoff()
        worker = asyncio.create_task(self._work(), name="voipcloud-agent-worker")
        health = asyncio.create_task(self._health_loop(), name="voipcloud-agent-health")
        try:
            while True:
                opened: float | None = None
                busy: float | None = None  # the controller's Retry-After, if it shed us
                try:
                    if self._before_connect is not None:
                        await self._before_connect()  # nothing is sent to an untrusted server
                    if not self.state.agent_token:
                        await self._join()
                    opened = time.monotonic()
                    await self._channel()
                except _Rejoin:
                    self.state.agent_token = None
                    self.store.save(self.state)
                except AgentExit as done:
                    log.warning("%s", done.message)
                    return done.code
                except InvalidStatus as exc:
                    busy = retry_after(exc)
                    if busy is None:
                        log.info("controller refused the channel (%s); retrying", exc)
                except (OSError, TimeoutError, httpx.TransportError, InvalidHandshake) as exc:
                    log.info("controller unreachable (%s); retrying", type(exc).__name__)
                except ConnectionClosed as exc:
                    log.info("channel closed (%s); reconnecting", exc)
                except Exception:  # never die on a surprise: log it and try again
                    log.exception("unexpected error; retrying")
                if opened is not None and self._healthy and self._lasted(opened):
                    backoff.reset()  # that channel was healthy: a fresh failure, start small
                self._next_controller()
                if busy is not None:  # the controller said when: its pacing, not a failure
                    delay = retry_after_delay(busy)
                    log.info(
                        "controller busy (503, Retry-After %g s); reconnecting in %.1f s",
                        busy,
                        delay,
                    )
                else:
                    backoff.window = self._window
                    delay = backoff.next_delay()
                    log.info("reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
        finally:
            health.cancel()
            with suppress(asyncio.CancelledError):
                await health
            await self._stop_worker(worker)

    def set_trust(
        self,
        ssl_context: Callable[[], ssl.SSLContext],
        before_connect: Callable[[], Awaitable[None]],
    ) -> None:
        """https: the pinned CA's context and check, for whichever controller is current."""
        self._ssl_context = ssl_context
        self._before_connect = before_connect

    def _next_controller(self) -> None:
        """The channel failed or closed: the next attempt goes to the next controller given
        (with the same backoff and jitter), so the agents of a lost controller spread over
        the others and none waits for it to come back."""
        if len(self.controller_urls) < 2:
            return
        index = self.controller_urls.index(self.controller_url)
        self.controller_url = self.controller_urls[(index + 1) % len(self.controller_urls)]
        log.info("next controller: %s", self.controller_url)

    def _lasted(self, opened: float) -> bool:
        return time.monotonic() - opened >= protocol.HEALTHY_BEATS * self.state.heartbeat_interval

    async def _stop_worker(self, worker: asyncio.Task[None]) -> None:
        """Let an operation under way finish and save its outcome, then stop the worker."""
        self._exiting = True
        async with self._busy:
            worker.cancel()
        with suppress(asyncio.CancelledError):
            await worker

    async def _join(self) -> None:
        key = self._session_key() if callable(self._session_key) else self._session_key
        inventory = await self._current_inventory()
        request = protocol.JoinRequest(
            session_key=key, node_id=self.state.node_id, inventory=inventory
        )
        verify = self._ssl_context() if self._ssl_context is not None else True
        async with httpx.AsyncClient(timeout=30, verify=verify) as client:
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

    async def _channel(self) -> None:
        headers = {"Authorization": f"Bearer {self.state.agent_token}"}
        self._healthy = False
        tls: Any = {"ssl": self._ssl_context()} if self._ssl_context is not None else {}
        try:
            async with connect(
                self._ws_url(),
                additional_headers=headers,
                max_size=protocol.MAX_MESSAGE_BYTES,
                open_timeout=10,
                # no WebSocket pings either way: the beats are the liveness mechanism (the
                # controller closes a silent channel; a dead controller is found by TCP below)
                ping_interval=None,
                # no per-message deflate: frames are tiny, and each compressed channel costs
                # the controller a zlib context (hundreds of KiB) and an inflate per beat
                compression=None,
                **tls,
            ) as ws:
                self._dead_peer_timeout(ws)
                inventory = await self._current_inventory()
                # under the send lock: an outcome saved meanwhile is either in this hello or
                # sent right after it on this channel, never lost between the two
                async with self._send_lock:
                    # only the digest: the controller asks for the inventory if its copy differs
                    hello = protocol.Hello(
                        inventory_digest=protocol.inventory_digest(inventory),
                        outcomes=self._unacked(),
                        features=[
                            protocol.FEATURE_NODE_ADDRESSES,
                            protocol.FEATURE_ROLE_HEALTH,
                            protocol.FEATURE_INVENTORY_DIGEST,
                            protocol.FEATURE_RECONNECT_WINDOW,
                        ],
                    )
                    await ws.send(hello.model_dump_json(exclude_none=True))
                    if self._health is not None:  # the controller may have restarted
                        await ws.send(self._health.model_dump_json(exclude_none=True))
                    self._ws = ws
                log.info("channel open")
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._receive(ws))
                    group.create_task(self._beat())
                    group.create_task(self._watch_inventory())
        except* ConnectionClosed as closed:
            exc = closed.exceptions[0]
            assert isinstance(exc, ConnectionClosed)
            code = exc.rcvd.code if exc.rcvd else None
            if code == protocol.CLOSE_DELETED:
                self._ws = None
                await self._deleted()
            if code == protocol.CLOSE_UNAUTHORIZED:
                raise _Rejoin from None
            raise exc from None
        except* InvalidURI as bad:
            raise AgentExit(EXIT_REFUSED, f"bad controller address: {bad.exceptions[0]}") from None
        finally:
            self._ws = None

    def _dead_peer_timeout(self, ws: ClientConnection) -> None:
        """A controller that vanished (host down, network cut) is noticed by TCP itself: the
        beats it no longer acknowledges time the connection out after the missed-beats
        window (Linux TCP_USER_TIMEOUT); no WebSocket ping is needed for that."""
        sock = ws.transport.get_extra_info("socket")
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if sock is None or option is None:
            return
        window = self.state.heartbeat_interval * protocol.MISSED_BEATS
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1000, int(window * 1000)))

    async def _deleted(self) -> None:
        async with self._busy:  # after the operation under way, if any
            self._exiting = True
            await asyncio.to_thread(self._stop_all)
        self.state.agent_token = None
        self.store.save(self.state)
        raise AgentExit(EXIT_DELETED, "the node was deleted; roles stopped, exiting")

    # the tasks of one channel
    async def _send(self, message: BaseModel) -> None:
        async with self._send_lock:
            if self._ws is None:
                return
            await self._ws.send(message.model_dump_json(exclude_none=True))

    async def _send_quietly(self, message: BaseModel) -> None:
        """From the worker: a channel that is down or closing is no error (hello resends)."""
        with suppress(ConnectionClosed):
            await self._send(message)

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            data = json.loads(raw)
            if data.get("type") == "desired":
                self._desired = protocol.Desired.model_validate(data)
                self._note_node(self._desired)
                self._window = self._desired.reconnect_window
                self._healthy = True
                self._desired_changed.set()
            elif data.get("type") == "inventory-request":
                inventory = await self._current_inventory()
                await self._send(protocol.InventoryUpdate(inventory=inventory))
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

    def _note_node(self, desired: protocol.Desired) -> None:
        if desired.node is not None:
            self.handlers.node = NodeInfo(
                private_ip=desired.node.private_ip,
                public_ip=desired.node.public_ip,
                hostname=desired.hostname,
                controller_url=self.controller_url,
            )

    # role health: one task for the agent's life, like the worker
    async def _health_loop(self) -> None:
        interval = self.config.health_interval
        while True:
            timeout = interval
            due = self.handlers.next_restart()
            if due is not None:
                timeout = min(timeout, max(0.05, due - time.monotonic()))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._check_now.wait(), timeout)
            self._check_now.clear()
            desired = self._desired
            if desired is None or self._exiting:
                continue
            async with self._busy:  # never while an operation changes the roles
                if self._exiting:
                    return
                try:
                    report = await asyncio.to_thread(self._check_health, desired)
                    await asyncio.to_thread(self.handlers.tick)
                except Exception:
                    log.exception("role health checks failed")
                    continue
            if report != self._health:
                self._health = report
                await self._send_quietly(report)

    def _check_health(self, desired: protocol.Desired) -> protocol.HealthReport:
        """In a thread: every applied role's health check."""
        roles = {}
        for role in desired.roles:
            if role.code not in self.state.applied:
                continue
            health = self.handlers.health(role.code, role.parameters)
            message = health.message[-1000:] if health.message else None
            roles[role.code] = protocol.RoleHealth(
                state=health.state,
                message=message,
            )
        return protocol.HealthReport(roles=roles)

    # the worker: one for the agent's life, whatever happens to the channels
    async def _work(self) -> None:
        while True:
            await self._next_turn()
            desired = self._desired
            if desired is None:
                continue
            async with self._busy:
                if self._exiting:
                    return
                try:
                    await self._carry_out(desired)
                except Exception:  # e.g. the state dir is full: try again a little later
                    log.exception("carrying out the desired state failed; trying again in 5 s")
                    self._retry_at, self._retry_op = time.monotonic() + 5, None

    async def _next_turn(self) -> None:
        """Wait for a new desired state, or for the time of a retry."""
        timeout = None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
        with suppress(TimeoutError):
            await asyncio.wait_for(self._desired_changed.wait(), timeout)
        self._desired_changed.clear()

    # carrying out the desired state
    async def _carry_out(self, desired: protocol.Desired) -> None:
        self._note_node(desired)
        try:
            await self._carry_out_operation(desired)
        finally:
            self._check_now.set()  # report the roles' health at once

    async def _carry_out_operation(self, desired: protocol.Desired) -> None:
        operation = desired.operation
        if operation is None or operation.id != self._retry_op or self._retry_due():
            self._retry_at = self._retry_op = None
        if operation is None:
            self._forget_retries(keep=None)
            problem = await asyncio.to_thread(self._reconcile, desired)
            if problem and desired.status == "Deactivated":
                # a Deactivated node (e.g. forced by the administrator) must not keep its
                # roles running: try stopping them again later, with the deactivation backoff
                self._stop_attempts += 1
                delay = deactivate_retry_delay(self._stop_attempts)
                self._retry_at = time.monotonic() + delay
                problem = f"{problem}; the agent retries in {delay:g} s"
            else:
                self._stop_attempts = 0
            if problem:
                await self._send_quietly(protocol.Problem(reason=problem))
            return
        if operation.kind == "deactivate":
            await self._deactivate(operation, desired)
            return
        saved = self.state.outcomes.get(operation.id)
        if saved is None:
            success: bool
            reason: str | None
            if self.state.started == operation.id:  # this process failed mid-way before
                success, reason = False, "interrupted: the agent failed while carrying it out"
            else:
                self.state.started = operation.id
                self.store.save(self.state)
                success, reason = await asyncio.to_thread(self._run, operation.kind, desired)
            saved = self._save_outcome(operation, desired, success, reason)
        if not saved.acked:
            await self._send_quietly(_report(operation.id, saved))

    def _retry_due(self) -> bool:
        return self._retry_at is not None and time.monotonic() >= self._retry_at

    async def _deactivate(
        self, operation: protocol.PendingOperation, desired: protocol.Desired
    ) -> None:
        """Stop every role; on failure try again later, until it succeeds or is no longer
        wanted. Only the success is a saved outcome: a failed attempt is reported once."""
        saved = self.state.outcomes.get(operation.id)
        if saved is not None and saved.success:
            if not saved.acked:
                await self._send_quietly(_report(operation.id, saved))
            return
        if self._retry_at is not None:
            return  # not yet time to try again
        self._forget_retries(keep=operation.id)
        success, reason = await asyncio.to_thread(self._run, operation.kind, desired)
        if success:
            self.state.retries.pop(operation.id, None)
            saved = self._save_outcome(operation, desired, success, reason)
            await self._send_quietly(_report(operation.id, saved))
            return
        attempts = self.state.retries.get(operation.id, 0) + 1
        self.state.retries[operation.id] = attempts
        self.store.save(self.state)
        delay = deactivate_retry_delay(attempts)
        self._retry_at, self._retry_op = time.monotonic() + delay, operation.id
        log.info("deactivation attempt %d failed: %s; retrying in %g s", attempts, reason, delay)
        await self._send_quietly(
            protocol.OutcomeReport(
                operation_id=operation.id,
                success=False,
                reason=reason,
                attempt=attempts,
                retry_in=delay,
            )
        )

    def _forget_retries(self, *, keep: str | None) -> None:
        stale = [op_id for op_id in self.state.retries if op_id != keep]
        if stale:
            for op_id in stale:
                del self.state.retries[op_id]
            self.store.save(self.state)

    def _save_outcome(
        self,
        operation: protocol.PendingOperation,
        desired: protocol.Desired,
        success: bool,
        reason: str | None,
    ) -> SavedOutcome:
        saved = SavedOutcome(success=success, reason=reason)
        self.state.outcomes[operation.id] = saved
        self.state.started = None
        self.state.generation = desired.generation
        self.store.save(self.state)
        log.info("%s %s %s", operation.kind, "succeeded" if success else "failed:", reason or "")
        return saved

    def _run(self, kind: str, desired: protocol.Desired) -> tuple[bool, str | None]:
        """In a worker thread: carry out one operation; every failure becomes a reason."""
        try:
            if kind == "deactivate":
                self._stop_all()
                return True, None
            return self._apply_all(desired)
        except HandlerError as exc:
            return False, str(exc)
        except Exception as exc:  # a plug-in handler's surprise is a failure, not a retry
            log.exception("%s failed unexpectedly", kind)
            return False, f"unexpected error: {type(exc).__name__}: {exc}"

    def _missing_software(self, desired: protocol.Desired) -> str | None:
        """Every role's software, present before any is started: a node lacking one program
        starts none of them (an activation that cannot succeed leaves nothing running), and
        the reason names every missing package at once."""
        reasons = []
        for role in desired.roles:
            missing = getattr(self.handlers.for_role(role.code), "missing", None)
            reason = missing() if callable(missing) else None
            if reason:
                reasons.append(f"{role.code}: {reason}")
        return "; ".join(reasons) or None

    def _apply_all(self, desired: protocol.Desired) -> tuple[bool, str | None]:
        missing = self._missing_software(desired)
        if missing:
            return False, missing
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
        # "Online" means "answering": every role's first health check must pass
        failed = []
        for role in desired.roles:
            health = self.handlers.health(role.code, role.parameters)
            if not health.ok:
                failed.append(f"{role.code}: health check failed: {health.message or '?'}")
        if failed:
            return False, "; ".join(failed)
        return True, None

    def _reconcile(self, desired: protocol.Desired) -> str | None:
        """No operation pending: stop removed roles; on Online, re-apply changed ones."""
        if desired.generation == self.state.generation:
            return None
        # a Deactivated node runs nothing (its roles stay assigned for the next activation)
        deactivated = desired.status == "Deactivated"
        wanted = {} if deactivated else {role.code: role for role in desired.roles}
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
        if not (problems and deactivated):  # a failed stop is tried again (see _carry_out)
            self.state.generation = desired.generation
        self.store.save(self.state)
        return "; ".join(problems) or None

    def _stop_role(self, code: str) -> None:
        self.handlers.for_role(code).stop(code)
        self.state.applied.pop(code, None)
        log.info("role %s stopped", code)

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
        """An activation or fix cut short by our own restart is reported failed, never redone.
        (A deactivation is never marked started: it is simply tried again.)"""
        if self.state.started and self.state.started not in self.state.outcomes:
            self.state.outcomes[self.state.started] = SavedOutcome(
                success=False,
                reason="interrupted: the agent restarted while carrying out the operation",
            )
        self.state.started = None
        self.store.save(self.state)


def _report(operation_id: str, saved: SavedOutcome) -> protocol.OutcomeReport:
    return protocol.OutcomeReport(
        operation_id=operation_id, success=saved.success, reason=saved.reason
    )
