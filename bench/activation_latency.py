"""Activate → Online (and Deactivate → Deactivated) latency over loopback, with real processes.

Starts a real `voipcloud serve` (temporary data dir, SQLite) and one real `voipcloud agent`
for a node carrying the `wk` role, then runs N activate/deactivate cycles. Each latency is
measured twice:

- client: from just before the administrator's POST .../actions/activate to the first
  GET /nodes/{id} that shows the node settled in Online (polled every few milliseconds, so it
  includes the polling granularity and the cost of those GETs);
- server: between the two events the controller records ("activate" and
  "activation-succeeded"), i.e. commit → push → agent work → report → commit.

Prints figures; never passes or fails. Usage:

    .venv/bin/python bench/activation_latency.py [--cycles 50] [--poll 0.002]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.processes import AgentProcess, Controller

API = "/api/v1"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, values_ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(values_ms):<3} median {statistics.median(values_ms):7.1f} ms   "
        f"p95 {percentile(values_ms, 0.95):7.1f} ms   min {min(values_ms):7.1f}   "
        f"max {max(values_ms):7.1f}"
    )


def wait_settled(client: httpx.Client, node_id: int, status: str, poll: float) -> float:
    """Poll until the node is in `status` with nothing pending; the monotonic time seen."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = client.get(f"{API}/nodes/{node_id}").json()
        if data["status"] == status and not data["pending_operation"]:
            return time.monotonic()
        time.sleep(poll)
    raise RuntimeError(f"node {node_id} did not reach {status} within 30 s")


def event_gap_ms(client: httpx.Client, node_id: int, start_op: str, end_op: str) -> float:
    """The server-side time between the newest `start_op` event and the newest `end_op`."""
    items: list[dict[str, Any]] = client.get(
        f"{API}/nodes/{node_id}/events", params={"limit": 10}
    ).json()["items"]
    at: dict[str, datetime] = {}
    for item in items:  # newest first
        at.setdefault(item["operation"], datetime.fromisoformat(item["at"]))
    return float((at[end_op] - at[start_op]).total_seconds() * 1000)


def wait_connected(client: httpx.Client, node_id: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if client.get(f"{API}/nodes/{node_id}").json()["connectivity"] == "connected":
            return
        time.sleep(0.05)
    raise RuntimeError("the agent did not connect within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50, help="activate/deactivate cycles")
    parser.add_argument("--poll", type=float, default=0.002, help="status poll interval, s")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="voipcloud-bench-") as tmp:
        root = Path(tmp)
        controller = Controller(
            data_dir=root / "controller",
            env={"VOIPCLOUD_HEARTBEAT_INTERVAL": "10", "VOIPCLOUD_ACTIVATION_TIMEOUT": "30"},
        ).start()
        agent: AgentProcess | None = None
        try:
            admin = controller.admin()
            created = admin.post(
                f"{API}/nodes", json={"hostname": "bench-wk", "private_ip": "10.9.0.2"}
            )
            created.raise_for_status()
            node_id = created.json()["node_id"]
            assigned = admin.post(f"{API}/nodes/{node_id}/roles", json={"role": "wk"})
            assigned.raise_for_status()
            agent = AgentProcess(
                controller_url=controller.url,
                session_key=assigned.json()["session_key"],
                state_dir=root / "agent",
            ).start()
            wait_connected(admin, node_id)

            client_activate: list[float] = []
            server_activate: list[float] = []
            client_deactivate: list[float] = []
            server_deactivate: list[float] = []
            for _ in range(args.cycles):
                started = time.monotonic()
                admin.post(f"{API}/nodes/{node_id}/actions/activate").raise_for_status()
                seen = wait_settled(admin, node_id, "Online", args.poll)
                client_activate.append((seen - started) * 1000)
                server_activate.append(
                    event_gap_ms(admin, node_id, "activate", "activation-succeeded")
                )
                started = time.monotonic()
                admin.post(f"{API}/nodes/{node_id}/actions/deactivate").raise_for_status()
                seen = wait_settled(admin, node_id, "Deactivated", args.poll)
                client_deactivate.append((seen - started) * 1000)
                server_deactivate.append(
                    event_gap_ms(admin, node_id, "deactivate", "deactivation-completed")
                )
        finally:
            if agent is not None:
                agent.stop()
            controller.stop()

    print(f"voipcloud activation latency, loopback, {args.cycles} cycles, one agent, SQLite")
    print(summary("Activate → Online (client)", client_activate))
    print(summary("Activate → Online (server events)", server_activate))
    print(summary("Deactivate → Deactivated (client)", client_deactivate))
    print(summary("Deactivate → Deactivated (server)", server_deactivate))


if __name__ == "__main__":
    main()
