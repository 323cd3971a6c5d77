"""What durable SQLite commits cost: acknowledged writes/s at synchronous=NORMAL vs FULL.

For each mode, on a fresh data dir (SQLite in WAL mode, as the controller runs it):

- sqlite3 alone: a one-row UPDATE per commit, the floor the fsync sets;
- service layer, 1 writer: `NodeService.action` status changes (StandBy <-> Deactivated, one
  transaction each with its event row), the write an administrator's action makes;
- service layer, 4 writer threads: the same, on 4 nodes at once (they queue on SQLite's
  write lock, so this shows whether the fsync per commit serializes them further);
- API, 1 client: `POST /api/v1/nodes` against a real `voipcloud serve` process started with
  VOIPCLOUD_SQLITE_SYNCHRONOUS=<mode>, each 201 being an acknowledged change.

Prints writes/s and latency percentiles per mode; never passes or fails. Every loop is bounded
by count and time. Usage:

    .venv/bin/python bench/durability.py [--seconds 5] [--max-ops 20000] [--dir /var/tmp]

--dir picks where the databases live: measure on the disk the controller will use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import Controller as ServeProcess

from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store.database import Database, sqlite_url

MODES = ("normal", "full")
ACTOR = "admin:bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def timed_loop(step: Callable[[int], None], *, seconds: float, max_ops: int) -> list[float]:
    """Run `step(i)` until the time or the count runs out; the latency of each, in ms."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(max_ops):
        if time.perf_counter() >= deadline:
            break
        began = time.perf_counter()
        step(i)
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def service(directory: Path, mode: str) -> Controller:
    db = Database(sqlite_url(directory), sqlite_synchronous=mode)
    db.migrate()
    controller = Controller.build(Context(db=db, box=SecretBox.in_data_dir(directory)))
    controller.bootstrap(admin_password="bench-password-123")
    return controller


def status_changes(controller: Controller, node_id: int) -> Callable[[int], None]:
    """StandBy and Deactivated in turn: one status change (and its event) per call."""
    standby = [True]  # the node starts Offline: its first change is StandBy

    def step(_i: int) -> None:
        action = "standby" if standby[0] else "deactivate"
        controller.nodes.action(node_id, action, actor=ACTOR)
        standby[0] = not standby[0]

    return step


@dataclass
class Phase:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, latencies: list[float], elapsed: float) -> None:
        self.rates.append(len(latencies) / elapsed if elapsed else 0.0)
        self.latencies.extend(latencies)


Setup = tuple[Controller, list[Callable[[int], None]], Path]


def service_workload(root: Path, mode: str, writers: int) -> Setup:
    directory = Path(tempfile.mkdtemp(prefix=f"svc-{mode}-{writers}-", dir=root))
    controller = service(directory, mode)
    nodes = [
        controller.nodes.add(actor=ACTOR, hostname=f"bench-{i}", private_ip="10.0.0.1").id
        for i in range(writers)
    ]
    return controller, [status_changes(controller, node) for node in nodes], directory


def run_service_round(
    steps: list[Callable[[int], None]], *, seconds: float, max_ops: int
) -> tuple[list[float], float]:
    results: list[list[float]] = [[] for _ in steps]

    def run(index: int) -> None:
        results[index] = timed_loop(steps[index], seconds=seconds, max_ops=max_ops // len(steps))

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(steps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return [v for part in results for v in part], time.perf_counter() - began


def bench_service(root: Path, *, writers: int, rounds: int, seconds: float, max_ops: int) -> None:
    setups = {mode: service_workload(root, mode, writers) for mode in MODES}
    phases = {mode: Phase() for mode in MODES}
    for _ in range(rounds):  # alternate the modes: a busy neighbour hits both alike
        for mode in MODES:
            _controller, steps, _directory = setups[mode]
            latencies, elapsed = run_service_round(steps, seconds=seconds, max_ops=max_ops)
            phases[mode].add(latencies, elapsed)
    for mode in MODES:
        controller, _steps, directory = setups[mode]
        controller.ctx.db.dispose()
        shutil.rmtree(directory, ignore_errors=True)
        print(line(f"service, {writers} writer(s), status change", mode, phases[mode]), flush=True)


def bench_raw(root: Path, *, rounds: int, seconds: float, max_ops: int) -> None:
    """The floor: one-row UPDATE commits through sqlite3 alone (what the fsync costs)."""
    connections = {}
    phases = {mode: Phase() for mode in MODES}
    for mode in MODES:
        conn = sqlite3.connect(root / f"raw-{mode}.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={mode.upper()}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.execute("INSERT INTO t VALUES (1, 0)")
        connections[mode] = conn
    for _ in range(rounds):
        for mode in MODES:
            conn = connections[mode]

            def step(i: int, conn: sqlite3.Connection = conn) -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE t SET n = ? WHERE id = 1", (i,))
                conn.execute("COMMIT")

            began = time.perf_counter()
            latencies = timed_loop(step, seconds=seconds, max_ops=max_ops)
            phases[mode].add(latencies, time.perf_counter() - began)
    for mode in MODES:
        connections[mode].close()
        print(line("sqlite3 alone, 1-row UPDATE commit", mode, phases[mode]), flush=True)


def bench_api(root: Path, *, rounds: int, seconds: float, max_ops: int) -> None:
    serves = {}
    clients = {}
    phases = {mode: Phase() for mode in MODES}
    counter = [0]
    try:
        for mode in MODES:
            directory = Path(tempfile.mkdtemp(prefix=f"api-{mode}-", dir=root))
            serves[mode] = ServeProcess(
                data_dir=directory, env={"VOIPCLOUD_SQLITE_SYNCHRONOUS": mode}
            ).start()
            clients[mode] = serves[mode].admin()
        for _ in range(rounds):
            for mode in MODES:
                client = clients[mode]

                def step(_i: int, client: httpx.Client = client) -> None:
                    i = counter[0] = counter[0] + 1
                    body = {
                        "hostname": f"api-{i}",
                        "private_ip": f"10.1.{i // 250 % 250}.{i % 250 + 1}",
                    }
                    answer = client.post("/api/v1/nodes", json=body)
                    if answer.status_code != 201:
                        raise RuntimeError(answer.text)

                began = time.perf_counter()
                latencies = timed_loop(step, seconds=seconds, max_ops=max_ops)
                phases[mode].add(latencies, time.perf_counter() - began)
    finally:
        for client in clients.values():
            client.close()
        for serve in serves.values():
            serve.stop()
    for mode in MODES:
        print(line("API, 1 client, POST /nodes", mode, phases[mode]), flush=True)


def line(what: str, mode: str, phase: Phase) -> str:
    rates = phase.rates
    return (
        f"| {what} | {mode} | {len(phase.latencies)} | {statistics.median(rates):,.0f} "
        f"({min(rates):,.0f}-{max(rates):,.0f}) | {statistics.median(phase.latencies):.2f} | "
        f"{percentile(phase.latencies, 0.99):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-ops", type=int, default=20000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="voipcloud-durability-", dir=args.dir))
    device = subprocess.run(
        ["df", "-T", str(root)], capture_output=True, text=True, check=False
    ).stdout.splitlines()[-1:]
    print(
        f"databases under {root} ({' '.join(device[0].split()[:2]) if device else '?'}); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.rounds} rounds of {args.seconds:g} s per mode, modes alternating"
    )
    print(
        "| workload | synchronous | writes | writes/s, median (min-max) of rounds "
        "| p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|")
    try:
        bench_raw(root, rounds=args.rounds, seconds=args.seconds, max_ops=args.max_ops)
        for writers in (1, 4):
            bench_service(
                root,
                writers=writers,
                rounds=args.rounds,
                seconds=args.seconds,
                max_ops=args.max_ops,
            )
        bench_api(root, rounds=args.rounds, seconds=args.seconds, max_ops=args.max_ops)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
