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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Serve, healthz_ceiling, loadavg, private_database, ws_echo_ceiling

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable


# ceilings
def ceilings(tmp: Path, seconds: float) -> dict[str, Any]:
    with Serve(tmp / "ceiling", password="scale-admin-password") as serve:
        rps = healthz_ceiling(serve.port, seconds, 32)
    echo = ws_echo_ceiling(seconds, 64)
    return {
        "healthz_rps": round(rps, 1),
        "ws_echo_round_trips_per_s": round(echo, 1),
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
                with private_database(args.postgres_url, "voipcloud_scale") as url:
                    report["agents_50000"] = agents(
                        tmp,
                        "50000",
                        50_000,
                        args.seconds,
                        ["--controllers", "4", "--database-url", url, "--per-child", "5000"],
                        1800,
                    )
        if "two" not in skip:
            with private_database(args.postgres_url, "voipcloud_scale") as url:
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
