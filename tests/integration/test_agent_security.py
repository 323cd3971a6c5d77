"""The agent's side door, attacked over real HTTP and WebSocket on SQLite and PostgreSQL.

SPEC.md section 1 (security rule) and section 8: an agent joins with its node's session key,
gets a credential for that node only, and can neither read nor report for another node.
Bad credentials and garbage payloads are refused with 4xx answers or close codes (4401
credential refused, 4410 node deleted, 1008 policy, 1009 too big), never a 500.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import LiveApi, login, make_settings
from tests.support import databases
from tests.support.server import free_port
from voipcloud import protocol
from voipcloud.api.app import create_app
from voipcloud.services.agents import REFUSAL_EVENTS_PER_MINUTE
from voipcloud.store.database import sqlite_url

API = "/api/v1"
CHANNEL = f"{API}/agent/channel"
MASK = "********"
QUEUE_PASSWORD = "queue-pass-Zx81-not-masked"
_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A fresh hostname: the garbage tests share one server per database."""
    return f"{prefix}-{next(_names)}"


# helpers
def expect(answer: httpx.Response, status: int) -> Any:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    return answer.json() if answer.content else None


def add_node(client: httpx.Client, hostname: str, **extra: str) -> int:
    body = {"hostname": hostname, "private_ip": "10.0.0.21", **extra}
    return int(expect(client.post(f"{API}/nodes", json=body), 201)["node_id"])


def assign(client: httpx.Client, node_id: int, role: str, **parameters: Any) -> str:
    answer = client.post(
        f"{API}/nodes/{node_id}/roles", json={"role": role, "parameters": parameters}
    )
    key = expect(answer, 201)["session_key"]
    assert key
    return str(key)


def node(client: httpx.Client, node_id: int) -> dict[str, Any]:
    data: dict[str, Any] = expect(client.get(f"{API}/nodes/{node_id}"), 200)
    return data


def node_events(client: httpx.Client, node_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = expect(
        client.get(f"{API}/nodes/{node_id}/events", params={"limit": 500}), 200
    )["items"]
    return items


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = expect(client.get(f"{API}/events", params={"limit": 500}), 200)[
        "items"
    ]
    return items


def join_raw(api: LiveApi, **kwargs: Any) -> httpx.Response:
    with api.anonymous() as anon:
        return anon.post(f"{API}/agent/join", **kwargs)


def join(api: LiveApi, session_key: str, **extra: Any) -> httpx.Response:
    return join_raw(api, json={"session_key": session_key, **extra})


def joined_token(api: LiveApi, session_key: str) -> str:
    answer = expect(join(api, session_key), 200)
    return str(answer["agent_token"])


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://", 1) + CHANNEL + query


@contextmanager
def channel(
    base_url: str, token: str | None = None, *, header: str | None = None, query: str = ""
) -> Iterator[ClientConnection]:
    """A raw WebSocket to the agent channel; `header` overrides the Authorization value."""
    value = header if header is not None else (f"Bearer {token}" if token else None)
    headers = {"Authorization": value} if value is not None else None
    with connect(
        ws_url(base_url, query),
        additional_headers=headers,
        open_timeout=5,
        close_timeout=2,
        max_size=protocol.MAX_MESSAGE_BYTES,
    ) as ws:
        yield ws


def receive(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """The next message of this type, skipping others (desired states interleave with acks)."""
    deadline = time.monotonic() + timeout
    for _ in range(50):
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} message within {timeout} s"
        message: dict[str, Any] = json.loads(ws.recv(timeout=left))
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message among 50")


def close_code(ws: ClientConnection, timeout: float = 5) -> int | None:
    """Read until the server closes the channel; the code it closed with."""
    deadline = time.monotonic() + timeout
    for _ in range(50):
        left = deadline - time.monotonic()
        assert left > 0, f"the server did not close the channel within {timeout} s"
        try:
            ws.recv(timeout=left)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the server kept talking instead of closing")


def refused_joins(client: httpx.Client) -> list[dict[str, Any]]:
    return [e for e in all_events(client) if e["operation"] == "agent-join-refused"]


def stable_view(client: httpx.Client, node_id: int) -> dict[str, Any]:
    """The node as the administrator sees it, less what an agent's presence moves."""
    data = node(client, node_id)
    for moving in ("last_seen", "connectivity"):
        data.pop(moving)
    return data


# joining
def test_happy_path_desired_state_reveals_secrets_and_beats_show_connected(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "queue-01")
    key = assign(c, nid, "que", password=QUEUE_PASSWORD)
    admin_view = node(c, nid)
    assert admin_view["assignments"][0]["parameters"]["password"]["value"] == MASK
    assert admin_view["connectivity"] == "never"

    inventory = {
        "os": "Debian 12",
        "kernel": "6.1.0-test",
        "version": "9.9.9",
        "components": [{"name": "rabbitmq", "version": "3.12"}],
    }
    answer = expect(join(api, key, inventory=inventory), 200)
    assert answer["node_id"] == nid
    assert answer["heartbeat_interval"] == api.settings.heartbeat_interval
    assert len(answer["agent_token"]) >= 32
    assert "agent-joined" in [e["operation"] for e in node_events(c, nid)]

    with channel(api.base_url, answer["agent_token"]) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "desired"
        assert first["node_id"] == nid
        assert first["hostname"] == "queue-01"
        assert first["status"] == "Offline"
        assert first["operation"] is None
        assert [r["code"] for r in first["roles"]] == ["que"]
        parameters = first["roles"][0]["parameters"]
        assert parameters["password"] == QUEUE_PASSWORD  # revealed to the node's own agent
        assert parameters["port"] == 5672

        ws.send(json.dumps({"type": "hello", "inventory": inventory, "outcomes": []}))
        seen = node(c, nid)
        assert seen["connectivity"] == "connected"
        before = datetime.fromisoformat(seen["last_seen"])
        for _ in range(3):
            time.sleep(0.05)
            ws.send(json.dumps({"type": "beat"}))
        time.sleep(0.1)  # the beats travel; the server has no ack for them
        after = node(c, nid)
        assert after["connectivity"] == "connected"
        last_seen = datetime.fromisoformat(after["last_seen"])
        assert last_seen > before
        if last_seen.tzinfo is None:
            last_seen = last_seen.replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - last_seen).total_seconds()) < 5
        assert after["os"] == "Debian 12"
        assert after["components"] == [{"name": "rabbitmq", "version": "3.12"}]
        # the administrator still never sees the secret
        assert after["assignments"][0]["parameters"]["password"]["value"] == MASK
        assert QUEUE_PASSWORD not in c.get(f"{API}/nodes/{nid}").text
    after_close = wait_until(lambda: node(c, nid)["connectivity"] == "lost", "connectivity lost")
    assert after_close


def wait_until(probe: Any, what: str, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_wrong_session_key_is_refused_and_recorded(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "wk-01")
    key = assign(c, nid, "wk")
    wrong = "W" * len(key)
    answer = join(api, wrong)
    assert answer.status_code == 401, answer.text
    assert "agent_token" not in answer.text
    refusals = refused_joins(c)
    assert len(refusals) == 1
    assert refusals[0]["node_id"] is None
    assert "127.0.0.1" in refusals[0]["reason"]
    assert wrong not in refusals[0]["reason"]  # the presented key is not written down
    assert "agent-joined" not in [e["operation"] for e in node_events(c, nid)]
    assert node(c, nid)["connectivity"] == "never"


def test_a_flood_of_wrong_keys_is_refused_and_its_logging_is_bounded(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "wk-flood")
    key = assign(c, nid, "wk")
    attempts = 100
    with api.anonymous() as anon:
        for i in range(attempts):
            answer = anon.post(f"{API}/agent/join", json={"session_key": f"guess-{i:04d}"})
            assert answer.status_code == 401, answer.text
    logged = len(refused_joins(c))
    # a budget of refusals a minute is written down (twice that if a minute turned meanwhile)
    assert REFUSAL_EVENTS_PER_MINUTE <= logged <= 2 * REFUSAL_EVENTS_PER_MINUTE < attempts
    assert expect(join(api, key), 200)["node_id"] == nid  # the honest agent still joins


def test_regenerated_key_refuses_the_old_key_and_the_old_credential(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "wk-02")
    old_key = assign(c, nid, "wk")
    old_token = joined_token(api, old_key)
    with channel(api.base_url, old_token) as open_ws:
        assert receive(open_ws, "desired")["node_id"] == nid
        expect(c.post(f"{API}/nodes/{nid}/actions/regenerate-session-key"), 200)
        # the channel already open with the old credential is closed at once
        assert close_code(open_ws) == protocol.CLOSE_UNAUTHORIZED
    new_key = node(c, nid)["session_key"]
    assert new_key
    assert new_key != old_key

    refused = join(api, old_key)
    assert refused.status_code == 401, refused.text
    assert len(refused_joins(c)) == 1
    with channel(api.base_url, old_token) as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED

    new_token = joined_token(api, new_key)
    assert new_token != old_token
    with channel(api.base_url, new_token) as ws:
        assert receive(ws, "desired")["node_id"] == nid


def test_key_presented_for_another_node_id_is_refused(api: LiveApi) -> None:
    c = api.client
    a = add_node(c, "wk-a")
    b = add_node(c, "wk-b")
    key_a = assign(c, a, "wk")
    assign(c, b, "wk")
    b_events = node_events(c, b)

    refused = join(api, key_a, node_id=b)
    assert refused.status_code in (401, 403), refused.text
    assert "agent_token" not in refused.text
    events_of_a = [e for e in node_events(c, a) if e["operation"] == "agent-join-refused"]
    assert len(events_of_a) == 1
    assert str(b) in events_of_a[0]["reason"]  # names the node the agent claimed to be
    assert "agent-joined" not in [e["operation"] for e in node_events(c, a)]
    assert node_events(c, b) == b_events
    assert node(c, a)["connectivity"] == node(c, b)["connectivity"] == "never"
    # the honest claim still works
    assert expect(join(api, key_a, node_id=a), 200)["node_id"] == a


def test_a_node_credential_cannot_read_or_report_for_another_node(api: LiveApi) -> None:
    c = api.client
    a = add_node(c, "wk-a")
    b = add_node(c, "queue-b")
    key_a = assign(c, a, "wk")
    assign(c, b, "que", password=QUEUE_PASSWORD)
    expect(c.post(f"{API}/nodes/{a}/actions/activate"), 200)
    expect(c.post(f"{API}/nodes/{b}/actions/activate"), 200)
    op_a = node(c, a)["pending_operation"]["operation_id"]
    op_b = node(c, b)["pending_operation"]["operation_id"]
    assert op_a != op_b
    b_before, b_events_before = stable_view(c, b), node_events(c, b)

    token_a = joined_token(api, key_a)
    # naming node B in the channel's address changes nothing: the credential decides
    with channel(api.base_url, token_a, query=f"?node_id={b}&node={b}") as ws:
        raw = ws.recv(timeout=5)
        desired = json.loads(raw)
        assert desired["type"] == "desired"
        assert desired["node_id"] == a
        assert desired["hostname"] == "wk-a"
        assert [r["code"] for r in desired["roles"]] == ["wk"]
        assert desired["operation"] == {"id": op_a, "kind": "activate"}
        for foreign in ("queue-b", QUEUE_PASSWORD, op_b):
            assert foreign not in raw

        ws.send(json.dumps({"type": "outcome", "operation_id": op_b, "success": True}))
        assert receive(ws, "ack") == {"type": "ack", "operation_id": op_b, "recorded": False}
        ws.send(json.dumps({"type": "outcome", "operation_id": op_b, "success": False}))
        assert receive(ws, "ack")["recorded"] is False
        hello = {
            "type": "hello",
            "inventory": {"os": "spoofed"},
            "outcomes": [{"operation_id": op_b, "success": True}],
        }
        ws.send(json.dumps(hello))
        assert receive(ws, "ack") == {"type": "ack", "operation_id": op_b, "recorded": False}
        ws.send(json.dumps({"type": "problem", "reason": "trouble on B"}))
        ws.send(json.dumps({"type": "inventory", "inventory": {"os": "spoofed again"}}))
        # a Fix or Deactivate id of B is no better than its Activate id: none is A's
        ws.send(json.dumps({"type": "outcome", "operation_id": "", "success": True}))
        assert receive(ws, "ack")["recorded"] is False

        # the control: its own operation is recorded, on its own node only
        ws.send(json.dumps({"type": "outcome", "operation_id": op_a, "success": True}))
        assert receive(ws, "ack") == {"type": "ack", "operation_id": op_a, "recorded": True}
        assert receive(ws, "desired")["status"] == "Online"

    assert node(c, a)["status"] == "Online"
    assert node(c, a)["os"] == "spoofed again"  # the inventories landed on A, its own node
    assert stable_view(c, b) == b_before
    assert node(c, b)["status"] == "Offline"
    assert node(c, b)["pending_operation"]["operation_id"] == op_b
    assert node(c, b)["os"] is None
    assert node_events(c, b) == b_events_before
    problems = [e for e in all_events(c) if e["operation"] == "agent-problem"]
    assert [e["node_id"] for e in problems] == [a]


def test_agent_credential_is_not_an_admin_token_and_vice_versa(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "wk-03")
    key = assign(c, nid, "wk")
    token = joined_token(api, key)
    with api.anonymous() as anon:
        as_agent = {"Authorization": f"Bearer {token}"}
        assert anon.get(f"{API}/nodes", headers=as_agent).status_code == 401
        assert anon.get(f"{API}/nodes/{nid}", headers=as_agent).status_code == 401
        assert anon.get(f"{API}/events", headers=as_agent).status_code == 401
        answer = anon.post(f"{API}/nodes/{nid}/actions/activate", headers=as_agent)
        assert answer.status_code == 401
        assert anon.delete(f"{API}/nodes/{nid}", headers=as_agent).status_code == 401
        as_key = {"Authorization": f"Bearer {key}"}
        assert anon.get(f"{API}/nodes", headers=as_key).status_code == 401
    assert node(c, nid)["status"] == "Offline"
    assert node(c, nid)["pending_operation"] is None

    admin_token = c.headers["Authorization"].partition(" ")[2]
    with channel(api.base_url, admin_token) as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    with channel(api.base_url, key) as ws:  # the session key is not a channel credential
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED


# one server per database, shared by the many garbage cases below (they never touch
# each other's nodes: every case creates its own), run as `voipcloud serve` runs it
@contextmanager
def serve_like_voipcloud(app: Any) -> Iterator[str]:
    """Like tests/support/server.py, with the ws_max_size that `voipcloud serve` sets."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws_max_size=protocol.MAX_MESSAGE_BYTES,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the test server did not start"
        assert time.monotonic() < deadline, "the test server did not start within 30 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    directory = tmp_path_factory.mktemp(f"agent-security-{request.param}")
    name = None
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, directory / "voipcloud.sqlite3")
        url = sqlite_url(directory)
    else:
        name = databases.create_database(template=request.getfixturevalue("postgres_template"))
        url = databases.url_for(name)
    settings = make_settings(directory, url)
    try:
        with serve_like_voipcloud(create_app(settings)) as base_url:
            client = login(base_url)
            try:
                yield LiveApi(base_url=base_url, client=client, settings=settings)
            finally:
                client.close()
    finally:
        if name is not None:
            databases.drop_database(name)


def assert_healthy(api: LiveApi) -> None:
    """The controller still serves: health, the admin API, and a fresh agent's join."""
    with api.anonymous() as anon:
        assert anon.get("/healthz").status_code == 200
    nid = add_node(api.client, unique("probe"))
    assert expect(join(api, assign(api.client, nid, "wk")), 200)["node_id"] == nid


# garbage on the join endpoint
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"session_key": 12345}, "session_key"),
        ({"session_key": ["a", "b"]}, "session_key"),
        ({"session_key": None}, "session_key"),
        ({}, "session_key"),
        ({"session_key": ""}, "session_key"),
        ({"session_key": "k" * 129}, "session_key"),
        ({"session_key": "KEY", "node_id": "not-a-number"}, "node_id"),
        ({"session_key": "KEY", "node_id": 1.5}, "node_id"),
        ({"session_key": "KEY", "inventory": "linux"}, "inventory"),
        ({"session_key": "KEY", "inventory": {"components": "all"}}, "components"),
        ({"session_key": "KEY", "inventory": {"os": "x" * 256}}, "os"),
        ({"session_key": "KEY", "inventory": {"os": 7}}, "os"),
        ({"session_key": "KEY", "inventory": {"container_id": "c" * 129}}, "container_id"),
        ({"session_key": "KEY", "inventory": {"components": [{"name": "a"}]}}, "version"),
        ({"session_key": "KEY", "admin": True}, "admin"),
        ({"session_key": "KEY", "inventory": {"os": "x", "root": True}}, "root"),
        ({"session_key": "KEY", "node_id": 1, "status": "Online"}, "status"),
    ],
    ids=[
        "key-int",
        "key-list",
        "key-null",
        "key-missing",
        "key-empty",
        "key-too-long",
        "node-id-str",
        "node-id-float",
        "inventory-str",
        "components-str",
        "os-too-long",
        "os-int",
        "container-too-long",
        "component-no-version",
        "extra-top",
        "extra-nested",
        "extra-status",
    ],
)
def test_join_with_wrong_types_or_extra_fields_is_422(
    shared_api: LiveApi, body: dict[str, Any], field: str
) -> None:
    api = shared_api
    c = api.client
    nid = add_node(c, unique("wk-junk"))
    key = assign(c, nid, "wk")
    payload = json.loads(json.dumps(body).replace('"KEY"', json.dumps(key)))
    answer = join_raw(api, json=payload)
    assert answer.status_code == 422, answer.text
    locs = [e["loc"] for e in answer.json()["detail"]]
    assert any(field in map(str, loc) for loc in locs), locs
    assert "agent-joined" not in [e["operation"] for e in node_events(c, nid)]
    assert node(c, nid)["os"] is None
    assert node(c, nid)["connectivity"] == "never"


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"session_key": ',
        b"\xff\xfe\x00garbage",
        b"",
        b"[]",
        b'"key"',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["text", "truncated", "binary", "empty", "list", "string", "null", "deep-nesting"],
)
def test_join_with_non_json_or_non_object_is_4xx(shared_api: LiveApi, content: bytes) -> None:
    answer = join_raw(shared_api, content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "agent_token" not in answer.text


def test_join_with_too_many_components_is_422(shared_api: LiveApi) -> None:
    c = shared_api.client
    nid = add_node(c, unique("wk-many"))
    key = assign(c, nid, "wk")
    components = [{"name": "c", "version": "1"}] * (protocol.MAX_COMPONENTS + 1)
    answer = join(shared_api, key, inventory={"components": components})
    assert answer.status_code == 422, answer.text
    assert node(c, nid)["components"] == []
    assert_healthy(shared_api)


def test_join_body_over_one_mib_is_413(shared_api: LiveApi) -> None:
    api = shared_api
    c = api.client
    nid = add_node(c, unique("wk-big"))
    key = assign(c, nid, "wk")
    big = json.dumps({"session_key": key, "inventory": {"os": "x" * (1 << 20)}}).encode()
    assert len(big) > api.settings.max_body_bytes
    answer = join_raw(api, content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert "agent-joined" not in [e["operation"] for e in node_events(c, nid)]
    assert_healthy(api)


def test_join_chunked_body_over_one_mib_is_413(shared_api: LiveApi) -> None:
    """Without Content-Length the limit trips while the body is read: still 413."""
    api = shared_api
    c = api.client
    nid = add_node(c, unique("wk-chunked"))
    key = assign(c, nid, "wk")
    big = json.dumps({"session_key": key, "inventory": {"os": "x" * (1 << 20)}}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    answer = join_raw(api, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413, answer.text
    assert "agent-joined" not in [e["operation"] for e in node_events(c, nid)]
    assert node(c, nid)["os"] is None
    assert_healthy(api)


# garbage on the channel
@pytest.fixture
def connected(shared_api: LiveApi) -> tuple[LiveApi, int, str]:
    """A node with the wk role whose agent has joined: (api, node id, agent token)."""
    nid = add_node(shared_api.client, unique("wk-ch"))
    key = assign(shared_api.client, nid, "wk")
    answer = expect(join(shared_api, key, inventory={"os": "Debian 12"}), 200)
    return shared_api, nid, str(answer["agent_token"])


_TOO_MANY_OUTCOMES = json.dumps(
    {
        "type": "hello",
        "inventory": {},
        "outcomes": [{"operation_id": f"op{i}", "success": True} for i in range(201)],
    }
)


@pytest.mark.parametrize(
    "message",
    [
        "this is not json",
        "{",
        "",
        "[]",
        "42",
        "null",
        '"beat"',
        "{}",
        '{"type": null}',
        '{"type": 7}',
        '{"type": "takeover"}',
        '{"type": "BEAT"}',
        '{"type": "desired", "node_id": 1}',
        '{"type": "ack", "operation_id": "x", "recorded": true}',
        '{"type": "beat", "node_id": 2}',
        '{"type": "outcome", "operation_id": "x", "success": "maybe"}',
        '{"type": "outcome", "operation_id": 12, "success": true}',
        '{"type": "outcome", "operation_id": "' + "o" * 65 + '", "success": true}',
        '{"type": "inventory", "inventory": {"components": {"a": "1"}}}',
        '{"type": "hello", "inventory": {}, "outcomes": "all"}',
        _TOO_MANY_OUTCOMES,
        '{"type": "problem", "reason": "' + "r" * 4001 + '"}',
        '{"type": "problem"}',
        "[" * 10_000 + "]" * 10_000,
    ],
    ids=[
        "text",
        "truncated",
        "empty",
        "list",
        "number",
        "null",
        "string",
        "no-type",
        "type-null",
        "type-int",
        "unknown-type",
        "type-wrong-case",
        "server-type-desired",
        "server-type-ack",
        "extra-field",
        "wrong-type",
        "operation-id-int",
        "operation-id-too-long",
        "components-not-list",
        "outcomes-not-list",
        "too-many-outcomes",
        "reason-too-long",
        "reason-missing",
        "deep-nesting",
    ],
)
def test_channel_garbage_message_closes_with_policy_violation(
    connected: tuple[LiveApi, int, str], message: str
) -> None:
    api, nid, token = connected
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
        ws.send(message)
        assert close_code(ws) == protocol.CLOSE_POLICY
    ops = [e["operation"] for e in node_events(api.client, nid)]
    assert "agent-problem" not in ops
    assert node(api.client, nid)["os"] == "Debian 12"  # as joined: nothing else landed
    # the credential still works afterwards, and the server is fine
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
    assert_healthy(api)


def test_channel_binary_frame_closes_with_policy_violation(
    connected: tuple[LiveApi, int, str],
) -> None:
    api, nid, token = connected
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
        ws.send(b'{"type": "beat"}')
        assert close_code(ws) == protocol.CLOSE_POLICY
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
    assert_healthy(api)


def test_channel_message_over_one_mib_is_refused_with_1009(
    connected: tuple[LiveApi, int, str],
) -> None:
    api, nid, token = connected
    big = json.dumps({"type": "problem", "reason": "p" * protocol.MAX_MESSAGE_BYTES})
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
        ws.send(big)
        assert close_code(ws) == 1009  # message too big
    assert "agent-problem" not in [e["operation"] for e in node_events(api.client, nid)]
    with channel(api.base_url, token) as ws:  # and the server keeps serving
        assert receive(ws, "desired")["node_id"] == nid
    assert_healthy(api)


def test_nul_and_control_characters_in_reports_are_stored_clean(
    connected: tuple[LiveApi, int, str],
) -> None:
    """PostgreSQL cannot hold NUL in text: an agent's report with one must neither crash the
    channel nor be lost; what is stored is the report without the control characters."""
    api, nid, token = connected
    inventory = {
        "os": "Deb\u0000ian",
        "kernel": "Linux\u0007 6.1",
        "components": [{"name": "lib\u0000c", "version": "2.36\n1"}],
    }
    with channel(api.base_url, token) as ws:
        assert receive(ws, "desired")["node_id"] == nid
        ws.send(json.dumps({"type": "inventory", "inventory": inventory}))
        ws.send(json.dumps({"type": "problem", "reason": "disk\u0000 full"}))
        outcome = {
            "type": "outcome",
            "operation_id": "op\u0000x",
            "success": False,
            "reason": "\u0000",
        }
        ws.send(json.dumps(outcome))
        assert receive(ws, "ack") == {"type": "ack", "operation_id": "op\u0000x", "recorded": False}
        ws.send(json.dumps({"type": "hello", "inventory": inventory, "outcomes": []}))
        ws.send(json.dumps(outcome))  # still open and answering after all of it
        assert receive(ws, "ack")["recorded"] is False
    seen = node(api.client, nid)
    assert seen["os"] == "Debian"
    assert seen["kernel"] == "Linux 6.1"
    assert seen["components"] == [{"name": "libc", "version": "2.36 1"}]
    problems = [e for e in node_events(api.client, nid) if e["operation"] == "agent-problem"]
    assert [e["reason"] for e in problems] == ["disk full"]
    assert_healthy(api)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer not-a-real-token",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer " + "A" * 4000,
    ],
    ids=["missing", "empty", "scheme-only", "blank", "garbage", "basic", "other-scheme", "long"],
)
def test_channel_without_a_valid_bearer_closes_4401(
    shared_api: LiveApi, header: str | None
) -> None:
    nid = add_node(shared_api.client, unique("wk-bearer"))
    assign(shared_api.client, nid, "wk")
    ctx = (
        channel(shared_api.base_url)
        if header is None
        else channel(shared_api.base_url, header=header)
    )
    with ctx as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    assert node(shared_api.client, nid)["connectivity"] == "never"


def test_a_valid_token_with_another_scheme_is_refused(
    connected: tuple[LiveApi, int, str],
) -> None:
    api, nid, token = connected
    with channel(api.base_url, header=f"Basic {token}") as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    with channel(api.base_url, header=f"Bearer {token}x") as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    with channel(api.base_url, header=f"Bearer {token[:-1]}") as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    assert node(api.client, nid)["connectivity"] == "lost"  # joined, never on the channel


def test_delete_node_stops_its_agent_and_revokes_key_and_credential(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "wk-09")
    key = assign(c, nid, "wk")
    token = joined_token(api, key)
    with channel(api.base_url, token) as open_ws:
        assert receive(open_ws, "desired")["node_id"] == nid
        expect(c.delete(f"{API}/nodes/{nid}"), 200)
        assert close_code(open_ws) == protocol.CLOSE_DELETED  # told to stop at once
    assert node(c, nid)["status"] == "Deleted"

    with channel(api.base_url, token) as ws:
        assert close_code(ws) == protocol.CLOSE_DELETED
    refused = join(api, key)
    assert refused.status_code == 401, refused.text
    refused = join(api, key, node_id=nid)
    assert refused.status_code == 401, refused.text
    assert len(refused_joins(c)) == 2
