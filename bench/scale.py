"""The scale suite in one command: ceilings, the listing, agent load, two controllers.

Runs, one after the other, each in its own processes, and prints one table and one JSON
document (also written with --json):

- **ceilings** of this run, so every figure can be read as a ratio: `GET /healthz` requests/s
  of a real `voipcloud serve` (an endpoint that touches no database; 32 keep-alive
  connections from one client process), and a raw loopback WebSocket echo (a bare
  `websockets` server and client, 64 connections: round trips/s);
- **listing**: `bench/listing_scale.py` (if present) at 10,000 nodes (50,000 with --full), on
  SQLite and, with --postgres-url, PostgreSQL;
- **agents**: `bench/agents_load.py` at 10,000 agents on one controller (SQLite); with --full
  also 50,000 agents on several controllers sharing one PostgreSQL (one process cannot hold
  50,000 sockets here: `ulimit -n` is 20,000, hard), reported as it ends, failures included;
- **two controllers**: `agents_load.py --controllers 2` on a private PostgreSQL database (the
  probe agents on controller B, the administrator's pushes through controller A);
- the machine's load average before and after each part.

Never passes or fails. Every part is bounded (`timeout` per subprocess). Usage:

    .venv/bin/python bench/scale.py [--full] [--agents 10000] [--seconds 60]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--json FILE]
        [--skip listing,agents,two]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import voipcloud_executable
from tests.support.server import free_port

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ceilings
HTTP_CLIENT = r"""
import asyncio, sys, time
port, seconds, connections = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: scale\r\n\r\n"
count = 0
async def one(end):
    global count
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < end:
        writer.write(REQUEST)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = int([x for x in lines if x.startswith(b"content-length")][0].split(b":")[1])
        await reader.readexactly(length)
        count += 1
    writer.close()
async def main():
    end = time.monotonic() + seconds
    await asyncio.gather(*(one(end) for _ in range(connections)))
asyncio.run(main())
print(count / seconds)
"""

ECHO_SERVER = r"""
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, ping_interval=None):
        await asyncio.sleep(float(sys.argv[2]))
asyncio.run(main())
"""

ECHO_CLIENT = r"""
import asyncio, sys, time
from websockets.asyncio.client import connect
port, seconds, connections = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
count = 0
async def one(end):
    global count
    for _ in range(100):
        try:
            ws = await connect(f"ws://127.0.0.1:{port}", compression=None, ping_interval=None)
            break
        except OSError:
            await asyncio.sleep(0.1)
    while time.monotonic() < end:
        await ws.send('{"type":"beat"}')
        await ws.recv()
        count += 1
    await ws.close()
async def main():
    end = time.monotonic() + seconds
    await asyncio.gather(*(one(end) for _ in range(connections)))
asyncio.run(main())
print(count / seconds)
"""


@contextlib.contextmanager
def serve_sqlite(tmp: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "VOIPCLOUD_DATA_DIR": str(tmp / "ceiling"),
        "VOIPCLOUD_ADMIN_PASSWORD": "scale-admin-password",
    }
    log = (tmp / "ceiling.log").open("ab")
    process = subprocess.Popen(
        [voipcloud_executable(), "serve", "--port", str(port), "--no-ic-agent"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield str(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def ceilings(tmp: Path, seconds: float) -> dict[str, Any]:
    with serve_sqlite(tmp) as port:
        rps = subprocess.run(
            [PYTHON, "-c", HTTP_CLIENT, port, str(seconds), "32"],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        )
    port = str(free_port())
    server = subprocess.Popen([PYTHON, "-c", ECHO_SERVER, port, str(seconds + 60)])
    try:
        echo = subprocess.run(
            [PYTHON, "-c", ECHO_CLIENT, port, str(seconds), "64"],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        )
    finally:
        server.kill()  # by PID
        server.wait(timeout=10)
    return {
        "healthz_rps": round(float(rps.stdout.split()[-1]), 1),
        "ws_echo_round_trips_per_s": round(float(echo.stdout.split()[-1]), 1),
    }


# the parts
def run_json(command: list[str], timeout: float, out: Path) -> dict[str, Any]:
    """Run a bench that writes JSON to `out`; its failure is reported, not raised."""
    started = time.monotonic()
    before = loadavg()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "load_before": before}
    result: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "load_before": before,
        "load_after": loadavg(),
    }
    if done.returncode != 0 or not out.exists():
        result["error"] = (done.stderr or done.stdout)[-1500:]
        return result
    result.update(json.loads(out.read_text()))
    return result


@contextlib.contextmanager
def private_database(server_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"voipcloud_scale_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def agents(
    tmp: Path, label: str, count: int, seconds: float, extra: list[str], timeout: float
) -> dict[str, Any]:
    out = tmp / f"agents-{label}.json"
    command = [
        PYTHON,
        str(BENCH / "agents_load.py"),
        "--agents",
        str(count),
        "--seconds",
        str(seconds),
        "--json",
        str(out),
        *extra,
    ]
    return run_json(command, timeout, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 50,000 agents and nodes")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="beat phase per agent run")
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--skip", default="", help="comma separated: listing,agents,two")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"load_before": loadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="voipcloud-scale-") as name:
        tmp = Path(name)
        report["ceilings"] = ceilings(tmp, args.ceiling_seconds)
        if "listing" not in skip and (BENCH / "listing_scale.py").exists():
            out = tmp / "listing.json"
            command = [
                PYTHON,
                str(BENCH / "listing_scale.py"),
                "--nodes",
                "50000" if args.full else "10000",
                "--postgres-url",
                args.postgres_url,
                "--json",
                str(out),
            ]
            report["listing"] = run_json(command, 1800, out)
        if "agents" not in skip:
            report["agents"] = agents(tmp, "one", args.agents, args.seconds, [], 900)
            if args.full:
                # 50,000 cannot be held by one process here (ulimit -n 20,000): four
                # controllers on one PostgreSQL, ten load processes from ten source addresses
                with private_database(args.postgres_url) as url:
                    report["agents_50000"] = agents(
                        tmp,
                        "50000",
                        50_000,
                        args.seconds,
                        ["--controllers", "4", "--database-url", url, "--per-child", "5000"],
                        1800,
                    )
        if "two" not in skip:
            with private_database(args.postgres_url) as url:
                report["two_controllers"] = agents(
                    tmp,
                    "two",
                    min(args.agents, 4000),
                    min(args.seconds, 30),
                    [
                        "--controllers",
                        "2",
                        "--database-url",
                        url,
                        "--per-child",  # one load process per controller
                        str(max(1, min(args.agents, 4000) // 2)),
                    ],
                    900,
                )
    report["load_after"] = loadavg()
    print(table(report))
    document = json.dumps(report)
    print(document)
    if args.json:
        args.json.write_text(document)


def table(report: dict[str, Any]) -> str:
    ceil = report["ceilings"]
    lines = [
        f"load average before {report['load_before']}, after {report['load_after']}; "
        f"{report['cpus']} CPUs",
        f"ceiling: GET /healthz {ceil['healthz_rps']:.0f} req/s; raw WebSocket echo "
        f"{ceil['ws_echo_round_trips_per_s']:.0f} round trips/s",
        "",
        "| run | agents open | opened/s | RSS/conn KiB | idle CPU % | beats target/absorbed "
        "per s (ratio to echo ceiling) | push p50/p99 ms | ack p50/p99 ms | load during |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("agents", "agents_50000", "two_controllers"):
        run = report.get(key)
        if run is None:
            continue
        if "error" in run and "opened" not in run:
            lines.append(f"| {key} | failed: {run['error'][-200:]!r} | | | | | | | |")
            continue
        absorbed = run.get("beats_absorbed_per_s") or 0
        ratio = absorbed / ceil["ws_echo_round_trips_per_s"] if ceil else 0
        lines.append(
            f"| {key} ({run['controllers']} × {run['database']}) | {run['opened']} "
            f"(failed {run['open_failed']}) | {run['opened_per_s']} | "
            f"{run['rss_per_connection_kib']} | {run['idle_cpu_percent']} | "
            f"{run['target_beats_per_s']}/{absorbed} ({ratio:.2f}) | "
            f"{run['push_ms']['p50']}/{run['push_ms']['p99']} | "
            f"{run['acked_ms']['p50']}/{run['acked_ms']['p99']} | {run['load_during']} |"
        )
    listing = report.get("listing")
    if listing is not None:
        lines += ["", "listing: " + json.dumps(listing)[:2000]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
