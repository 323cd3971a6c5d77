"""How many heartbeats a second one controller absorbs, what it costs, and push latency meanwhile.

Starts a real `voipcloud serve` (temporary data dir, SQLite, heartbeat interval 10 s), creates
N nodes with the `wk` role through the REST API, joins each through the agent endpoint with its
own session key, and opens one agent WebSocket per node from this single asyncio process,
speaking the real protocol (hello, beat, outcome; answering every pushed operation with a
success outcome, as an agent with nothing to do would). Then, for each target beat rate, it
sends beats round-robin over all channels for a fixed time and measures:

- sent/s: beats this process managed to put on the wire;
- absorbed/s: beats the controller handled: beats sent divided by the time from the start of
  the phase until the controller acknowledged sentinel outcomes sent after the last beats on
  25 channels spread over all (it answers one only after handling every frame queued before
  it on that channel), so a controller that queues beats instead of handling them shows up as
  a lower figure and a drain lag;
- controller CPU (% of one core, from /proc/PID/stat) and this process's CPU;
- push latency: during the phase, an administrator's POST .../actions/activate for an idle
  node, timed until that node's simulated agent receives the desired state carrying the
  operation (and until the controller acknowledges the agent's success outcome).

Prints figures; never passes or fails. Loopback only; every loop bounded. Usage:

    .venv/bin/python bench/heartbeats.py [--agents 2000] [--rates 1000,2500,5000,0]
        [--seconds 8] [--probes 5] [--profile FILE]

A rate of 0 means as fast as this process can send; a rate of 1 is an idle phase (what the
open channels cost by themselves). --profile runs the controller under
cProfile (its event-loop thread) and prints where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import CHANNEL_SETTINGS, PASSWORD, Serve, bounded
from _common import load_line as load
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voipcloud import protocol

API = "/api/v1"
BEAT = protocol.Beat().model_dump_json()  # exactly what the agent sends
INVENTORY = protocol.Inventory(os="Debian GNU/Linux 12", kernel="Linux 6.1", version="b")


# one simulated agent
@dataclass
class SimAgent:
    node_id: int
    token: str
    ws: ClientConnection | None = None
    handled: set[str] = field(default_factory=set)
    operation_seen: dict[str, float] = field(default_factory=dict)  # op id -> monotonic
    acked: dict[str, float] = field(default_factory=dict)  # op id -> monotonic

    async def read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "ack":
                    self.acked[message["operation_id"]] = time.monotonic()
                    continue
                operation = message.get("operation")
                if message["type"] == "desired" and operation:
                    op_id = operation["id"]
                    if op_id in self.handled:
                        continue
                    self.handled.add(op_id)
                    self.operation_seen[op_id] = time.monotonic()
                    outcome = protocol.OutcomeReport(operation_id=op_id, success=True)
                    await self.ws.send(outcome.model_dump_json())
        except ConnectionClosed:
            return


async def create_agents(url: str, admin: httpx.AsyncClient, count: int) -> list[SimAgent]:
    async def one(i: int) -> SimAgent:
        ip = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        created = await admin.post(
            f"{API}/nodes", json={"hostname": f"sim-{i:05d}", "private_ip": ip}
        )
        created.raise_for_status()
        node_id = created.json()["node_id"]
        assigned = await admin.post(f"{API}/nodes/{node_id}/roles", json={"role": "wk"})
        assigned.raise_for_status()
        joined = await admin.post(
            f"{API}/agent/join",
            json={
                "session_key": assigned.json()["session_key"],
                "inventory": INVENTORY.model_dump(),
            },
        )
        joined.raise_for_status()
        return SimAgent(node_id=node_id, token=joined.json()["agent_token"])

    return await bounded(16, [functools.partial(one, i) for i in range(count)])


async def open_channel(url: str, agent: SimAgent, compression: str | None) -> None:
    ws_url = url.replace("http://", "ws://") + f"{API}/agent/channel"
    agent.ws = await connect(
        ws_url,
        additional_headers={"Authorization": f"Bearer {agent.token}"},
        max_size=protocol.MAX_MESSAGE_BYTES,
        open_timeout=60,
        compression=compression,
    )
    # as the agent does: the digest of the inventory it joined with (the controller has it)
    hello = protocol.Hello(
        inventory_digest=protocol.inventory_digest(INVENTORY),
        features=[protocol.FEATURE_NODE_ADDRESSES, protocol.FEATURE_INVENTORY_DIGEST],
    )
    await agent.ws.send(hello.model_dump_json(exclude_none=True))
    first = json.loads(await asyncio.wait_for(agent.ws.recv(), timeout=60))
    assert first["type"] == "desired", first


@dataclass
class PhaseResult:
    target: int
    sent: int
    seconds: float
    absorbed_per_s: float
    drain_lag: float
    beats_per_cpu_second: float
    server_cpu: float
    client_cpu: float
    push_ms: list[float]
    online_ms: list[float]


async def send_beats(agents: list[SimAgent], rate: int, seconds: float) -> int:
    """Round-robin beats at `rate`/s (0: flat out) for `seconds`; the number sent."""
    sent = 0
    start = time.monotonic()
    end = start + seconds
    index = 0
    count = len(agents)
    while True:
        now = time.monotonic()
        if now >= end:
            return sent
        due = (int((now - start) * rate) - sent) if rate else 500
        for _ in range(max(0, min(due, 20_000))):
            agent = agents[index]
            index = (index + 1) % count
            assert agent.ws is not None
            await agent.ws.send(BEAT)
            sent += 1
        await asyncio.sleep(0.002 if rate else 0)


async def probe_pushes(
    admin: httpx.AsyncClient, idle: list[SimAgent], probes: int, seconds: float
) -> tuple[list[float], list[float]]:
    push_ms: list[float] = []
    online_ms: list[float] = []
    gap = seconds / (probes + 1)
    for _ in range(probes):
        await asyncio.sleep(gap)
        if not idle:
            break
        agent = idle.pop()
        started = time.monotonic()
        try:
            answer = await admin.post(f"{API}/nodes/{agent.node_id}/actions/activate")
        except httpx.TransportError:  # an idle keep-alive connection the server had closed
            started = time.monotonic()
            answer = await admin.post(f"{API}/nodes/{agent.node_id}/actions/activate")
        answer.raise_for_status()
        op_id = answer.json()["pending_operation"]["operation_id"]
        for _ in range(int(10 / 0.001)):  # up to 10 s
            if op_id in agent.acked:
                break
            await asyncio.sleep(0.001)
        if op_id in agent.operation_seen:
            push_ms.append((agent.operation_seen[op_id] - started) * 1000)
        if op_id in agent.acked:
            online_ms.append((agent.acked[op_id] - started) * 1000)
    return push_ms, online_ms


async def drain(agents: list[SimAgent], phase: int, samples: int = 25) -> float:
    """Send a sentinel outcome (an unknown operation id) on channels spread over all of them;
    the controller acknowledges it only after handling every frame queued before it on that
    channel. The monotonic time of the last acknowledgement."""
    step = max(1, len(agents) // samples)
    sample = agents[::step][:samples]
    ids = []
    for i, agent in enumerate(sample):
        op_id = f"sentinel-{phase}-{i}"
        ids.append(op_id)
        assert agent.ws is not None
        await agent.ws.send(
            protocol.OutcomeReport(operation_id=op_id, success=True).model_dump_json()
        )
    for _ in range(int(120 / 0.005)):  # up to two minutes
        if all(op_id in agent.acked for agent, op_id in zip(sample, ids, strict=True)):
            break
        await asyncio.sleep(0.005)
    else:
        raise RuntimeError("the controller did not acknowledge the sentinels within 120 s")
    return max(agent.acked[op_id] for agent, op_id in zip(sample, ids, strict=True))


async def run_phase(
    serve: Serve,
    admin: httpx.AsyncClient,
    agents: list[SimAgent],
    idle: list[SimAgent],
    rate: int,
    seconds: float,
    probes: int,
    phase: int,
) -> PhaseResult:
    cpu0, client0, t0 = serve.cpu_seconds(), sum(os.times()[:2]), time.monotonic()
    sent, (push_ms, online_ms) = await asyncio.gather(
        send_beats(agents, rate, seconds), probe_pushes(admin, idle, probes, seconds)
    )
    cpu1, client1, t1 = serve.cpu_seconds(), sum(os.times()[:2]), time.monotonic()
    handled = await drain(agents, phase)
    cpu2 = serve.cpu_seconds()  # includes the sentinel outcomes
    return PhaseResult(
        target=rate,
        sent=sent,
        seconds=t1 - t0,
        absorbed_per_s=sent / (handled - t0),
        drain_lag=max(0.0, handled - t1),
        beats_per_cpu_second=sent / (cpu2 - cpu0) if cpu2 > cpu0 else 0.0,
        server_cpu=(cpu1 - cpu0) / (t1 - t0) * 100,
        client_cpu=(client1 - client0) / (t1 - t0) * 100,
        push_ms=push_ms,
        online_ms=online_ms,
    )


def fmt(values: list[float]) -> str:
    if not values:
        return "      -"
    ordered = sorted(values)
    return f"{statistics.median(ordered):6.1f}/{ordered[-1]:6.1f}"


async def bench(args: argparse.Namespace, serve: Serve) -> None:
    async with httpx.AsyncClient(base_url=serve.url, timeout=120) as admin:
        token = await admin.post(
            f"{API}/auth/token", json={"username": "admin", "password": PASSWORD}
        )
        token.raise_for_status()
        admin.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        t0 = time.monotonic()
        agents = await create_agents(serve.url, admin, args.agents)
        t1 = time.monotonic()
        await bounded(
            64, [functools.partial(open_channel, serve.url, a, args.compression) for a in agents]
        )
        t2 = time.monotonic()
        readers = [asyncio.create_task(a.read()) for a in agents]
        print(
            f"setup: {args.agents} nodes created, assigned and joined in {t1 - t0:.1f} s "
            f"({args.agents / (t1 - t0):.0f} nodes/s, 3 requests each); "
            f"{args.agents} channels opened (hello + desired) in {t2 - t1:.1f} s; "
            f"controller RSS {serve.rss_mib():.0f} MiB"
        )
        idle = list(agents)
        results = []
        for phase, rate in enumerate(args.rates):
            results.append(
                await run_phase(serve, admin, agents, idle, rate, args.seconds, args.probes, phase)
            )
            r = results[-1]
            print(
                f"  phase {rate or 'max':>6}: sent {r.sent / r.seconds:8.0f}/s  absorbed "
                f"{r.absorbed_per_s:8.0f}/s  drain lag {r.drain_lag:5.2f} s  controller "
                f"CPU {r.server_cpu:5.1f}%  beats per controller CPU-s "
                f"{r.beats_per_cpu_second:6.0f}  bench CPU {r.client_cpu:5.1f}%  push ms "
                f"(median/max) {fmt(r.push_ms)}  op→acked ms {fmt(r.online_ms)}",
                flush=True,
            )
        print(f"controller RSS after the phases: {serve.rss_mib():.0f} MiB; {load()}")
        for agent in agents:
            if agent.ws is not None:
                await agent.ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument(
        "--rates",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1000, 2500, 5000, 0],
        help="target beats/s per phase, comma separated; 0 = flat out",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--probes", type=int, default=5, help="pushed operations per phase")
    parser.add_argument("--profile", type=Path, help="write the controller's cProfile here")
    parser.add_argument(
        "--compression",
        choices=["deflate"],
        help="offer per-message deflate (the agent does not, since this benchmark showed its cost)",
    )
    args = parser.parse_args()
    if args.agents * 2 + 100 > os.sysconf("SC_OPEN_MAX"):
        raise SystemExit(f"ulimit -n is too low for {args.agents} agents (2 sockets each)")

    with tempfile.TemporaryDirectory(prefix="voipcloud-bench-") as tmp:
        serve = Serve(Path(tmp) / "controller", env=CHANNEL_SETTINGS, profile=args.profile)
        serve.start()
        try:
            print(
                f"voipcloud heartbeats: {args.agents} agent channels, one controller process, "
                f"SQLite, loopback, {os.cpu_count()} CPUs; phases of {args.seconds:.0f} s; "
                f"{load()}"
            )
            asyncio.run(bench(args, serve))
        except BaseException:
            log = serve.data_dir / "serve.log"
            if log.exists():
                print("controller log (tail):\n" + log.read_text(errors="replace")[-3000:])
            raise
        finally:
            serve.stop()
    if args.profile is not None and args.profile.exists():
        print(f"\nwhere the controller's event-loop thread spent its time ({args.profile}):")
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
