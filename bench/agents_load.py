"""Load generator: N simulated agents on real channels, and an administrator's push meanwhile.

The parent process starts one or more real `voipcloud serve` processes (or attaches to one with
--url), seeds the nodes, spreads the agents over child processes (each below 15,000 sockets,
the per-process cap on these machines is 20,000) and over source addresses 127.0.0.2,
127.0.0.3, … (each below the ~28,000 ephemeral ports one source address has towards one
server address), then runs three phases and prints JSON and a table:

1. **open**: every child opens its agents' channels (bounded concurrency), speaking the real
   protocol: `hello` with the inventory digest (feature "inventory-digest"; `--hello full` sends
   the whole inventory, as an older agent does), then waits for its first `desired`. Reported:
   channels opened per second, errors, the controller's RSS per open connection.
2. **quiet** (`--quiet` s): channels open, nothing sent: the controller's idle upkeep (CPU %).
3. **beat** (`--seconds` s): every agent beats every `--interval` s (each agent's phase random,
   each interval jittered ±5 %); the children report beats sent per second. Meanwhile the parent
   pushes an administrator's operation (`POST …/actions/activate`) to one of its own probe
   agents every few seconds and times desired-with-operation (push) and the controller's ack of
   the agent's outcome (op→acked), p50/p99. At the end each child sends sentinel outcomes on a
   few channels: the controller acknowledges one only after every frame queued before it, so
   "absorbed/s" is the beats sent over the time until the last sentinel was acknowledged.
4. **reconnect** (`--reconnect`): every controller gets SIGTERM and is started again on the same
   port and database; timed until every agent's channel is open again with its first desired
   state. The agents reconnect as `voipcloud agent` does (`keep`, with agent/runner.py's
   `Backoff` and `retry_after`): the first attempt spread over the controller's advertised
   `reconnect_window`, then capped exponential backoff with full jitter, and a 503's
   `Retry-After` waited plus jitter. Reported: seconds (stop, start, after ready), 503
   answers, channels opened per second and per busiest second, the load average.

Seeding: `--seed store` (default) writes the nodes and their agents' credentials straight
into the controller's database (the protocol from then on is real); the probe agents
(`--probes`) are created with their role through `POST /nodes/import` and joined through the
API, and that rate is reported as the API join rate. `--seed api` creates every node through
the API's bulk path (`POST /nodes/import`, then one join per agent; bench/join_rate.py
measures that path alone).

Every loop is bounded (`--seconds`, `--quiet`, `--open-timeout`); children and controllers are
stopped by PID at the end. Usage:

    .venv/bin/python bench/agents_load.py [--agents 2000] [--seconds 60] [--quiet 10]
        [--per-child 5000] [--controllers 1] [--database-url URL] [--url URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import heapq
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import (
    CHANNEL_SETTINGS,
    INVENTORY,
    PASSWORD,
    Serve,
    bounded,
    cpu_seconds,
    loadavg,
    pss_mib,
    rss_mib,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voipcloud import protocol
from voipcloud.agent.runner import Backoff, retry_after, retry_after_delay
from voipcloud.config import Settings

API = "/api/v1"
BEAT = protocol.Beat().model_dump_json()  # exactly what the agent sends
FEATURES = [
    protocol.FEATURE_NODE_ADDRESSES,
    protocol.FEATURE_ROLE_HEALTH,
    protocol.FEATURE_INVENTORY_DIGEST,
    protocol.FEATURE_RECONNECT_WINDOW,
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@functools.cache
def hello_text(full: bool) -> str:
    """The same for every simulated agent (one inventory): built once, not per open (3.5 % of a
    child's CPU in a reconnect, py-spy)."""
    if full:
        return protocol.Hello(inventory=INVENTORY, features=FEATURES[:2]).model_dump_json(
            exclude_none=True
        )
    return protocol.Hello(
        inventory_digest=protocol.inventory_digest(INVENTORY), features=FEATURES
    ).model_dump_json(exclude_none=True)


# ---------------------------------------------------------------------------------- child


@dataclass
class ChildStats:
    opened: int = 0
    open_errors: int = 0
    beats: int = 0
    send_errors: int = 0
    closed: int = 0
    refused: int = 0  # 503 Retry-After answers
    reopened: int = 0  # channels open again after the controller's restart
    last_reopen: float = 0.0
    window: float | None = None  # the reconnect window the controller advertised
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def open_once(
    url: str, source: str, token: str, full: bool, stats: ChildStats, timeout: float
) -> ClientConnection:
    """One channel open as the agent does it: hello, then the first desired state (answering
    an inventory-request). Raises what the agent would see (InvalidStatus for a 503, …)."""
    ws = await connect(
        url.replace("http://", "ws://") + f"{API}/agent/channel",
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=protocol.MAX_MESSAGE_BYTES,
        open_timeout=timeout,
        compression=None,
        ping_interval=None,  # as the agent: beats are the liveness mechanism
        close_timeout=2,
        proxy=None,  # loopback; websockets otherwise reads the proxy environment per open (7 %)
        local_addr=(source, 0),
    )
    try:
        await ws.send(hello_text(full))
        for _ in range(5):  # the first desired (an inventory-request may come first)
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))
            if message["type"] == "desired":
                if message.get("reconnect_window") is not None:
                    stats.window = message["reconnect_window"]
                return ws
            if message["type"] == "inventory-request":
                await ws.send(protocol.InventoryUpdate(inventory=INVENTORY).model_dump_json())
    except BaseException:
        await ws.close()
        raise
    await ws.close()
    raise ConnectionError("no desired state")


async def child_open(
    url: str, source: str, token: str, full: bool, stats: ChildStats, timeout: float
) -> ClientConnection | None:
    for attempt in range(3):  # bounded: a refused open is retried twice
        try:
            ws = await open_once(url, source, token, full, stats, timeout)
            stats.opened += 1
            return ws
        except InvalidStatus as exc:  # the controller sheds: come back when it says
            seconds = retry_after(exc)
            stats.error(f"http {exc.response.status_code}")
            if seconds is not None:
                stats.refused += 1
                await asyncio.sleep(retry_after_delay(seconds))
                continue
            await asyncio.sleep(random.uniform(0, 2.0 * (attempt + 1)))
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            stats.error(type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 2.0 * (attempt + 1)))
        except Exception as exc:  # another handshake refusal: counted, retried
            stats.error(type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 2.0 * (attempt + 1)))
    stats.open_errors += 1
    return None


async def keep(
    index: int,
    ws: ClientConnection,
    token: str,
    args: argparse.Namespace,
    stats: ChildStats,
    beater: Beater,
    deadline: float,
    handshakes: asyncio.Semaphore,
) -> None:
    """After the controller restarts: reconnect exactly as `voipcloud agent` does
    (agent/runner.py): the first attempt after a healthy channel spread over the advertised
    reconnect window, then capped exponential backoff with full jitter; a 503 answered with
    Retry-After waits that plus jitter instead. Bounded by `deadline`.

    `handshakes` bounds the attempts in progress in this child (`--concurrency`), as in the
    open phase. A real agent has its host's CPU to itself; 12,500 simulated ones share one
    interpreter, which, unbounded, opened TCP connections faster than it could send their
    upgrade requests: the controller closed them as idle after `keep_alive_timeout` (5 s),
    hundreds of thousands of failures and backoffs that measured the generator, not the
    controller. An attempt's wait for a slot counts in the reconnect time."""
    await ws.wait_closed()
    beater.agents.pop(index, None)
    backoff = Backoff(window=stats.window)
    while time.monotonic() < deadline:
        delay = backoff.next_delay()
        while True:
            await asyncio.sleep(delay)
            try:
                async with handshakes:
                    fresh = await open_once(
                        args.url, args.source, token, args.hello == "full", stats, args.open_timeout
                    )
            except InvalidStatus as exc:
                seconds = retry_after(exc)
                stats.error(f"reconnect http {exc.response.status_code}")
                if seconds is None:
                    break  # another refusal: the backoff
                stats.refused += 1
                delay = retry_after_delay(seconds)
                continue
            except Exception as exc:  # as the agent: anything else is a failure (backoff)
                stats.error(f"reconnect {type(exc).__name__}")
                break
            stats.reopened += 1
            stats.last_reopen = time.monotonic()
            beater.add(index, fresh)
            return


class Beater:
    """Every open agent beats every `interval` s (random phase, ±5 % jitter), from the moment
    its channel opened, as real agents do; `pause` stops all beats for a while (the idle
    phase), after which the phases are drawn again (no burst)."""

    def __init__(self, interval: float, stats: ChildStats) -> None:
        self.interval = interval
        self.stats = stats
        self.agents: dict[int, ClientConnection] = {}
        self.due: list[tuple[float, int]] = []
        self.paused_until = 0.0

    def add(self, index: int, ws: ClientConnection) -> None:
        self.agents[index] = ws
        now = asyncio.get_running_loop().time()
        heapq.heappush(self.due, (now + random.uniform(0, self.interval), index))

    def pause(self, seconds: float) -> None:
        self.paused_until = asyncio.get_running_loop().time() + seconds

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < self.paused_until:
                await asyncio.sleep(self.paused_until - now)
                now = loop.time()
                self.due = [(now + random.uniform(0, self.interval), i) for _, i in self.due]
                heapq.heapify(self.due)
            while self.due and self.due[0][0] <= now and now >= self.paused_until:
                _, index = heapq.heappop(self.due)
                ws = self.agents.get(index)
                if ws is None:
                    continue
                try:
                    await ws.send(BEAT)
                    self.stats.beats += 1
                except ConnectionClosed:
                    self.stats.closed += 1
                    self.agents.pop(index, None)
                    continue
                jitter = random.uniform(0.95, 1.05)
                heapq.heappush(self.due, (now + self.interval * jitter, index))
            await asyncio.sleep(0.02)


async def child_drain(agents: list[ClientConnection], tag: str, samples: int) -> float:
    """Sentinel outcomes on a few channels; the time the last one was acknowledged."""
    live = list(agents)
    step = max(1, len(live) // samples)
    chosen = live[::step][:samples]
    last = 0.0
    for i, ws in enumerate(chosen):
        op_id = f"sentinel-{tag}-{i}"
        try:
            await ws.send(
                protocol.OutcomeReport(operation_id=op_id, success=True).model_dump_json()
            )
        except ConnectionClosed:
            continue
    for i, ws in enumerate(chosen):
        op_id = f"sentinel-{tag}-{i}"
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "ack" and message.get("operation_id") == op_id:
                        last = max(last, time.monotonic())
                        break
    return last


def freeze_open_channels() -> None:
    """The load generator holds ~12,500 connections per child; with nothing frozen, the
    collector's full collections walked all of them again and again: 81 % of a child's CPU was
    `gc_collect_main` in the 50,000-agent mass reconnect (py-spy --native), so the children,
    not the controller, set the pace. Once the channels are open they are frozen out of the
    collector's sight (what a closed one leaves in cycles stays until the child exits: one
    generation of channels, bounded). Tried and dropped: rarer young collections (each then
    walked tens of thousands of objects: 0.1-0.8 s, and 11 s in generation 1) and the
    controller's own policy, api/gc_policy.py (the failed attempts of a reconnect storm are
    garbage in cycles that reached the old generation: 75 full collections, 85 s in all)."""
    gc.collect()
    gc.freeze()


async def child_main(args: argparse.Namespace) -> None:
    tokens: list[list[Any]] = json.loads(Path(args.tokens).read_text())
    stats = ChildStats()
    out = sys.stdout

    def emit(**data: Any) -> None:
        out.write(json.dumps(data) + "\n")
        out.flush()

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            emit(
                kind="tick",
                t=time.monotonic(),
                opened=stats.opened,
                beats=stats.beats,
                closed=stats.closed,
                open_errors=stats.open_errors,
                reopened=stats.reopened,
                refused=stats.refused,
            )

    reporter = asyncio.create_task(report())
    semaphore = asyncio.Semaphore(args.concurrency)
    beater = Beater(args.interval, stats)
    beating = asyncio.create_task(beater.run())

    async def one(index: int, token: str) -> None:
        async with semaphore:
            ws = await child_open(
                args.url, args.source, token, args.hello == "full", stats, args.open_timeout
            )
        if ws is not None:
            beater.add(index, ws)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i, token) for i, (_node, token) in enumerate(tokens)))
    freeze_open_channels()
    emit(
        kind="ready",
        t=time.monotonic(),
        opened=stats.opened,
        failed=stats.open_errors,
        seconds=time.monotonic() - t0,
        errors=stats.errors,
    )
    tasks: list[asyncio.Task[None]] = []  # kept referenced
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        command = line.decode().split()
        if not command or command[0] == "stop":
            break
        if command[0] == "quiet":
            beater.pause(float(command[1]))
            await asyncio.sleep(float(command[1]))
            emit(kind="quieted", t=time.monotonic())
        elif command[0] == "beat":
            beats0, closed0 = stats.beats, stats.closed
            t_start = time.monotonic()
            await asyncio.sleep(float(command[1]))
            t_end = time.monotonic()
            beats = stats.beats - beats0
            acked = await child_drain(list(beater.agents.values()), command[2], args.sentinels)
            emit(
                kind="beaten",
                start=t_start,
                end=t_end,
                beats=beats,
                drained=acked,
                closed=stats.closed - closed0,
                live=len(beater.agents),
            )
        elif command[0] == "arm":  # the controller restarts next: reconnect as agents do
            bound = time.monotonic() + float(command[1])
            keepers = [
                asyncio.create_task(
                    keep(i, ws, tokens[i][1], args, stats, beater, bound, semaphore)
                )
                for i, ws in list(beater.agents.items())
            ]
            refused0 = stats.refused

            async def finish(keepers: list[asyncio.Task[None]], refused0: int) -> None:
                await asyncio.gather(*keepers, return_exceptions=True)
                emit(
                    kind="reopened",
                    t=time.monotonic(),
                    armed=len(keepers),
                    reopened=stats.reopened,
                    last=stats.last_reopen,
                    refused=stats.refused - refused0,
                    window=stats.window,
                    errors=stats.errors,
                )

            tasks.append(asyncio.create_task(finish(keepers, refused0)))
            emit(kind="armed", count=len(keepers), window=stats.window)
    reporter.cancel()
    beating.cancel()
    await asyncio.gather(*(ws.close() for ws in beater.agents.values()), return_exceptions=True)


# ---------------------------------------------------------------------------------- parent


def controller_pss(serves: list[Serve]) -> float:
    """MiB of PSS of every process of these controllers (a shared page counted once)."""
    return round(sum(pss_mib(p) for s in serves for p in s.all_pids()), 1)


def watch_events(database_url: str, since: datetime, until: datetime) -> dict[str, int]:
    """agent-lost / agent-back events recorded in [since, until), by operation."""
    from sqlalchemy import func, select

    from voipcloud.store.database import Database
    from voipcloud.store.tables import events

    db = Database(database_url)
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(events.c.operation, func.count())
                .where(
                    events.c.operation.in_(("agent-lost", "agent-back")),
                    events.c.at >= since,
                    events.c.at < until,
                )
                .group_by(events.c.operation)
            ).all()
    finally:
        db.dispose()
    return {operation: int(count) for operation, count in rows}


def seed_store(database_url: str, count: int) -> list[tuple[int, str]]:
    """N nodes with the wk role and an agent credential each, in a few multi-row statements."""
    from sqlalchemy import insert, select

    from voipcloud.services.secrets_box import token_digest
    from voipcloud.store.database import Database
    from voipcloud.store.tables import nodes, role_assignments

    db = Database(database_url)
    now = datetime.now(UTC)
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    prefix = f"load-{secrets.token_hex(3)}"
    components = [c.model_dump() for c in INVENTORY.components]
    digest = protocol.inventory_digest(INVENTORY)
    rows = [
        {
            "hostname": f"{prefix}-{i:05d}",
            "private_ip": f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",
            "status": "Offline",
            "is_controller": False,
            "config_generation": 1,
            "os": INVENTORY.os,
            "kernel": INVENTORY.kernel,
            "agent_version": INVENTORY.version,
            "components": components,
            "inventory_digest": digest,  # as a join writes it
            "agent_token_digest": token_digest(tokens[i]),
            "created_at": now,
            "updated_at": now,
            "row_version": 1,
        }
        for i in range(count)
    ]
    with db.write() as conn:
        for start in range(0, count, 1000):
            conn.execute(insert(nodes), rows[start : start + 1000])
        found = conn.execute(
            select(nodes.c.id, nodes.c.hostname).where(nodes.c.hostname.like(f"{prefix}-%"))
        ).all()
        ids = {row.hostname: row.id for row in found}
        node_ids = [ids[f"{prefix}-{i:05d}"] for i in range(count)]
        assignments = [
            {
                "node_id": node_id,
                "role": "wk",
                "parameters": {},
                "created_at": now,
                "updated_at": now,
            }
            for node_id in node_ids
        ]
        for start in range(0, count, 1000):
            conn.execute(insert(role_assignments), assignments[start : start + 1000])
    db.dispose()
    return list(zip(node_ids, tokens, strict=True))


async def api_join(admin: httpx.AsyncClient, count: int, prefix: str) -> list[tuple[int, str]]:
    """N nodes with the wk role through the bulk path (`POST /nodes/import`, 5,000 a call),
    then each node's agent joined with its own session key (16 joins at a time)."""
    keys: list[tuple[int, str]] = []
    for start in range(0, count, 5000):
        rows = [
            {
                "hostname": f"{prefix}-{i:05d}",
                "private_ip": f"10.250.{i // 256 % 256}.{i % 256}",
                "roles": ["wk"],
            }
            for i in range(start, min(count, start + 5000))
        ]
        created = await admin.post(f"{API}/nodes/import", json={"nodes": rows})
        created.raise_for_status()
        found = created.json()
        if found["refused"]:
            raise RuntimeError(f"import refused rows: {found['results'][:3]}")
        keys.extend((r["node_id"], r["session_key"]) for r in found["results"])

    async def one(node_id: int, key: str) -> tuple[int, str]:
        joined = await admin.post(
            f"{API}/agent/join",
            json={"session_key": key, "inventory": INVENTORY.model_dump()},
        )
        joined.raise_for_status()
        return node_id, joined.json()["agent_token"]

    return await bounded(16, [functools.partial(one, n, k) for n, k in keys])


@dataclass
class Probe:
    node_id: int
    token: str
    url: str
    ws: ClientConnection | None = None
    seen: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)

    async def open(self) -> None:
        self.ws = await connect(
            self.url.replace("http://", "ws://") + f"{API}/agent/channel",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            ping_interval=None,
            open_timeout=60,
        )
        await self.ws.send(hello_text(False))

    async def read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "ack":
                    self.acked[message["operation_id"]] = time.monotonic()
                elif message["type"] == "inventory-request":
                    await self.ws.send(
                        protocol.InventoryUpdate(inventory=INVENTORY).model_dump_json()
                    )
                elif message["type"] == "desired" and message.get("operation"):
                    op_id = message["operation"]["id"]
                    if op_id not in self.seen:
                        self.seen[op_id] = time.monotonic()
                        outcome = protocol.OutcomeReport(operation_id=op_id, success=True)
                        await self.ws.send(outcome.model_dump_json())

    async def beat(self) -> None:
        """Until cancelled (the parent's run is bounded)."""
        while self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(BEAT)
            await asyncio.sleep(5)


async def push_probes(
    admin: httpx.AsyncClient, idle: list[Probe], count: int, seconds: float
) -> tuple[list[float], list[float], list[str]]:
    push_ms: list[float] = []
    acked_ms: list[float] = []
    failures: list[str] = []
    gap = seconds / (count + 1)
    for _ in range(count):
        await asyncio.sleep(gap)
        if not idle:
            break
        probe = idle.pop()
        started = time.monotonic()
        try:
            answer = await admin.post(f"{API}/nodes/{probe.node_id}/actions/activate")
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        pending = answer.json().get("pending_operation")
        if not pending and answer.json().get("status") == "Online":
            continue  # the agent's outcome was recorded before the answer: not timed
        if not pending:  # e.g. refused or failed at once: counted, the answer kept
            failures.append(f"{answer.status_code} {answer.text[:300]}")
            continue
        op_id = pending["operation_id"]
        for _ in range(int(20 / 0.005)):  # up to 20 s
            if op_id in probe.acked:
                break
            await asyncio.sleep(0.005)
        if op_id in probe.seen:
            push_ms.append((probe.seen[op_id] - started) * 1000)
        else:
            failures.append(f"operation {op_id} never reached the agent")
        if op_id in probe.acked:
            acked_ms.append((probe.acked[op_id] - started) * 1000)
    return push_ms, acked_ms, failures


@dataclass
class Child:
    index: int
    source: str
    url: str
    process: asyncio.subprocess.Process
    ticks: list[dict[str, Any]] = field(default_factory=list)
    ready: dict[str, Any] | None = None
    beaten: dict[str, Any] | None = None
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def pump(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                return
            with contextlib.suppress(json.JSONDecodeError):
                message = json.loads(line)
                if message["kind"] == "tick":
                    self.ticks.append(message)
                else:
                    await self.events.put(message)

    async def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((text + "\n").encode())
        await self.process.stdin.drain()


class Usage:
    """CPU seconds of the controllers between two marks."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t = time.monotonic()
        self.cpu = [cpu_seconds(p) for p in pids]

    def percent(self) -> list[float]:
        dt = time.monotonic() - self.t
        return [
            round((cpu_seconds(p) - c) / dt * 100, 1)
            for p, c in zip(self.pids, self.cpu, strict=True)
        ]


class ServerUsage:
    """CPU seconds of the PostgreSQL server between two marks: every process named
    `postgres` (its backends, checkpointer, WAL writer, autovacuum; nothing else uses the
    server during a run), counted from the first mark, or from its start for a process that
    began after it. None on SQLite."""

    def __init__(self, database_url: str | None) -> None:
        self.active = bool(database_url)
        self.t = time.monotonic()
        self.cpu = self._processes() if self.active else {}

    @staticmethod
    def _processes() -> dict[int, float]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except OSError:  # ended meanwhile
                continue
        return found

    def percent(self) -> float | None:
        if not self.active:
            return None
        dt = time.monotonic() - self.t
        now = self._processes()
        used = sum(cpu - self.cpu.get(pid, 0.0) for pid, cpu in now.items())
        return round(used / dt * 100, 1)


async def parent_main(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "agents": args.agents,
        "controllers": args.controllers,
        "workers": args.workers,
        "database": "postgresql" if args.database_url else "sqlite",
        "load_before": loadavg(),
        "cpus": os.cpu_count(),
    }
    serves: list[Serve] = []
    children: list[Child] = []
    probes: list[Probe] = []
    readers: list[asyncio.Task[None]] = []
    try:
        if args.url:
            urls, pids = [args.url], list(args.controller_pid or [])
        else:
            for i in range(args.controllers):
                serve = Serve(
                    work / f"controller-{i}",
                    args.database_url,
                    env=CHANNEL_SETTINGS,
                    workers=args.workers,
                )
                serve.start(key_from=serves[0].data_dir if serves else None)
                serves.append(serve)
            urls, pids = [s.url for s in serves], [p for s in serves for p in s.worker_pids()]
        result["rss_base_mib"] = [round(rss_mib(p), 1) for p in pids]
        result["pss_base_mib"] = [round(pss_mib(p), 1) for p in pids]
        database_url = args.database_url or (
            f"sqlite+pysqlite:///{work / 'controller-0' / 'voipcloud.sqlite3'}"
        )
        async with httpx.AsyncClient(base_url=urls[0], timeout=120) as admin:
            token = await admin.post(
                f"{API}/auth/token", json={"username": "admin", "password": PASSWORD}
            )
            token.raise_for_status()
            admin.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            # probes: imported and joined through the API (that rate is reported)
            t0 = time.monotonic()
            joined = await api_join(admin, args.probes, f"probe-{secrets.token_hex(3)}")
            result["api_join_per_s"] = round(args.probes / (time.monotonic() - t0), 1)
            # the probe agents connect to the last controller: with two, the push crosses
            probes = [Probe(n, t, urls[-1]) for n, t in joined]
            for probe in probes:
                await probe.open()
            readers = [asyncio.create_task(p.read()) for p in probes]
            readers += [asyncio.create_task(p.beat()) for p in probes]
            t0 = time.monotonic()
            if args.seed == "store":
                agents = await asyncio.to_thread(seed_store, database_url, args.agents)
            else:
                agents = await api_join(admin, args.agents, f"load-{secrets.token_hex(3)}")
            result["seed"] = args.seed
            result["seed_seconds"] = round(time.monotonic() - t0, 1)

            # children: each below --per-child sockets, each from its own source address
            per_child = max(1, min(args.per_child, 15_000))
            count = max(1, math.ceil(args.agents / per_child))
            loads = [agents[i::count] for i in range(count)]
            t_open = time.monotonic()
            usage = Usage(pids)
            for i, chunk in enumerate(loads):
                path = work / f"tokens-{i}.json"
                path.write_text(json.dumps(chunk))
                source = f"127.0.0.{2 + i}"
                url = urls[i % len(urls)]
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--child",
                    "--tokens",
                    str(path),
                    "--url",
                    url,
                    "--source",
                    source,
                    "--interval",
                    str(args.interval),
                    "--concurrency",
                    str(args.concurrency),
                    "--hello",
                    args.hello,
                    "--open-timeout",
                    str(args.open_timeout),
                    "--max-seconds",
                    str(
                        args.open_timeout * 3
                        + args.quiet
                        + args.seconds
                        + 180
                        + (args.reconnect_timeout + 120 if args.reconnect else 0)
                    ),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                children.append(Child(i, source, url, process))
            pumps = [asyncio.create_task(c.pump()) for c in children]
            for child in children:
                child.ready = await asyncio.wait_for(
                    child.events.get(), timeout=args.open_timeout * 3 + 60
                )
            result["open_cpu_percent"] = usage.percent()
            opened = sum(c.ready["opened"] for c in children if c.ready)
            # from the first child's first open (not counting the children's start-up)
            first = min(c.ready["t"] - c.ready["seconds"] for c in children if c.ready)
            open_seconds = max(c.ready["t"] for c in children if c.ready) - first
            result["children_start_seconds"] = round(first - t_open, 1)
            result["children"] = [
                {"source": c.source, "url": c.url, **(c.ready or {})} for c in children
            ]
            result["opened"] = opened
            result["open_failed"] = sum(c.ready["failed"] for c in children if c.ready)
            result["open_seconds"] = round(open_seconds, 1)
            result["opened_per_s"] = round(opened / open_seconds, 1) if open_seconds else None
            await asyncio.sleep(2)  # let the hellos' writes settle
            rss = [rss_mib(p) for p in pids]
            result["rss_open_mib"] = [round(r, 1) for r in rss]
            base = sum(result["rss_base_mib"])
            result["rss_per_connection_kib"] = (
                round((sum(rss) - base) * 1024 / opened, 1) if opened else None
            )
            # PSS: the workers of one `serve` share pages their RSS each count whole
            pss = [pss_mib(p) for p in pids]
            result["pss_open_mib"] = [round(m, 1) for m in pss]
            base = sum(result["pss_base_mib"])
            result["pss_per_connection_kib"] = (
                round((sum(pss) - base) * 1024 / opened, 1) if opened else None
            )
            # the whole controller: its parent and children, shared pages counted once
            result["controller_pss_open_mib"] = controller_pss(serves)
            result["controller_processes"] = sum(len(s.all_pids()) for s in serves)

            # quiet: channels open, nothing sent (shorter than the silence that closes them)
            usage, server = Usage(pids), ServerUsage(args.database_url)
            quiet_from = datetime.now(UTC)
            for child in children:
                await child.command(f"quiet {args.quiet}")
            for child in children:
                await asyncio.wait_for(child.events.get(), timeout=args.quiet + 60)
            result["idle_cpu_percent"] = usage.percent()
            result["postgres_idle_cpu_percent"] = server.percent()
            # what the agent watch recorded meanwhile: idle only if nothing (an agent silent
            # past the missed-beats window is "lost", and recording it is work)
            result["watch_events_while_quiet"] = await asyncio.to_thread(
                watch_events, database_url, quiet_from, datetime.now(UTC)
            )

            # beat, with pushes
            usage, server = Usage(pids), ServerUsage(args.database_url)
            load0 = loadavg()
            beat_from = datetime.now(UTC)
            for child in children:
                await child.command(f"beat {args.seconds} phase1")
            push_ms, acked_ms, failures = await push_probes(
                admin, list(probes), args.pushes, args.seconds
            )
            for child in children:
                child.beaten = await asyncio.wait_for(child.events.get(), timeout=120)
            result["beat_cpu_percent"] = usage.percent()
            result["postgres_beat_cpu_percent"] = server.percent()
            result["watch_events_while_beating"] = await asyncio.to_thread(
                watch_events, database_url, beat_from, datetime.now(UTC)
            )
            beaten = [c.beaten for c in children if c.beaten]
            sent = sum(b["beats"] for b in beaten)
            start = min(b["start"] for b in beaten)
            end = max(b["end"] for b in beaten)
            drained = max(b["drained"] for b in beaten)
            result["beats_sent"] = sent
            result["beats_sent_per_s"] = round(sent / (end - start), 1)
            result["beats_absorbed_per_s"] = (
                round(sent / (drained - start), 1) if drained > start else None
            )
            result["drain_lag_s"] = round(max(0.0, drained - end), 2) if drained else None
            result["target_beats_per_s"] = round(args.agents / args.interval, 1)
            result["closed_during_load"] = sum(b["closed"] for b in beaten)
            result["push_ms"] = summary(push_ms)
            result["acked_ms"] = summary(acked_ms)
            result["push_failures"] = len(failures)
            result["push_failure_samples"] = failures[:3]
            result["load_during"] = [load0, loadavg()]
            result["rss_end_mib"] = [round(rss_mib(p), 1) for p in pids]
            result["pss_end_mib"] = [round(pss_mib(p), 1) for p in pids]
            result["controller_pss_end_mib"] = controller_pss(serves)
            per_second: dict[int, int] = {}
            for child in children:
                previous = None
                for tick in child.ticks:
                    if previous is not None and tick["t"] >= start:
                        second = int(tick["t"] - start)
                        per_second[second] = per_second.get(second, 0) + (
                            tick["beats"] - previous["beats"]
                        )
                    previous = tick
            result["beats_per_second_series"] = [
                per_second[k] for k in sorted(per_second) if k < args.seconds
            ]
            if args.reconnect:
                result["reconnect"] = await reconnect_phase(args, serves, children)
            for child in children:
                await child.command("stop")
            for pump in pumps:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pump, timeout=30)
    finally:
        for task in readers:
            task.cancel()
        for probe in probes:
            if probe.ws is not None:
                with contextlib.suppress(Exception):
                    await probe.ws.close()
        for child in children:  # by PID
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await child.process.wait()
        for serve in serves:
            serve.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                log = serve.data_dir / "serve.log"
                if log.exists():
                    shutil.copy2(log, args.keep_logs / f"{serve.data_dir.name}.log")
    result["load_after"] = loadavg()
    return result


async def reconnect_phase(
    args: argparse.Namespace, serves: list[Serve], children: list[Child]
) -> dict[str, Any]:
    """SIGTERM every controller, start it again on the same port and database, and time
    until every agent's channel is open again and has its first desired state (the agents
    reconnect as `voipcloud agent` does: `keep`)."""
    if not serves:
        raise SystemExit("--reconnect needs controllers this bench started (not --url)")
    for child in children:
        await child.command(f"arm {args.reconnect_timeout}")
    armed = [await asyncio.wait_for(child.events.get(), timeout=60) for child in children]
    loads = [loadavg()]
    t_stop = time.monotonic()
    for serve in serves:  # SIGTERM: uvicorn closes every channel (1012) and exits
        await asyncio.to_thread(serve.stop)
    t_down = time.monotonic()
    for serve in serves:  # the same port, data dir and database
        await asyncio.to_thread(serve.start)
    t_up = time.monotonic()
    # the processes holding the connections: with --workers, the new workers (the parent's
    # own CPU is the supervisor's, near nothing)
    pids = [p for s in serves for p in s.worker_pids()]
    usage = Usage(pids)

    async def sample() -> None:
        while True:
            await asyncio.sleep(5)
            loads.append(loadavg())

    sampler = asyncio.create_task(sample())
    try:
        done = [
            await asyncio.wait_for(child.events.get(), timeout=args.reconnect_timeout + 60)
            for child in children
        ]
    finally:
        sampler.cancel()
    loads.append(loadavg())
    cpu = usage.percent()
    reopened = sum(d["reopened"] for d in done)
    count = sum(a["count"] for a in armed)
    last = max((d["last"] for d in done if d["reopened"]), default=t_up)
    per_second: dict[int, int] = {}
    for child in children:
        previous = None
        for tick in child.ticks:
            if previous is not None and tick["t"] >= t_stop:
                second = int(tick["t"] - t_stop)
                per_second[second] = per_second.get(second, 0) + (
                    tick["reopened"] - previous["reopened"]
                )
            previous = tick
    errors: dict[str, int] = {}
    for d in done:
        for kind, n in d["errors"].items():
            if kind.startswith("reconnect"):
                errors[kind] = errors.get(kind, 0) + n
    busiest = max(per_second.values(), default=0)
    return {
        "agents": count,
        "reopened": reopened,
        "window_s": armed[0].get("window"),
        "stop_seconds": round(t_down - t_stop, 1),
        "start_seconds": round(t_up - t_down, 1),
        # from the SIGTERM until the last agent had its first desired state again
        "reconnect_seconds": round(last - t_stop, 1),
        "after_ready_seconds": round(last - t_up, 1),
        "opened_per_s": round(reopened / (last - t_up), 1) if last > t_up else None,
        "busiest_second": busiest,
        "refused_503": sum(d["refused"] for d in done),
        "errors": errors,
        "cpu_percent": cpu,
        "rss_mib": [round(rss_mib(p), 1) for p in pids],
        "pss_mib": [round(pss_mib(p), 1) for p in pids],
        "load": loads,
        "reopened_per_second": [
            per_second.get(k, 0) for k in range(max(per_second, default=-1) + 1)
        ],
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": round(statistics.median(values), 1) if values else None,
        "p99": round(percentile(values, 0.99) or 0, 1) if values else None,
        "max": round(max(values), 1) if values else None,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("agents (opened / failed)", f"{result['opened']} / {result['open_failed']}"),
        ("controllers", f"{result['controllers']} ({result['database']})"),
        ("channels opened per s", result["opened_per_s"]),
        ("CPU % while opening (per controller)", result["open_cpu_percent"]),
        ("API join (create+assign+join) nodes/s", result["api_join_per_s"]),
        (
            "controller RSS base → open (MiB)",
            f"{result['rss_base_mib']} → {result['rss_open_mib']}",
        ),
        ("RSS per connection (KiB)", result["rss_per_connection_kib"]),
        (
            "controller PSS base → open (MiB)",
            f"{result['pss_base_mib']} → {result['pss_open_mib']} "
            f"({result['pss_per_connection_kib']} KiB a connection)",
        ),
        (
            "whole controller PSS at open (MiB, processes)",
            f"{result['controller_pss_open_mib']} ({result['controller_processes']})",
        ),
        ("whole controller PSS after the beats (MiB)", result.get("controller_pss_end_mib")),
        ("idle upkeep CPU % (per controller)", result["idle_cpu_percent"]),
        ("PostgreSQL server CPU % while quiet", result.get("postgres_idle_cpu_percent")),
        ("agent-lost / -back recorded while quiet", result.get("watch_events_while_quiet")),
        ("… and while beating", result.get("watch_events_while_beating")),
        (
            "beats target / sent / absorbed per s",
            "{} / {} / {}".format(
                result["target_beats_per_s"],
                result["beats_sent_per_s"],
                result["beats_absorbed_per_s"],
            ),
        ),
        ("drain lag s", result["drain_lag_s"]),
        ("CPU % while beating (per controller)", result["beat_cpu_percent"]),
        ("PostgreSQL server CPU % while beating", result.get("postgres_beat_cpu_percent")),
        (
            "push ms p50 / p99 / max",
            "{p50} / {p99} / {max} (n={count})".format(**result["push_ms"]),
        ),
        (
            "op→acked ms p50 / p99 / max",
            "{p50} / {p99} / {max} (n={count})".format(**result["acked_ms"]),
        ),
        ("channels closed during load", result["closed_during_load"]),
        ("pushes failed", f"{result['push_failures']} {result['push_failure_samples'][:1]}"),
        ("load average before / after", f"{result['load_before']} / {result['load_after']}"),
    ]
    again = result.get("reconnect")
    if again:
        rows += [
            (
                "reconnect: agents back / armed",
                f"{again['reopened']} / {again['agents']} (window {again['window_s']} s)",
            ),
            (
                "reconnect s (SIGTERM → last desired)",
                f"{again['reconnect_seconds']} (stop {again['stop_seconds']}, "
                f"start {again['start_seconds']}, after ready {again['after_ready_seconds']})",
            ),
            (
                "reconnect opened/s (busiest second)",
                f"{again['opened_per_s']} ({again['busiest_second']})",
            ),
            ("reconnect 503 Retry-After answers", again["refused_503"]),
            ("reconnect CPU % (per controller)", again["cpu_percent"]),
            ("reconnect load average", again["load"]),
        ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the beat phase")
    parser.add_argument("--quiet", type=float, default=10.0, help="length of the idle phase")
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat interval")
    parser.add_argument("--per-child", type=int, default=5000, help="agents per child process")
    parser.add_argument("--concurrency", type=int, default=100, help="opens at once per child")
    parser.add_argument("--open-timeout", type=float, default=60.0)
    parser.add_argument("--probes", type=int, default=40, help="API-joined probe agents")
    parser.add_argument("--pushes", type=int, default=20, help="pushes timed during the load")
    parser.add_argument("--hello", choices=["digest", "full"], default="digest")
    parser.add_argument("--seed", choices=["store", "api"], default="store")
    parser.add_argument("--controllers", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=1, help="start each controller as `serve --workers N`"
    )
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--url", help="attach to this controller instead of starting one")
    parser.add_argument("--controller-pid", type=int, action="append")
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="after the beat phase, restart the controllers and time the mass reconnect",
    )
    parser.add_argument("--reconnect-timeout", type=float, default=300.0)
    parser.add_argument("--keep-logs", type=Path, help="copy the controllers' logs here")
    # child mode (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    parser.add_argument("--source", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    parser.add_argument("--sentinels", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args))
        return
    if args.controllers > 1 and not args.database_url:
        raise SystemExit("several controllers need --database-url (PostgreSQL)")
    # the controllers run with the default missed-beats (3): a stored last-seen time goes stale
    # after 3 intervals without a beat, and a channel silent for twice that is closed. An agent
    # may have beaten up to one interval before the pause: past 2 intervals of quiet some
    # agents are lost by the rules (a 30 s quiet phase at 50,000 agents recorded 5,734
    # agent-lost events, the watch's work counted as idle upkeep)
    quiet_max = args.interval * (Settings.model_fields["missed_beats"].default - 1)
    if args.quiet > quiet_max:
        raise SystemExit(
            f"--quiet {args.quiet:g} must not exceed {quiet_max:g} s (2 heartbeat intervals): "
            "longer, agents that beat just before the pause look lost (and past 6 intervals "
            "their channels are closed as silent), which is not idle upkeep"
        )
    if args.url and args.seed == "store" and not args.database_url:
        raise SystemExit("--url with --seed store needs --database-url")
    with tempfile.TemporaryDirectory(prefix="voipcloud-load-") as tmp:
        result = asyncio.run(parent_main(args, Path(tmp)))
    print(table(result))
    document = json.dumps(result)
    print(document)
    if args.json:
        args.json.write_text(document)


if __name__ == "__main__":
    main()
