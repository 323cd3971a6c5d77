"""`voipcloud serve --workers N`: N worker processes behind one address (SO_REUSEPORT), each a
controller of the cluster on one PostgreSQL, supervised by the parent (issue 15).

Real processes. Which worker serves a connection is read from the kernel, not from the
product: the server side of a TCP connection is the socket whose remote port is the
client's local port (/proc/net/tcp), owned by the worker whose descriptors include it
(/proc/<pid>/fd). Shown: connections are spread over both workers; an agent held by one
worker is activated through a request the other serves; a worker killed with SIGKILL is
started again and its agents come back; SIGTERM to the parent stops every worker (no
orphans); HTTPS is served by every worker with the one certificate, and the IC node's agent
runs once, in a supervised child of its own; SQLite is refused above one worker.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_agent_lifecycle import add_node_with_roles
from tests.support import databases
from tests.support.processes import (
    AgentProcess,
    Controller,
    node,
    voipcloud_executable,
    wait_for,
    wait_status,
)
from tests.support.server import free_port
from tests.support.tls_netns import HttpsController

pytestmark = pytest.mark.e2e

STARTED = re.compile(r"voipcloud: worker (\d+) started: pid (\d+)")
READY = re.compile(r"voipcloud: worker (\d+) ready: pid (\d+)")
IC_AGENT = re.compile(r"voipcloud: ic agent started: pid (\d+)")


# --- who holds a connection (from the kernel) ----------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _tcp() -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every TCP socket of this network namespace."""
    rows: list[tuple[int, int, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local = int(parts[1].rsplit(":", 1)[1], 16)
                remote = int(parts[2].rsplit(":", 1)[1], 16)
                rows.append((local, remote, int(parts[9])))
    return rows


def _holders(server_port: int, client_ports: list[int], pids: list[int]) -> list[int | None]:
    """For each client port, the pid among `pids` holding the server side of its connection
    to `server_port` (one look at the kernel's tables for them all: they are long)."""
    by_port = {remote: i for local, remote, i in _tcp() if local == server_port and i}
    owners = {i: pid for pid in pids for i in _socket_inodes(pid)}
    return [owners.get(by_port.get(port, -1)) for port in client_ports]


def _holder(server_port: int, client_port: int, pids: list[int]) -> int | None:
    return _holders(server_port, [client_port], pids)[0]


def _client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of `pid`'s connections to `server_port`."""
    mine = _socket_inodes(pid)
    return {local for local, remote, i in _tcp() if remote == server_port and i in mine}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as found:
            return [int(p) for p in found.read().split()]
    except FileNotFoundError:
        return []


def _shared_mib(pid: int) -> float:
    """The pages of `pid` that another process maps too (smaps_rollup), in MiB."""
    shared = 0
    with open(f"/proc/{pid}/smaps_rollup") as lines:
        for line in lines:
            name, _, rest = line.partition(":")
            if name in {"Shared_Clean", "Shared_Dirty"}:
                shared += int(rest.split()[0])
    return shared / 1024


# --- the controller ------------------------------------------------------------------------


class WorkersMixin:
    """`serve --workers N` for a `Controller` (plain or HTTPS): its workers' pids."""

    workers: int
    process: subprocess.Popen[bytes] | None
    port: int

    def wrap(self, argv: list[str]) -> list[str]:
        return [*argv, "--workers", str(self.workers)]

    def full_log(self) -> str:
        assert self.log_path is not None  # type: ignore[attr-defined]
        return self.log_path.read_text(errors="replace")  # type: ignore[attr-defined]

    def started_pids(self) -> list[int]:
        """Every worker pid the parent printed, in order."""
        return [int(m.group(2)) for m in STARTED.finditer(self.full_log())]

    def children(self) -> list[int]:
        assert self.process is not None
        return sorted(_children(self.process.pid))

    def live_workers(self) -> list[int]:
        """The workers the parent printed as ready and that are its children now."""
        ready = {int(m.group(2)) for m in READY.finditer(self.full_log())}
        return sorted(set(self.children()) & ready)

    def wait_workers(self, timeout: float = 90) -> list[int]:
        return wait_for(
            lambda: len(pids := self.live_workers()) == self.workers and pids,
            timeout=timeout,
            what=f"{self.workers} workers ready: {self.full_log()[-3000:]}",
        )


@dataclass
class Workers(WorkersMixin, Controller):
    workers: int = 2


@dataclass
class HttpsWorkers(WorkersMixin, HttpsController):
    workers: int = 2


@pytest.fixture
def database(postgres_template: str) -> Iterator[str]:
    name = databases.create_database(template=postgres_template)  # migrated, nothing else
    yield databases.url_for(name)
    databases.drop_database(name)


def _env(url: str) -> dict[str, str]:
    return {
        "VOIPCLOUD_DATABASE_URL": url,
        # beats every 5 s: a push must come from the commit's notification, not a sweep
        "VOIPCLOUD_HEARTBEAT_INTERVAL": "5",
    }


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, int, bytes]:
    """(the connection's local port, status, body) of one request on a fresh connection,
    left open until the answer is read (so its holder can be looked up meanwhile)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.connect()
    assert conn.sock is not None
    local = conn.sock.getsockname()[1]
    conn.request("GET", path, headers=headers or {})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return local, answer.status, body


def _spread(controller: Workers, pids: list[int], connections: int = 40) -> dict[int, int]:
    """Open connections (held open together), ask /healthz on each: how many each worker
    answered."""
    held: list[tuple[socket.socket, int]] = []
    counts: dict[int, int] = {}
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", controller.port), timeout=20)
            held.append((sock, sock.getsockname()[1]))
        for sock, _local in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for sock, local in held:
            assert sock.recv(64).startswith(b"HTTP/1.1 200"), local
        found = _holders(controller.port, [local for _sock, local in held], pids)
        assert None not in found, f"connections no worker holds: {found}"
        for holder in found:
            assert holder is not None
            counts[holder] = counts.get(holder, 0) + 1
    finally:
        for sock, _local in held:
            sock.close()
    return counts


def _agent_holder(controller: Workers, agent: AgentProcess, pids: list[int]) -> int | None:
    assert agent.process is not None
    for port in _client_ports(agent.process.pid, controller.port):
        holder = _holder(controller.port, port, pids)
        if holder is not None:
            return holder
    return None


def _activate_through(controller: Workers, token: str, node_id: int, worker: int) -> None:
    """POST the activation on a connection the given worker holds (new connections until
    the kernel hands one to it)."""
    for _ in range(100):
        conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=20)
        conn.connect()
        assert conn.sock is not None
        held_by = _holder(controller.port, conn.sock.getsockname()[1], [worker])
        if held_by != worker:
            conn.close()
            continue
        conn.request(
            "POST",
            f"/api/v1/nodes/{node_id}/actions/activate",
            headers={"Authorization": f"Bearer {token}"},
        )
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        assert answer.status == 200, body
        return
    raise AssertionError(f"no connection of 100 went to worker {worker}")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone too
    except FileNotFoundError:
        return True


@pytest.mark.postgres
@pytest.mark.fault
def test_workers_share_one_address(tmp_path: Path, database: str) -> None:
    controller = Workers(data_dir=tmp_path / "controller", env=_env(database))
    agents: list[AgentProcess] = []
    try:
        controller.start()
        pids = controller.wait_workers()
        assert len(set(pids)) == 2
        assert controller.children() == pids  # the parent's children are its workers
        # forked from the parent after it imported the application: most of each worker's
        # start-up pages are shared with the parent and the other worker (about 70 MiB),
        # against 29 MiB of shared libraries when each worker imported it itself
        assert all(_shared_mib(pid) > 40 for pid in pids), [_shared_mib(p) for p in pids]

        # the kernel spreads new connections over both workers
        counts = _spread(controller, pids)
        assert set(counts) == set(pids), counts

        # real agents; each is activated through a request the *other* worker serves
        admin = controller.admin()
        token = admin.headers["Authorization"].removeprefix("Bearer ")
        ids: list[int] = []
        for n in range(4):
            node_id, key = add_node_with_roles(admin, f"wk-{n}", ["wk"])
            ids.append(node_id)
            agents.append(
                AgentProcess(
                    controller_url=controller.url,
                    session_key=key,
                    state_dir=tmp_path / f"agent-{n}",
                ).start()
            )
        holders = {
            n: wait_for(
                lambda a=agent: _agent_holder(controller, a, pids),  # type: ignore[misc]
                timeout=60,
                what=f"agent {n}'s channel held by a worker",
            )
            for n, agent in enumerate(agents)
        }
        for n, node_id in enumerate(ids):
            wait_for(
                lambda i=node_id: node(admin, i)["connectivity"] == "connected",  # type: ignore[misc]
                timeout=60,
                what=f"node {node_id} connected",
            )
            other = next(p for p in pids if p != holders[n])
            _activate_through(controller, token, node_id, other)
            assert wait_status(admin, node_id, "Online", timeout=20)["status"] == "Online"

        # a worker killed with SIGKILL is started again; its agents come back
        victim = pids[0]
        moved = [n for n, holder in holders.items() if holder == victim]
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(
            lambda: len(now := controller.live_workers()) == 2 and victim not in now and now,
            timeout=90,
            what=f"the parent to start worker pid {victim} again: {controller.log()}",
        )
        assert f"(pid {victim}) was killed by SIGKILL" in controller.full_log()
        assert pids[1] in restarted  # the other worker was left alone
        for n in moved or list(holders):
            wait_for(
                lambda a=agents[n]: _agent_holder(controller, a, restarted),  # type: ignore[misc]
                timeout=60,
                what=f"agent {n} to reconnect to a live worker",
            )
            wait_for(
                lambda i=ids[n]: node(admin, i)["connectivity"] == "connected",  # type: ignore[misc]
                timeout=60,
                what=f"node {ids[n]} connected again",
            )
        assert _spread(controller, restarted).keys() == set(restarted)

        # SIGTERM to the parent stops every worker it ever started, and itself with 0
        everyone = controller.started_pids()
        assert len(everyone) == 3
        for agent in agents:
            agent.stop()
        assert controller.process is not None
        controller.process.send_signal(signal.SIGTERM)
        assert controller.process.wait(timeout=60) == 0
        assert all(_gone(pid) for pid in everyone), everyone
        assert "every worker stopped" in controller.full_log()
    finally:
        for agent in agents:
            agent.stop()
        controller.stop()


@pytest.mark.postgres
def test_workers_serve_https_and_one_ic_agent(tmp_path: Path, database: str) -> None:
    controller = HttpsWorkers(
        data_dir=tmp_path / "controller",
        env={**_env(database), "VOIPCLOUD_TLS": "on"},
        ic_agent=True,
    )
    try:
        controller.start()
        pids = controller.wait_workers()
        # one CA and one server certificate, made by the parent; each worker presents it
        leaf = (controller.data_dir / "tls" / "server.pem").read_bytes()
        context = controller.verify()
        seen: set[int] = set()
        for _ in range(60):
            with (
                socket.create_connection(("127.0.0.1", controller.port), timeout=20) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
            ):
                holder = _holder(controller.port, tls_sock.getsockname()[1], pids)
                presented = tls_sock.getpeercert(binary_form=True)
                assert presented is not None
                assert ssl.DER_cert_to_PEM_cert(presented).encode().strip() in leaf
                if holder is not None:
                    seen.add(holder)
            if seen == set(pids):
                break
        assert seen == set(pids)

        # the IC node's agent: one, in a child of its own, connected through the shared port
        admin = controller.admin()
        assert controller.process is not None
        parent = controller.process.pid
        wait_for(
            lambda: node(admin, 1)["connectivity"] == "connected",
            timeout=90,
            what=f"the IC node's agent connected: {controller.log()}",
        )
        agents = [int(m.group(1)) for m in IC_AGENT.finditer(controller.full_log())]
        assert len(agents) == 1, controller.full_log()[-3000:]
        assert controller.children() == sorted([*pids, agents[0]])
        assert _client_ports(agents[0], controller.port), "the IC agent holds no channel"
        for pid in [parent, *pids]:
            assert not _client_ports(pid, controller.port), f"pid {pid} runs an agent"

        # the agent's process killed: the parent starts it again, and it connects again
        os.kill(agents[0], signal.SIGKILL)
        again = wait_for(
            lambda: len(found := IC_AGENT.findall(controller.full_log())) == 2 and int(found[1]),
            timeout=30,
            what=f"the IC agent started again: {controller.full_log()[-3000:]}",
        )
        wait_for(
            lambda: bool(_client_ports(again, controller.port)),
            timeout=60,
            what="the new IC agent's channel",
        )
    finally:
        controller.stop()


def test_workers_refused_on_sqlite(tmp_path: Path) -> None:
    env = {**os.environ, "VOIPCLOUD_DATA_DIR": str(tmp_path / "data")}
    env.pop("VOIPCLOUD_DATABASE_URL", None)
    for argv, extra in (
        (["--workers", "2"], {}),
        ([], {"VOIPCLOUD_WORKERS": "3"}),
    ):
        done = subprocess.run(
            [voipcloud_executable(), "serve", "--port", str(free_port()), *argv],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, done.stderr
        assert "needs PostgreSQL" in done.stderr, done.stderr
        assert "SQLite" in done.stderr, done.stderr
        assert "one writer" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "controller.lock").exists()  # refused before anything


def test_workers_refuses_a_taken_port(tmp_path: Path) -> None:
    """Another listener on the port: refused as `serve` is, not joined silently."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = subprocess.run(
            [voipcloud_executable(), "serve", "--port", str(port), "--workers", "2"],
            env={
                **os.environ,
                "VOIPCLOUD_DATA_DIR": str(tmp_path / "data"),
                "VOIPCLOUD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr


@pytest.mark.fault
def test_workers_dying_at_start_make_the_parent_give_up(tmp_path: Path) -> None:
    """Every worker killed before it is ready: restarted with a growing delay, then the parent
    stops the others and exits 1 (a process manager sees a failed start, not a loop)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log_path = data_dir / "serve.log"
    env = {
        **os.environ,
        "VOIPCLOUD_DATA_DIR": str(data_dir),
        # nothing answers there: the parent and the workers start anyway (503 until it does)
        "VOIPCLOUD_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    port = free_port()
    with log_path.open("ab") as log:
        parent = subprocess.Popen(
            [voipcloud_executable(), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    killed: set[int] = set()
    try:

        def kill_new_worker_one() -> int | None:
            text = log_path.read_text(errors="replace")
            for match in STARTED.finditer(text):
                pid = int(match.group(2))
                if match.group(1) == "1" and pid not in killed:
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)  # before it could be ready
            return parent.poll()

        code = wait_for(
            lambda: (c := kill_new_worker_one()) is not None and (c,),
            timeout=120,
            interval=0.01,
            what="the parent to give up",
        )[0]
        text = log_path.read_text(errors="replace")
        assert code == 1, text[-3000:]
        assert len(killed) == 5, text[-3000:]  # RestartPolicy.give_up_after
        assert "5 times in a row: giving up" in text
        assert "a worker keeps dying before it is ready" in text
        delays = [float(d) for d in re.findall(r"starting it again in ([\d.]+) s", text)]
        assert delays[:4] == [0.5, 1.0, 2.0, 4.0], delays
        worker_two = [int(m.group(2)) for m in STARTED.finditer(text) if m.group(1) == "2"]
        assert len(worker_two) == 1  # the healthy slot was never restarted
        assert all(_gone(pid) for pid in [*killed, *worker_two])
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
