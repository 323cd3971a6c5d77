"""Enrolment rate: N nodes created with roles, then joined by N agents, against a real controller.

Starts a real `voipcloud serve` (a temporary data dir; SQLite, or with --postgres-url a private
PostgreSQL database this run creates and drops), then:

1. **import**: creates `--nodes` nodes, each with the `wk` role, through
   `POST /api/v1/nodes/import` (`--batch` rows a call); every row must be `created` with a
   session key. With `--seed single` it uses the three-request path of the first release
   instead (POST /nodes, then POST /nodes/{id}/roles, `--concurrency` at a time): the "before"
   figure.
2. **join**: every node's agent joins (`POST /api/v1/agent/join` with its session key and a
   20-component inventory, as the agent sends it) over `--concurrency` keep-alive connections
   spread over `--clients` client processes (a minimal HTTP/1.1 client, so that the clients'
   own cost stays small beside the controller's on the same two cores). Every join must answer
   200 with the node's id.
3. **check**: the event log holds exactly one `agent-joined` event per node (a join group
   written twice, or lost, shows here), and the listing counts the N nodes.
4. **ceiling**: `GET /healthz` (no database) over the same connections for a few seconds: the
   most this controller answers on this machine now, beside the join rate.

Prints nodes/s for import, join and end to end (N / (import + join seconds)), the controller's
CPU during each phase and per node (what one whole core would enrol: the rates depend on the CPU
the controller got on a shared machine), the join groups' sizes (from the controller's metrics)
and the machine's load average before and after, as JSON and a table. Never passes or fails; every
loop is bounded; the controller is stopped by its PID. `--pythonpath DIR` runs the controller
from another source tree (e.g. `git archive` of an earlier commit), to measure before/after.

    .venv/bin/python bench/join_rate.py [--nodes 5000] [--concurrency 64] [--clients 2]
        [--batch 5000] [--seed import|single] [--postgres-url URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
from _common import (
    HEALTHZ,
    INVENTORY,
    PASSWORD,
    Serve,
    cpu_seconds,
    exchange,
    loadavg,
    private_database,
)

API = "/api/v1"


# ------------------------------------------------------------------ the join clients (children)


def _post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(
    port: int, requests: list[bytes], latencies: list[float], bad: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            t0 = time.monotonic()
            status, payload = await exchange(reader, writer, request)
            latencies.append(time.monotonic() - t0)
            if status != 200:
                bad.append(f"{status} {payload[:200]!r}")
    finally:
        writer.close()


async def _client(port: int, requests: list[bytes], connections: int) -> dict[str, Any]:
    latencies: list[float] = []
    bad: list[str] = []
    shares = [requests[i::connections] for i in range(connections)]
    await asyncio.gather(*(_connection(port, s, latencies, bad) for s in shares if s))
    return {"latencies": latencies, "bad": bad}


def client_process(
    port: int, requests: list[bytes], connections: int, start_at: float
) -> dict[str, Any]:
    """One client process: wait for the common start, send its share, report."""
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    found = asyncio.run(_client(port, requests, connections))
    found["started"], found["ended"] = t0, time.time()
    return found


def run_clients(
    port: int, requests: list[bytes], *, clients: int, concurrency: int
) -> dict[str, Any]:
    """Send every request over `concurrency` connections from `clients` processes at once."""
    clients = max(1, min(clients, len(requests)))
    per = max(1, concurrency // clients)
    start_at = time.time() + 1.0  # the processes start first, then all begin together
    with ProcessPoolExecutor(clients, mp_context=get_context("fork")) as pool:
        futures = [
            pool.submit(client_process, port, requests[i::clients], per, start_at)
            for i in range(clients)
        ]
        parts = [f.result(timeout=1800) for f in futures]
    latencies = sorted(x for p in parts for x in p["latencies"])
    seconds = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    return {
        "requests": len(requests),
        "seconds": round(seconds, 2),
        "per_s": round(len(requests) / seconds, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "errors": sum(len(p["bad"]) for p in parts),
        "first_errors": [b for p in parts for b in p["bad"]][:5],
    }


# ---------------------------------------------------------------------------------- parent


def login(url: str) -> httpx.Client:
    admin = httpx.Client(base_url=url, timeout=600)
    token = admin.post(f"{API}/auth/token", json={"username": "admin", "password": PASSWORD})
    token.raise_for_status()
    admin.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return admin


def seed_import(admin: httpx.Client, count: int, batch: int, prefix: str) -> list[str]:
    keys: list[str] = []
    for start in range(0, count, batch):
        rows = [
            {
                "hostname": f"{prefix}-{i:05d}",
                "private_ip": f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",
                "roles": ["wk"],
            }
            for i in range(start, min(count, start + batch))
        ]
        answer = admin.post(f"{API}/nodes/import", json={"nodes": rows})
        answer.raise_for_status()
        found = answer.json()
        if found["refused"]:
            raise RuntimeError(f"import refused rows: {found['results'][:3]}")
        keys.extend(r["session_key"] for r in found["results"])
    return keys


async def _seed_single(
    url: str, token: str, count: int, concurrency: int, prefix: str
) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    keys: list[str] = [""] * count
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as c:

        async def one(i: int) -> None:
            async with semaphore:
                created = await c.post(
                    f"{API}/nodes",
                    json={
                        "hostname": f"{prefix}-{i:05d}",
                        "private_ip": f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}",
                    },
                )
                created.raise_for_status()
                node_id = created.json()["node_id"]
                assigned = await c.post(f"{API}/nodes/{node_id}/roles", json={"role": "wk"})
                assigned.raise_for_status()
                keys[i] = assigned.json()["session_key"]

        await asyncio.gather(*(one(i) for i in range(count)))
    return keys


def group_sizes(url: str) -> dict[str, float] | None:
    """The join groups the controller wrote, from its metrics (absent before group commit)."""
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"{url}/metrics", timeout=10).text
        found = {}
        for line in text.splitlines():
            if line.startswith("voipcloud_agent_join_groups_total "):
                found["groups"] = float(line.split()[1])
            elif line.startswith("voipcloud_agent_join_group_largest "):
                found["largest"] = float(line.split()[1])
        return found or None
    return None


def run(args: argparse.Namespace, work: Path, database_url: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "nodes": args.nodes,
        "database": "postgresql" if database_url else "sqlite",
        "seed": args.seed,
        "concurrency": args.concurrency,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
    }
    serve = Serve(
        work / "controller",
        database_url,
        env={
            "VOIPCLOUD_HEARTBEAT_INTERVAL": "10",
            "VOIPCLOUD_METRICS_ALLOW": "127.0.0.1/32",  # the join groups, from /metrics
        },
        pythonpath=args.pythonpath,
    )
    serve.start()
    try:
        admin = login(serve.url)
        prefix = f"join-{secrets.token_hex(3)}"
        cpu0, t0 = cpu_seconds(serve.pid), time.monotonic()
        if args.seed == "import":
            keys = seed_import(admin, args.nodes, args.batch, prefix)
        else:
            token = str(admin.headers["Authorization"]).split()[1]
            keys = asyncio.run(_seed_single(serve.url, token, args.nodes, 16, prefix))
        import_seconds = time.monotonic() - t0
        import_cpu = cpu_seconds(serve.pid) - cpu0
        result["import"] = {
            "seconds": round(import_seconds, 2),
            "per_s": round(args.nodes / import_seconds, 1),
            "controller_cpu_percent": round(100 * import_cpu / import_seconds, 1),
            "controller_cpu_ms_per_node": round(1000 * import_cpu / args.nodes, 3),
        }
        inventory = INVENTORY.model_dump()
        requests = [
            _post(
                f"{API}/agent/join", json.dumps({"session_key": k, "inventory": inventory}).encode()
            )
            for k in keys
        ]
        cpu0 = cpu_seconds(serve.pid)
        joined = run_clients(
            serve.port, requests, clients=args.clients, concurrency=args.concurrency
        )
        join_cpu = cpu_seconds(serve.pid) - cpu0
        joined["controller_cpu_percent"] = round(100 * join_cpu / joined["seconds"], 1)
        joined["controller_cpu_ms_per_node"] = round(1000 * join_cpu / args.nodes, 3)
        joined["groups"] = group_sizes(serve.url)
        result["join"] = joined
        result["end_to_end_per_s"] = round(args.nodes / (import_seconds + joined["seconds"]), 1)
        # what one core of this machine would enrol end to end, were the controller given it
        # whole (the machine is shared: the rates above depend on the CPU it got)
        result["one_core_capacity_per_s"] = round(args.nodes / (import_cpu + join_cpu), 1)
        # every join recorded once; the listing counts every node
        events = admin.get(f"{API}/events", params={"operation": "agent-joined", "limit": 1})
        result["joined_events"] = events.json()["total"] if events.status_code == 200 else None
        result["listed_nodes"] = admin.get(f"{API}/nodes", params={"limit": 1}).json()["total"]
        # the ceiling: the same connections on an endpoint without the database
        count = max(2000, min(20000, int(joined["per_s"] * 5)))
        ceiling = run_clients(
            serve.port,
            [HEALTHZ] * count,
            clients=args.clients,
            concurrency=args.concurrency,
        )
        result["ceiling_healthz_per_s"] = ceiling["per_s"]
        admin.close()
    finally:
        serve.stop()
    result["load_after"] = loadavg()
    return result


def table(result: dict[str, Any]) -> str:
    imp, join = result["import"], result["join"]
    rows = [
        ("database", result["database"]),
        ("nodes", f"{result['nodes']:,} (seed: {result['seed']})"),
        (
            "import",
            f"{imp['per_s']:,} nodes/s ({imp['seconds']} s, controller "
            f"{imp['controller_cpu_percent']} % CPU)",
        ),
        (
            "join",
            f"{join['per_s']:,} nodes/s ({join['seconds']} s, p50 {join['p50_ms']} ms, "
            f"p99 {join['p99_ms']} ms, controller {join['controller_cpu_percent']} % CPU, "
            f"{join['errors']} errors)",
        ),
        ("join groups", json.dumps(join.get("groups"))),
        (
            "end to end",
            f"{result['end_to_end_per_s']:,} nodes/s (controller CPU "
            f"{imp['controller_cpu_ms_per_node']} + {join['controller_cpu_ms_per_node']} ms "
            "a node: "
            f"{result['one_core_capacity_per_s']:,} nodes/s on one whole core)",
        ),
        (
            "checks",
            f"{result['joined_events']} agent-joined events, {result['listed_nodes']} nodes listed",
        ),
        (
            "ceiling",
            f"GET /healthz {result['ceiling_healthz_per_s']:,}/s "
            f"({result['concurrency']} connections, {result['clients']} client processes)",
        ),
        (
            "load average",
            f"before {result['load_before']}, after {result['load_after']} ({result['cpus']} CPUs)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=5000, help="rows per import call")
    parser.add_argument("--concurrency", type=int, default=64, help="join connections in all")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--seed", choices=["import", "single"], default="import")
    parser.add_argument(
        "--postgres-url",
        help="a PostgreSQL server URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/"
        "postgres): the run uses a private database it creates there and drops",
    )
    parser.add_argument("--pythonpath", help="run the controller from this source tree")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    args.nodes = max(1, min(args.nodes, 100_000))
    args.batch = max(1, min(args.batch, 5000))
    work = Path(tempfile.mkdtemp(prefix="voipcloud-join-"))
    try:
        if args.postgres_url:
            with private_database(args.postgres_url, "voipcloud_join") as url:
                result = run(args, work, url)
        else:
            result = run(args, work, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(table(result))
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
