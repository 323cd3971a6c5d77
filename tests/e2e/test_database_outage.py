"""A database outage is answered, not crashed on: 503 JSON with Retry-After on the API, the
"database unavailable" page on the web, one line and exit code 7 on the CLI, the agent channel
closed with 1013; keep-alive connections stay usable and a real `voipcloud serve` recovers by
itself, with nothing half-applied.

Faults, all real: a private PostgreSQL stopped with `pg_ctl -m immediate stop` (the shared one
is never touched), a SQLite file on a tmpfs filled to the last byte, and a SQLite directory
bind-mounted read-only (root is not stopped by file modes). Needs root for mount.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import ADMIN_PASSWORD, Controller, wait_for
from tests.support.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
API = "/api/v1"
UNAVAILABLE_EXIT = 7
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


# --- the faults --------------------------------------------------------------------------------


def _as_postgres(command: str) -> None:
    subprocess.run(
        ["su", "postgres", "-s", "/bin/sh", "-c", command],
        check=True,
        timeout=60,
        capture_output=True,
    )


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test only, on a free port of 127.0.0.1."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        _as_postgres(
            f"{PG_BIN}/pg_ctl -D {self.root}/data -w -t 30 -l {self.root}/log "
            f"-o '-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1' start"
        )

    def crash(self) -> None:
        """The outage: stop at once, without a clean shutdown (like a killed server)."""
        _as_postgres(f"{PG_BIN}/pg_ctl -D {self.root}/data -m immediate -w stop")

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="voipcloud-pg-", dir="/tmp"))
    root.chmod(0o755)
    shutil.chown(root, "postgres")
    _as_postgres(f"{PG_BIN}/initdb -D {root}/data -A trust -U postgres")
    server = PrivatePostgres(root=root, port=free_port())
    server.start()
    try:
        yield server
    finally:
        if server.running():
            server.crash()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="voipcloud-tmpfs-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; delete it to free the space."""
    pad = directory / "pad"
    # unbuffered, and the suppress outside the file: closing a buffered file on a full disk
    # flushes what is left and fails again (ENOSPC) after the loop
    with contextlib.suppress(OSError), pad.open("wb", buffering=0) as out:
        for _ in range(1_000_000):  # bounded: 64 GiB, far past any test tmpfs
            out.write(b"\0" * 65536)
    return pad


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only for everyone, root included, until the block ends."""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        # writable again under the files the controller holds open, then detach the bind
        subprocess.run(["mount", "-o", "remount,bind,rw", str(directory)], check=True)
        subprocess.run(["umount", "-l", str(directory)], check=True)


# --- clients -----------------------------------------------------------------------------------


class KeepAlive:
    """One HTTP/1.1 connection, checked to stay the same socket from request to request."""

    def __init__(self, url: str, token: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.connect()
        self.sock = self.conn.sock
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        payload = None if body is None else json.dumps(body)
        sent = {**self.headers, **(headers or {})}
        if payload is not None:
            sent["Content-Type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=sent)
        answer = self.conn.getresponse()
        data = answer.read()
        assert not answer.will_close, f"the server closes the connection after {answer.status}"
        assert self.conn.sock is self.sock, "the client had to open a new connection"
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def assert_unavailable(status: int, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    assert status == 503, (status, data[:300])
    assert headers["content-type"].startswith("application/json"), headers
    assert int(headers["retry-after"]) > 0
    body: dict[str, Any] = json.loads(data)
    assert body["rule"] == "database-unavailable", body
    assert "database is unavailable" in body["detail"], body
    return body


def web_login(url: str) -> httpx.Client:
    """A browser-like client signed in through the login form."""
    web = httpx.Client(base_url=url, timeout=30, headers={"Accept": "text/html"})
    web.get("/login").raise_for_status()
    csrf = web.cookies.get("voipcloud_login_csrf")
    answer = web.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf}
    )
    assert answer.status_code == 303, answer.text[:300]
    return web


def token_of(url: str) -> str:
    answer = httpx.post(
        f"{url}{API}/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def outage_lines(controller: Controller) -> tuple[int, int]:
    log = controller.log_path.read_text(errors="replace") if controller.log_path else ""
    assert "Traceback" not in log, log[-3000:]
    return log.count("database unavailable ("), log.count("database answers again")


def start_controller(tmp_path: Path, database_url: str) -> Controller:
    return Controller(
        data_dir=tmp_path / "controller", env={"VOIPCLOUD_DATABASE_URL": database_url}
    ).start()


# --- PostgreSQL stopped under a running controller --------------------------------------------


@needs_root
def administrators_events(api: KeepAlive) -> list[dict[str, Any]]:
    """The event history without the agent lost/back watch's events, newest first."""
    status, _, data = api.request("GET", f"{API}/events?limit=200")
    assert status == 200, data
    return [
        e for e in json.loads(data)["items"] if e["operation"] not in ("agent-lost", "agent-back")
    ]


def test_postgres_outage_is_answered_and_recovered_from(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    controller = start_controller(tmp_path, private_postgres.url)
    cli = Cli(tmp_path / "cli")
    try:
        token = token_of(controller.url)
        api = KeepAlive(controller.url, token)
        status, _, data = api.request(
            "POST", f"{API}/nodes", {"hostname": "before", "private_ip": "10.0.0.1"}
        )
        assert status == 201, data
        node = json.loads(data)
        status, _, data = api.request(
            "POST", f"{API}/nodes/{node['node_id']}/roles", {"role": "wk", "parameters": {}}
        )
        assert status == 201, data
        session_key = json.loads(data)["session_key"]
        joined = httpx.post(
            f"{controller.url}{API}/agent/join",
            json={"session_key": session_key, "node_id": node["node_id"]},
        )
        assert joined.status_code == 200, joined.text
        agent_token = joined.json()["agent_token"]
        web = web_login(controller.url)
        cli.login(controller)
        # a fresh keep-alive connection for the outage: the two logins above may take longer
        # than uvicorn's 5 s idle timeout on a loaded machine, and it closes the first one
        api.close()
        api = KeepAlive(controller.url, token)
        events_before = administrators_events(api)

        private_postgres.crash()

        # the API: 503 JSON with Retry-After, on the same keep-alive connection, reads and writes
        for method, path, body in [
            ("GET", f"{API}/nodes", None),
            ("POST", f"{API}/nodes", {"hostname": "during", "private_ip": "10.0.0.2"}),
            ("GET", f"{API}/nodes/{node['node_id']}", None),
            ("POST", f"{API}/auth/token", {"username": "admin", "password": ADMIN_PASSWORD}),
            ("GET", "/readyz", None),
        ]:
            status, headers, data = api.request(method, path, body)
            if path == "/readyz":
                assert status == 503
                assert json.loads(data)["rule"] == "database-unavailable"
                assert "retry-after" in headers
            else:
                assert_unavailable(status, headers, data)
        assert api.request("GET", "/healthz")[0] == 200  # liveness: no database query

        # the web: the "database unavailable" page, 503
        page = web.get("/")
        assert page.status_code == 503, page.text[:300]
        assert "The database is unavailable" in page.text
        assert page.headers["retry-after"]
        login_page = httpx.post(
            f"{controller.url}/login",
            data={"username": "admin", "password": "x"},
            headers={"Accept": "text/html"},
        )
        assert login_page.status_code in (403, 503)  # no login CSRF cookie: refused first

        # the CLI: one line, its own exit code
        line = one_line_error(cli.fails(UNAVAILABLE_EXIT, "node", "list"))
        assert "unavailable" in line, line

        # the agent channel: closed with 1013 "try again later", not a crash
        ws_url = controller.url.replace("http://", "ws://") + f"{API}/agent/channel"
        with (
            connect(
                ws_url,
                additional_headers={"Authorization": f"Bearer {agent_token}"},
                open_timeout=10,
            ) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013

        # several rounds of the background loops, then recovery without a restart, watched
        # on one fresh keep-alive connection (uvicorn closes connections idle for 5 s)
        api = KeepAlive(controller.url, token)
        for _ in range(6):
            assert_unavailable(*api.request("GET", f"{API}/nodes"))
            time.sleep(0.5)
        private_postgres.start()

        def recovered() -> bool:
            status, headers, data = api.request("GET", f"{API}/nodes")
            if status == 503:
                assert_unavailable(status, headers, data)
            return status == 200

        wait_for(recovered, timeout=30, interval=0.5, what="the API to answer again")
        status, _, data = api.request(
            "POST", f"{API}/nodes", {"hostname": "after", "private_ip": "10.0.0.3"}
        )
        assert status == 201, data
        assert web.get("/").status_code == 200
        assert "after" in cli.ok("node", "list").stdout
        # the outage is over: a new connection for the rest (the web and CLI checks above may
        # outlast uvicorn's 5 s idle timeout on a loaded machine, which closes the old one)
        api.close()
        api = KeepAlive(controller.url, token)
        wait_for(lambda: api.request("GET", "/readyz")[0] == 200, timeout=15, what="ready")

        # nothing of the refused write stayed: one event more (the add after recovery)
        names = [n["hostname"] for n in json.loads(api.request("GET", f"{API}/nodes")[2])["items"]]
        assert "during" not in names
        assert "after" in names
        # (the node joined but runs no agent: the lost/back watch may record "agent-lost"
        # meanwhile, on a slow machine; that is the watch's event, not the refused write's)
        events_after = administrators_events(api)
        assert len(events_after) == len(events_before) + 1, events_after[
            : len(events_after) - len(events_before)
        ]
        assert events_after[0]["operation"] == "add-node"
        wait_for(lambda: outage_lines(controller)[1] >= 1, timeout=15, what="recovery logged")
        assert outage_lines(controller) == (1, 1)  # one line per outage, not one per second
        api.close()
        web.close()
    finally:
        controller.stop()


@needs_root
def test_postgres_down_at_start_then_ready_when_it_comes(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    private_postgres.crash()
    controller = start_controller(tmp_path, private_postgres.url)  # waits for /healthz 200
    try:
        ready = httpx.get(f"{controller.url}/readyz")
        assert ready.status_code == 503
        assert ready.headers["retry-after"]
        login = httpx.post(
            f"{controller.url}{API}/auth/token", json={"username": "admin", "password": "x"}
        )
        assert_unavailable(login.status_code, dict(login.headers), login.content)
        private_postgres.start()
        wait_for(
            lambda: httpx.get(f"{controller.url}/readyz").status_code == 200,
            timeout=30,
            interval=0.5,
            what="the controller to migrate and start once PostgreSQL answers",
        )
        assert token_of(controller.url)
    finally:
        controller.stop()


# --- SQLite: disk full, read-only ---------------------------------------------------------------


def _nodes_and_events(db_file: Path) -> tuple[list[str], int, str]:
    with contextlib.closing(sqlite3.connect(db_file)) as db:
        names = [r[0] for r in db.execute("SELECT hostname FROM nodes WHERE NOT is_controller")]
        adds = db.execute(
            "SELECT count(*) FROM events WHERE operation = 'add-node' AND actor != 'controller'"
        ).fetchone()[0]
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    return names, adds, check


@needs_root
def test_sqlite_on_a_full_disk(tmp_path: Path) -> None:
    with tmpfs("3m") as disk:
        db_file = disk / "voipcloud.sqlite3"
        controller = start_controller(tmp_path, f"sqlite+pysqlite:///{db_file}")
        try:
            api = KeepAlive(controller.url, token_of(controller.url))
            pad = fill(disk)
            refused = None
            for i in range(400):  # each add appends pages to the WAL: it runs out of room
                status, headers, data = api.request(
                    "POST", f"{API}/nodes", {"hostname": f"full-{i}", "private_ip": "10.0.0.9"}
                )
                if status != 201:
                    assert_unavailable(status, headers, data)
                    refused = f"full-{i}"
                    break
            assert refused is not None, "the full disk never refused a write"
            assert api.request("GET", "/healthz")[0] == 200
            pad.unlink()

            def written() -> bool:
                status = api.request(
                    "POST", f"{API}/nodes", {"hostname": "freed", "private_ip": "10.0.0.9"}
                )[0]
                assert status in (201, 503), status
                return status == 201

            wait_for(written, timeout=30, interval=0.5, what="a write once space is free")
            controller.stop()  # checkpoint, then look at the file itself
            names, adds, check = _nodes_and_events(db_file)
            assert check == "ok"
            assert refused not in names
            assert "freed" in names
            assert adds == len(names)  # every node has its event, no event without its node
            assert outage_lines(controller)[0] <= 1
            api.close()
        finally:
            controller.stop()


@needs_root
def test_postgres_turned_read_only_while_running(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    """Like a failover onto a standby: every new transaction is read-only (SQLSTATE 25006)."""
    controller = start_controller(tmp_path, private_postgres.url)
    admin = sa.create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")

    def read_only_mode(on: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}"
            )
            conn.exec_driver_sql("SELECT pg_reload_conf()")

    try:
        api = KeepAlive(controller.url, token_of(controller.url))
        read_only_mode(True)
        answers: list[tuple[int, dict[str, str], bytes]] = []

        def refused() -> bool:  # the reload reaches every session within moments
            answers.append(
                api.request(
                    "POST",
                    f"{API}/nodes",
                    {"hostname": f"ro-write-{len(answers)}", "private_ip": "10.0.0.9"},
                )
            )
            assert answers[-1][0] in (201, 503), answers[-1]
            return answers[-1][0] == 503

        wait_for(refused, timeout=15, interval=0.2, what="writes refused once read-only")
        assert [a[0] for a in answers].count(201) <= 1  # at most one write before the reload
        body = assert_unavailable(*answers[-1])
        assert "read-only" in body["detail"]
        assert api.request("GET", f"{API}/nodes")[0] == 200  # reads still work
        read_only_mode(False)

        def written() -> bool:
            status = api.request(
                "POST", f"{API}/nodes", {"hostname": "rw-again", "private_ip": "10.0.0.9"}
            )[0]
            assert status in (201, 503), status
            return status == 201

        wait_for(written, timeout=15, interval=0.2, what="a write once writable again")
        names = [n["hostname"] for n in json.loads(api.request("GET", f"{API}/nodes")[2])["items"]]
        written = [n for n in names if n.startswith("ro-write")]
        assert len(written) == [a[0] for a in answers].count(201)  # nothing partial
        assert "rw-again" in names
        api.close()
    finally:
        admin.dispose()
        controller.stop()


@needs_root
def test_controller_started_on_a_read_only_database(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    directory.mkdir()
    url = f"sqlite+pysqlite:///{directory / 'voipcloud.sqlite3'}"
    start_controller(tmp_path, url).stop()  # a migrated database with its admin
    with read_only(directory):
        controller = start_controller(tmp_path, url)  # waits for /healthz 200
        try:
            assert httpx.get(f"{controller.url}/healthz").status_code == 200
            ready = httpx.get(f"{controller.url}/readyz")
            assert ready.status_code == 503, ready.text
            login = httpx.post(
                f"{controller.url}{API}/auth/token",
                json={"username": "admin", "password": ADMIN_PASSWORD},
            )
            assert_unavailable(login.status_code, dict(login.headers), login.content)
            web = httpx.post(
                f"{controller.url}/login", headers={"Accept": "text/html"}, data={"username": "a"}
            )
            assert web.status_code in (403, 503)
        except BaseException:
            controller.stop()
            raise
    try:
        # writable again: the controller finishes starting by itself
        wait_for(
            lambda: httpx.get(f"{controller.url}/readyz").status_code == 200,
            timeout=30,
            interval=0.5,
            what="ready once the database is writable",
        )
        api = KeepAlive(controller.url, token_of(controller.url))
        status, _, data = api.request(
            "POST", f"{API}/nodes", {"hostname": "writable", "private_ip": "10.0.0.9"}
        )
        assert status == 201, data
        api.close()
        controller.stop()
        names, adds, check = _nodes_and_events(directory / "voipcloud.sqlite3")
        assert check == "ok"
        assert names == ["writable"]
        assert adds == 1
        assert outage_lines(controller) == (1, 1)
    finally:
        controller.stop()
