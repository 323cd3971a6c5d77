"""Misbehaving clients against a real `voipcloud serve`: huge or many headers, long request
lines, slow and idle connections. None of them may hold the server: `/healthz` keeps answering
fast and an agent's WebSocket channel keeps beating (docs/reliability.md, "Misbehaving
clients"; voipcloud.api.server).

The controller runs with short timeouts so that the test is quick: a request head must arrive
within 3 s, an idle connection is closed after 2 s, a stalled body after 3 s.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.processes import AgentProcess, Controller, node, wait_for

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 3.0
KEEP_ALIVE = 2
BODY_TIMEOUT = 3.0
MAX_HEADER_BYTES = 65_536
MAX_HEADERS = 100
MAX_REQUEST_LINE = 8192


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    data_dir = tmp_path_factory.mktemp("misbehaving") / "controller"
    controller = Controller(
        data_dir=data_dir,
        env={
            "VOIPCLOUD_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "VOIPCLOUD_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
            "VOIPCLOUD_BODY_TIMEOUT": str(BODY_TIMEOUT),
        },
    ).start()
    yield controller
    controller.stop()


def _connect(controller: Controller, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", controller.port), timeout=timeout)


def exchange(controller: Controller, data: bytes, *, timeout: float = 10.0) -> str:
    """Send `data` on a new connection; the answer's status line, or "closed" if the server
    shut the connection without one (while we were still sending, say)."""
    with _connect(controller, timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close while we still send
            sock.sendall(data)
        try:
            answer = sock.recv(4096)
        except OSError:
            return "closed"
    if not answer:
        return "closed"
    return answer.split(b"\r\n", 1)[0].decode("ascii", "replace")


def head(target: str = "/healthz", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def timed_close(sock: socket.socket, *, limit: float) -> tuple[float, bytes]:
    """Wait (at most `limit` s) for the server to answer or close; (seconds, what came)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s")
    except OSError:
        pass
    return time.monotonic() - started, received


# --- limits on the request head ---------------------------------------------------------------


def test_many_headers_are_refused(served: Controller) -> None:
    many = [(f"X-Small-{i}", "y") for i in range(10_000)]
    assert exchange(served, head(headers=many)) in (
        "HTTP/1.1 431 Request Header Fields Too Large",
        "closed",
    )
    over = [(f"X-Small-{i}", "y") for i in range(MAX_HEADERS)]  # with Host: one too many
    assert exchange(served, head(headers=over)).startswith("HTTP/1.1 431")
    at_limit = [(f"X-Small-{i}", "y") for i in range(MAX_HEADERS - 1)]
    assert exchange(served, head(headers=at_limit)) == "HTTP/1.1 200 OK"


def test_oversized_head_is_refused(served: Controller) -> None:
    # in one piece (the server reads it at once) and spread over many reads
    big = [("X-Big", "b" * (MAX_HEADER_BYTES + 10))]
    assert exchange(served, head(headers=big)).startswith("HTTP/1.1 431")
    several = [(f"X-Part-{i}", "p" * 8000) for i in range(9)]
    assert exchange(served, head(headers=several)).startswith("HTTP/1.1 431")
    just_under = [(f"X-Part-{i}", "p" * 8000) for i in range(7)]
    assert exchange(served, head(headers=just_under)) == "HTTP/1.1 200 OK"


def test_overlong_request_line_is_refused(served: Controller) -> None:
    long_target = "/healthz?pad=" + "a" * MAX_REQUEST_LINE
    assert exchange(served, head(long_target)).startswith("HTTP/1.1 414")
    fine = "/healthz?pad=" + "a" * (MAX_REQUEST_LINE - 100)
    assert exchange(served, head(fine)) == "HTTP/1.1 200 OK"


def test_normal_requests_with_realistic_headers_work(served: Controller) -> None:
    admin = served.admin()
    token = admin.headers["Authorization"]
    admin.close()
    realistic = {
        "Authorization": token,
        "Cookie": "; ".join(f"pref{i}={'c' * 90}" for i in range(60)),  # about 6 KiB
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari",
        "Accept": "application/json, text/plain, */*",
        "Accept-Language": "en-GB,en;q=0.9,de;q=0.8",
        "X-Request-Id": "r" * 64,
        "X-Forwarded-For": ", ".join(f"10.0.{i}.1" for i in range(40)),
        "Traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "X-Long-Bearer-Like": "Bearer " + "t" * 2048,
    }
    size = sum(len(k) + len(v) + 4 for k, v in realistic.items())
    assert 8 * 1024 <= size < MAX_HEADER_BYTES
    with httpx.Client(base_url=served.url, timeout=10, headers=realistic) as client:
        for _ in range(3):  # keep-alive: one connection, several requests
            listing = client.get("/api/v1/nodes", params={"limit": 5})
            assert listing.status_code == 200, listing.text
        created = client.post(
            "/api/v1/nodes", json={"hostname": "realistic-headers", "private_ip": "10.9.0.1"}
        )
        assert created.status_code == 201, created.text
        # a pause shorter than the keep-alive time keeps the connection
        time.sleep(KEEP_ALIVE / 2)
        assert client.get("/healthz").status_code == 200


# --- slow and idle connections -----------------------------------------------------------------


def test_slow_connections_are_closed_after_the_configured_time(served: Controller) -> None:
    # slowloris: a byte a second, never finishing the head
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")

        def drip() -> None:
            for _ in range(int(HEADER_TIMEOUT * 3)):
                try:
                    sock.send(b"a")
                except OSError:
                    return
                time.sleep(1)

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        waited, answer = timed_close(sock, limit=HEADER_TIMEOUT * 3)
        dripping.join(timeout=HEADER_TIMEOUT * 3 + 2)
    assert HEADER_TIMEOUT - 0.5 <= waited <= HEADER_TIMEOUT + 1.5, waited
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    # idle: connected, nothing sent
    with _connect(served) as sock:
        waited, answer = timed_close(sock, limit=KEEP_ALIVE * 4)
    assert KEEP_ALIVE - 0.5 <= waited <= KEEP_ALIVE + 1.5, waited
    assert answer == b""
    # idle after a response (keep-alive)
    with _connect(served) as sock:
        sock.sendall(head())
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first[:80]
        waited, answer = timed_close(sock, limit=KEEP_ALIVE * 4)
    assert waited <= KEEP_ALIVE + 1.5, waited
    # a body that stops arriving
    with _connect(served) as sock:
        sock.sendall(
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        waited, answer = timed_close(sock, limit=BODY_TIMEOUT * 4)
    assert BODY_TIMEOUT - 0.5 <= waited <= BODY_TIMEOUT + 1.5, waited
    # a slow but steady client that completes its head in time is served
    with _connect(served) as sock:
        request = head()
        for i in range(0, len(request), 8):
            sock.sendall(request[i : i + 8])
            time.sleep(HEADER_TIMEOUT / 2 / (len(request) / 8))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


# --- everything at once, with an agent on its channel ------------------------------------------


@dataclass
class Attack:
    controller: Controller
    stop: threading.Event = field(default_factory=threading.Event)
    big_sent: int = 0
    big_answer: str = ""
    slow_closed: int = 0  # slowloris connections the server closed
    idle_closed: int = 0
    errors: list[str] = field(default_factory=list)

    def big_header(self) -> None:
        """One 100 MiB header, sent until the server closes the connection."""
        total = 100 * 1024 * 1024
        chunk = b"h" * 65_536
        try:
            with _connect(self.controller, timeout=30) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: ")
                while self.big_sent < total and not self.stop.is_set():
                    sock.sendall(chunk)
                    self.big_sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
                self.big_answer = sock.recv(200).split(b"\r\n")[0].decode()
        except OSError as exc:
            self.big_answer = f"closed ({type(exc).__name__})"

    def slowloris(self) -> None:
        """A request head sent a byte a second; reconnects whenever the server closes it."""
        while not self.stop.is_set():
            try:
                with _connect(self.controller) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    while not self.stop.wait(1.0):
                        sock.send(b"s")
            except OSError:
                self.slow_closed += 1
                self.stop.wait(0.1)

    def idle(self) -> None:
        """An open connection that sends nothing; reconnects whenever the server closes it."""
        while not self.stop.is_set():
            try:
                with _connect(self.controller) as sock:
                    sock.settimeout(0.5)
                    while not self.stop.is_set():
                        try:
                            if sock.recv(1) == b"":
                                self.idle_closed += 1
                                break
                        except TimeoutError:
                            continue
            except OSError as exc:
                self.errors.append(repr(exc))
                self.stop.wait(0.1)


def _channel_opens(agent: AgentProcess) -> int:
    return agent.log().count("channel open")


@pytest.mark.fault
def test_healthz_and_agent_channel_unharmed_by_a_huge_header_and_slow_clients(
    served: Controller, tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = served.admin()
    created = admin.post(
        "/api/v1/nodes",
        json={"hostname": "beating-agent", "private_ip": "10.9.0.2", "public_ip": "203.0.113.9"},
    )
    assert created.status_code == 201, created.text
    node_id = created.json()["node_id"]
    assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"})
    assert assigned.status_code == 201, assigned.text
    agent = start_agent(served, assigned.json()["session_key"], name="beating")
    wait_for(
        lambda: node(admin, node_id)["connectivity"] == "connected",
        what="the agent to connect",
    )
    opens_before = _channel_opens(agent)
    seen_before = node(admin, node_id)["last_seen"]

    attack = Attack(served)
    threads = [threading.Thread(target=attack.big_header, daemon=True)]
    threads += [threading.Thread(target=attack.slowloris, daemon=True) for _ in range(25)]
    threads += [threading.Thread(target=attack.idle, daemon=True) for _ in range(25)]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    connectivity: list[str] = []
    duration = HEADER_TIMEOUT * 3  # long enough for every slow connection to be cut
    try:
        with httpx.Client(base_url=served.url, timeout=10) as probe:
            started = time.monotonic()
            next_status = started
            while time.monotonic() - started < duration:
                begun = time.perf_counter()
                answer = probe.get("/healthz")
                latencies.append(time.perf_counter() - begun)
                assert answer.status_code == 200
                if time.monotonic() >= next_status:
                    connectivity.append(node(admin, node_id)["connectivity"])
                    next_status += 1.0
                time.sleep(0.05)
    finally:
        attack.stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)

    print(
        f"\n/healthz under attack: {len(latencies)} probes, median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
        f"huge header cut after {attack.big_sent} bytes ({attack.big_answer}); "
        f"{attack.slow_closed} slowloris and {attack.idle_closed} idle connections closed"
    )
    # /healthz answered within 100 ms: every probe but scheduler noise (one in twenty at
    # most, none above half a second; before the limits one probe waited about 16 s)
    slow = [lat for lat in latencies if lat > 0.1]
    assert len(latencies) >= 50, len(latencies)
    assert len(slow) <= len(latencies) // 20, (len(slow), sorted(latencies)[-5:])
    assert max(latencies) < 0.5, sorted(latencies)[-5:]
    assert statistics.median(latencies) < 0.05
    # the huge header was cut off early, and the slow clients were cut by the server
    assert attack.big_sent <= 8 * 1024 * 1024, attack.big_sent
    assert attack.big_answer.startswith(("HTTP/1.1 431", "closed")), attack.big_answer
    assert attack.slow_closed >= 25, attack.slow_closed
    assert attack.idle_closed >= 25, attack.idle_closed
    # the agent's channel stayed open and beating throughout
    assert set(connectivity) == {"connected"}, connectivity
    assert _channel_opens(agent) == opens_before
    assert agent.process is not None
    assert agent.process.poll() is None
    wait_for(
        lambda: node(admin, node_id)["last_seen"] != seen_before,
        timeout=5,
        what="a heartbeat recorded after the attack started",
    )
    admin.close()
