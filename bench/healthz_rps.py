"""Requests per second of `GET /healthz` through each HTTP parser the controller could run with.

For each server kind it starts the real app (temporary data dir, SQLite) in its own process:

- `httptools`: uvicorn's default parser, no limits (what `voipcloud serve` ran before);
- `h11`: uvicorn's pure-Python parser with `h11_max_incomplete_event_size` = 64 KiB;
- `bounded`: `voipcloud.api.server` (httptools plus head size, count and time limits), as
  `voipcloud serve` runs now;

then keeps `--connections` keep-alive connections busy from `--clients` load processes for
`--seconds` and prints requests/s, latency percentiles and the server's CPU time per request
(user + system, from /proc: the figure least disturbed by other load on the machine). Prints
figures; never passes or fails. Loopback only; every loop bounded. Usage:

    .venv/bin/python bench/healthz_rps.py [--kinds bounded,httptools,h11] [--seconds 5]
        [--connections 32] [--clients 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _common import cpu_seconds, exchange, free_port

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nUser-Agent: healthz-rps\r\n\r\n"

SERVER = """
import sys, uvicorn
from pathlib import Path
from voipcloud.api import server
from voipcloud.api.app import create_app
from voipcloud.config import Settings
kind, port, data = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
settings = Settings(data_dir=data, port=port, admin_password="bench-admin-password")
app = create_app(settings)
if kind == "bounded":
    config = server.config(app, settings)
else:
    extra = {"h11_max_incomplete_event_size": 65536} if kind == "h11" else {}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=kind,
                            **extra)
uvicorn.Server(config).run()
"""


async def _connection(port: int, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await exchange(reader, writer, REQUEST)
            latencies.append(time.perf_counter() - started)
            done += 1
    finally:
        writer.close()
    return done


def _client(port: int, connections: int, seconds: float, queue: multiprocessing.Queue) -> None:
    async def main() -> tuple[int, list[float]]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        counts = await asyncio.gather(
            *(_connection(port, deadline, latencies) for _ in range(connections))
        )
        return sum(counts), latencies

    queue.put(asyncio.run(main()))


def measure(port: int, connections: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    per_client = max(1, connections // clients)
    procs = [
        multiprocessing.Process(target=_client, args=(port, per_client, seconds, queue))
        for _ in range(clients)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    elapsed = time.monotonic() - started
    total = sum(count for count, _ in results)
    latencies = sorted(lat for _, lats in results for lat in lats)
    return total / max(elapsed, seconds), latencies


def start_server(kind: str, data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(port), data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(REQUEST)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the {kind} server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="bounded,httptools,h11")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{'server':<10} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10}"
    )
    for kind in args.kinds.split(","):
        with tempfile.TemporaryDirectory() as data_dir:
            proc, port = start_server(kind, data_dir)
            try:
                measure(port, 4, 1, 1.0)  # warm-up
                for round_ in range(1, args.rounds + 1):
                    cpu = cpu_seconds(proc.pid)
                    rate, lat = measure(port, args.connections, args.clients, args.seconds)
                    per_request = (cpu_seconds(proc.pid) - cpu) / max(1, len(lat)) * 1e6
                    p50 = statistics.median(lat) * 1000 if lat else float("nan")
                    p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan")
                    print(
                        f"{kind:<10} {round_:>5} {rate:>10.0f} {p50:>10.1f} {p99:>10.1f} "
                        f"{per_request:>10.0f}"
                    )
            finally:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)


if __name__ == "__main__":
    main()
