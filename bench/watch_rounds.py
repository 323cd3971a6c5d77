"""The listing's server time beside the agent-lost watch's full rounds, at 50,000 nodes.

A full round of the watch (services/agent_watch.py) reads, judges and walks every live node
that had an agent: ~250 ms of a core at 50,000 nodes, in a duty thread of the process that
serves the pages. It comes after the start's grace and every 5 minutes. This bench fills a
temporary controller as `listing_scale.py` does (SQLite in a temporary data dir; PostgreSQL
in a private database dropped afterwards), serves it on 127.0.0.1, and times three requests
(`--requests` each, server time: ASGI in to out), first quiet, then while a thread runs full
rounds back to back (50 ms apart, at most 400 rounds: bounded) -- far more often than a
controller does, so that every request meets one. Prints p50 / p95 / max of each, the
rounds run and their wall and thread CPU time, and the machine's load. Never passes or fails.

    .venv/bin/python bench/watch_rounds.py [--nodes 50000] [--requests 150] [--only sqlite]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import private_database
from listing_scale import fill, summary
from tests.support.server import serve_in_thread
from web_listing import PASSWORD, ServerClock, served, sign_in

from voipcloud.api.app import create_app, start
from voipcloud.config import Settings
from voipcloud.services.agent_watch import AgentWatch

PATHS = ("/api/v1/nodes?q=fra1&limit=25&offset=0", "/", "/api/v1/nodes?limit=25&offset=0")
MAX_ROUNDS = 400


class Rounds:
    """Full rounds of a watch of its own, back to back, in a thread (a controller's own watch
    runs its rounds too; it is left as it is)."""

    def __init__(self, watch: AgentWatch) -> None:
        self.watch = watch
        self.stop = threading.Event()
        self.wall_ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.wall_ms) < MAX_ROUNDS:
            self.watch._next_full = 0.0  # a full round each time
            wall, cpu = time.perf_counter(), time.thread_time()
            self.watch.check()
            self.wall_ms.append((time.perf_counter() - wall) * 1000)
            self.cpu_ms.append((time.thread_time() - cpu) * 1000)
            self.stop.wait(0.05)


def run(label: str, database_url: str | None, count: int, repeats: int) -> dict[str, Any]:
    result: dict[str, Any] = {"database": label, "nodes": count, "quiet": {}, "rounds": {}}
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir), database_url=database_url, admin_password=PASSWORD
        )
        app = create_app(settings)
        controller = app.state.controller
        start(controller, settings)
        result["fill_s"] = round(fill(controller, count), 1)
        clock = ServerClock(app)
        watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
        watch.check()  # its baseline, once
        with (
            serve_in_thread(clock) as url,  # type: ignore[arg-type]
            httpx.Client(base_url=url, timeout=120, follow_redirects=True) as client,
        ):
            sign_in(client)
            token = client.post(
                "/api/v1/auth/token", json={"username": "admin", "password": PASSWORD}
            ).json()["access_token"]
            api = {"Authorization": f"Bearer {token}"}
            time.sleep(3)  # the served app's own watch: its first round (a baseline) done
            result["load_before"] = os.getloadavg()
            for phase in ("quiet", "rounds"):
                rounds = Rounds(watch)
                if phase == "rounds":
                    rounds.thread.start()
                    time.sleep(0.3)
                for path in PATHS:
                    headers = api if path.startswith("/api") else {}
                    call = functools.partial(client.get, path, headers=headers)
                    result[phase][path] = summary(served(clock, call, repeats))
                rounds.stop.set()
                if phase == "rounds":
                    rounds.thread.join()
                    result["round_wall"] = summary(rounds.wall_ms)
                    result["round_cpu"] = summary(rounds.cpu_ms)
                    result["rounds_run"] = len(rounds.wall_ms)
            result["load_after"] = os.getloadavg()
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['database']}, {result['nodes']} nodes: {result['rounds_run']} full rounds, "
        f"each p50 {result['round_wall']['p50_ms']} ms wall, "
        f"{result['round_cpu']['p50_ms']} ms of the thread's CPU "
        f"(load {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after)",
        f"  {'request':<42} {'quiet p50/p95/max':>22} {'beside rounds p50/p95/max':>28}",
    ]
    for path in PATHS:
        quiet, busy = result["quiet"][path], result["rounds"][path]
        lines.append(
            f"  {path:<42} {quiet['p50_ms']:6.1f} {quiet['p95_ms']:6.1f} {quiet['max_ms']:7.1f}"
            f"      {busy['p50_ms']:6.1f} {busy['p95_ms']:6.1f} {busy['max_ms']:7.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    if args.only != "postgresql":
        results.append(run("sqlite", None, args.nodes, args.requests))
        print(table(results[-1]), flush=True)
    if args.only != "sqlite":
        with private_database(args.postgres_url) as url:
            results.append(run("postgresql", url, args.nodes, args.requests))
        print(table(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
