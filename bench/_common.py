"""What the benches share, once: a real `voipcloud serve` started and waited for, the machine's
load average, a process's CPU time, RSS and PSS from /proc, a private PostgreSQL database, a
minimal HTTP/1.1 exchange, and the ceilings of a run (`GET /healthz`, an endpoint that touches
no database, and a raw loopback WebSocket echo: a bare `websockets` server and client).

The scripts in bench/ import it as `_common` (their own folder is first on `sys.path` when run
as `.venv/bin/python bench/NAME.py`). The ceilings' client and echo server run in their own
processes: `python bench/_common.py healthz-client|echo-server|echo-client …` (internal).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support
from tests.support.processes import voipcloud_executable
from tests.support.server import free_port

from voipcloud import protocol

PASSWORD = "bench-admin-password"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
# what an agent reports: a 20-component inventory
INVENTORY = protocol.Inventory(
    os="Debian GNU/Linux 12 (bookworm)",
    kernel="Linux 6.1.0-21-amd64",
    version="0.1.0",
    components=[
        protocol.ComponentInfo(name=f"package-{i:02d}", version=f"1.{i}") for i in range(20)
    ],
)
# a controller for agents' channels: heartbeat every 10 s, offline after 3 missed beats
CHANNEL_SETTINGS = {
    "VOIPCLOUD_HEARTBEAT_INTERVAL": "10",
    "VOIPCLOUD_MISSED_BEATS": "3",
    "VOIPCLOUD_ACTIVATION_TIMEOUT": "120",
}

__all__ = [
    "CHANNEL_SETTINGS",
    "CLK_TCK",
    "HEALTHZ",
    "INVENTORY",
    "PASSWORD",
    "Serve",
    "bounded",
    "cpu_seconds",
    "exchange",
    "free_port",
    "healthz_ceiling",
    "load_line",
    "loadavg",
    "private_database",
    "pss_mib",
    "rss_mib",
    "ws_echo_ceiling",
]


# ------------------------------------------------------------------ the machine and a process


def loadavg() -> list[float]:
    """The load average over 1, 5 and 15 minutes: other work on the machine skews the figures."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def load_line() -> str:
    """The same, as printed: `load average 1.36 2.65 3.01` (the figures as /proc gives them)."""
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _kib(path: Path, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return None


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS): every page the process maps, shared ones counted whole."""
    kib = _kib(Path(f"/proc/{pid}/status"), "VmRSS:")
    return kib / 1024 if kib is not None else 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size (Pss in smaps_rollup): each shared page divided among the processes
    that map it, so the workers forked from one `serve` add up to what they really hold."""
    kib = _kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
    return kib / 1024 if kib is not None else 0.0


# ------------------------------------------------------------------ the controller


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


@dataclass
class Serve:
    """A real `voipcloud serve` on a free loopback port with its own data dir (its log in
    `data_dir/serve.log`), started and waited for until `/readyz` answers 200 (and, with
    `workers`, every worker is up); stopped by its PID (SIGTERM, then SIGKILL)."""

    data_dir: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # more settings (VOIPCLOUD_…)
    password: str = PASSWORD
    workers: int = 1  # `serve --workers N`: N processes on this one port (SO_REUSEPORT)
    pythonpath: str | None = None  # run the controller from another source tree
    profile: Path | None = None  # run it under cProfile, written here when it stops
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The processes holding connections: the workers (children of `serve` it printed as
        ready; its other child is the IC node's agent), or `serve` itself."""
        pid = self.pid
        if self.workers <= 1:
            return [pid]
        log = (self.data_dir / "serve.log").read_text(errors="replace")
        ready = {int(p) for p in re.findall(r"worker \d+ ready: pid (\d+)", log)}
        return sorted(set(_children(pid)) & ready)

    def all_pids(self) -> list[int]:
        """Every process of this controller: `serve` and its children (the workers, and the IC
        node's agent when it runs one): what its memory is the sum of."""
        return sorted({self.pid, *_children(self.pid)})

    def _workers_ready(self) -> bool:
        if self.workers <= 1:
            return True
        log = (self.data_dir / "serve.log").read_text(errors="replace")
        return log.count(" ready: pid ") >= self.workers and len(self.worker_pids()) == self.workers

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            "VOIPCLOUD_DATA_DIR": str(self.data_dir),
            "VOIPCLOUD_ADMIN_PASSWORD": self.password,
            **self.env,
        }
        if self.database_url:
            env["VOIPCLOUD_DATABASE_URL"] = self.database_url
        command = [voipcloud_executable(), "serve", "--port", str(self.port), "--no-ic-agent"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        if self.pythonpath:  # another source tree first on the path
            env["PYTHONPATH"] = self.pythonpath
            command = [
                sys.executable,
                "-c",
                "from voipcloud.cli.main import app; app()",
                *command[1:],
            ]
        if self.profile is not None:
            command = [sys.executable, "-m", "cProfile", "-o", str(self.profile), *command]
        return command, env

    def start(self, key_from: Path | None = None, timeout: float = 120) -> None:
        """Start it (again, after `stop`: the same port, data dir and database)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if key_from is not None:  # several controllers share the data key
            shutil.copy2(key_from / "secret.key", self.data_dir / "secret.key")
        command, env = self.command()
        log = (self.data_dir / "serve.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"voipcloud serve exited; see {self.data_dir}/serve.log")
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
                if ready and self._workers_ready():
                    return
            time.sleep(0.2)
        tail = (self.data_dir / "serve.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"voipcloud serve did not become ready within {timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # uvicorn re-raises the signal after its graceful shutdown; SIGTERM's default
            # action would kill the process before cProfile writes, SIGINT's exception lets it
            self.process.send_signal(signal.SIGINT if self.profile else signal.SIGTERM)
            try:
                self.process.wait(timeout=60 if self.profile else 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Serve:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def pss_mib(self) -> float:
        return pss_mib(self.pid)


@contextlib.contextmanager
def private_database(server_url: str, prefix: str = "voipcloud_bench") -> Iterator[str]:
    """A database of the run's own on the PostgreSQL server at `server_url`, dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def bounded(limit: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Every job's result, in order, at most `limit` running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


# ------------------------------------------------------------------ HTTP/1.1 and the ceilings


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a keep-alive connection; its status and body (Content-Length only: a
    minimal client, so that its own cost stays small beside the server's on the same cores)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _healthz_client(port: int, seconds: float, connections: int) -> float:
    count = 0

    async def one(end: float) -> None:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < end:
            await exchange(reader, writer, HEALTHZ)
            count += 1
        writer.close()

    end = time.monotonic() + seconds
    await asyncio.gather(*(one(end) for _ in range(connections)))
    return count / seconds


async def _echo_server(port: int, seconds: float) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.sleep(seconds)


async def _echo_client(port: int, seconds: float, connections: int) -> float:
    from websockets.asyncio.client import connect

    count = 0

    async def one(end: float) -> None:
        nonlocal count
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

    end = time.monotonic() + seconds
    await asyncio.gather(*(one(end) for _ in range(connections)))
    return count / seconds


def _run_child(*words: object, timeout: float) -> float:
    done = subprocess.run(
        [sys.executable, __file__, *map(str, words)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return float(done.stdout.split()[-1])


def healthz_ceiling(port: int, seconds: float, connections: int = 32) -> float:
    """`GET /healthz` requests/s of the server on `port`: `connections` keep-alive connections
    from one client process of their own, for `seconds`."""
    return _run_child("healthz-client", port, seconds, connections, timeout=seconds + 120)


def ws_echo_ceiling(seconds: float, connections: int = 64) -> float:
    """Round trips/s of a raw loopback WebSocket echo (a bare `websockets` server and client,
    each in a process of its own, `connections` connections), for `seconds`."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "echo-server", str(port), str(seconds + 60)]
    )
    try:
        return _run_child("echo-client", port, seconds, connections, timeout=seconds + 120)
    finally:
        server.kill()  # by PID
        server.wait(timeout=10)


def main(argv: list[str]) -> None:
    kind, port, seconds = argv[0], int(argv[1]), float(argv[2])
    if kind == "healthz-client":
        print(asyncio.run(_healthz_client(port, seconds, int(argv[3]))))
    elif kind == "echo-client":
        print(asyncio.run(_echo_client(port, seconds, int(argv[3]))))
    elif kind == "echo-server":
        asyncio.run(_echo_server(port, seconds))
    else:
        raise SystemExit(f"unknown: {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
