"""Helpers for the API integration tests: an app whose controller the test can reach.

The `api` fixture of tests/conftest.py hides the app. Some states (Online, ActivateFailed) need
a node's agent to report an outcome; rather than run an agent process (tests/e2e does that),
`running_app` builds the same app as the fixture but keeps `app.state.controller`, and the test
reports the outcome through `controller.operations.report`, the call the agent channel makes.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import login, make_settings
from tests.support import databases
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.services.controller import Controller
from voipcloud.store.database import sqlite_url

API = "/api/v1"


@dataclass
class ControlledApi:
    base_url: str
    client: httpx.Client  # authenticated as admin
    settings: Settings
    controller: Controller

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    @contextmanager
    def isolated(self) -> Iterator[httpx.Client]:
        """Another admin client with its own connections: for a request that may end in a 500,
        after which the server drops the connection and the shared client would trip on it."""
        with httpx.Client(
            base_url=self.base_url,
            timeout=30,
            headers={"Authorization": self.client.headers["Authorization"]},
        ) as client:
            yield client

    @property
    def is_postgres(self) -> bool:
        return is_postgres(self.settings)


def is_postgres(settings: Settings) -> bool:
    return settings.resolved_database_url().startswith("postgresql")


@contextmanager
def running_app(tmp_path: Path, database_url: str, **overrides: Any) -> Iterator[ControlledApi]:
    """The real app on a real uvicorn server, with its controller at hand."""
    overrides.setdefault("activation_timeout", 3600.0)  # no surprise timeouts mid-test
    settings = make_settings(tmp_path, database_url, **overrides)
    app = create_app(settings)
    with serve_in_thread(app) as base_url:
        client = login(base_url)
        try:
            yield ControlledApi(
                base_url=base_url,
                client=client,
                settings=settings,
                controller=app.state.controller,
            )
        finally:
            client.close()


# One app per module and backend, for tests that touch only nodes they create themselves
# (unique hostnames): it saves the start-up and login of an app per test.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def module_app(request: pytest.FixtureRequest, **overrides: Any) -> Iterator[ControlledApi]:
    """For a module-scoped fixture parametrized with BACKENDS: a fresh database and app."""
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    tmp_path = factory.mktemp("shared-app")
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp_path / "voipcloud.sqlite3")
        with running_app(tmp_path, sqlite_url(tmp_path), **overrides) as live:
            yield live
        return
    name = databases.create_database(template=request.getfixturevalue("postgres_template"))
    try:
        with running_app(tmp_path, databases.url_for(name), **overrides) as live:
            yield live
    finally:
        databases.drop_database(name)


_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A host name no other test of the session uses."""
    return f"{prefix}-{next(_names)}"


# --- requests -------------------------------------------------------------------------------


def body(response: httpx.Response) -> Any:
    """The JSON body; every answer of the API is JSON and none is a 500."""
    if response.status_code >= 500:
        # Let the server finish logging its traceback before pytest formats ours: on Python
        # 3.11 two threads formatting tracebacks at once (both run ast.parse) can trip
        # "SystemError: AST constructor recursion depth mismatch" inside pytest.
        time.sleep(0.3)
    assert response.status_code < 500, f"{response.request.method} {response.request.url}: " + (
        f"{response.status_code} {response.text[:500]}"
    )
    if response.status_code == 204:
        assert not response.content
        return None
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code,
        response.headers.get("content-type"),
        response.text[:200],
    )
    return response.json()


def expect(response: httpx.Response, status: int) -> Any:
    data = body(response)
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code} {response.text[:500]}"
    )
    return data


def add_node(
    client: httpx.Client, hostname: str, private_ip: str = "10.0.0.10", **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = expect(
        client.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": private_ip, **extra}),
        201,
    )
    return data


def assign(client: httpx.Client, node_id: int, role: str, **parameters: Any) -> dict[str, Any]:
    data: dict[str, Any] = expect(
        client.post(f"{API}/nodes/{node_id}/roles", json={"role": role, "parameters": parameters}),
        201,
    )
    return data


def action(
    client: httpx.Client, node_id: int, name: str, reason: str | None = None
) -> dict[str, Any]:
    payload = None if reason is None else {"reason": reason}
    data: dict[str, Any] = expect(
        client.post(f"{API}/nodes/{node_id}/actions/{name}", json=payload), 200
    )
    return data


def get_node(client: httpx.Client, node_id: int) -> dict[str, Any]:
    data: dict[str, Any] = expect(client.get(f"{API}/nodes/{node_id}"), 200)
    return data


def node_events(client: httpx.Client, node_id: int) -> list[dict[str, Any]]:
    """The node's events, oldest first."""
    data = expect(client.get(f"{API}/nodes/{node_id}/events", params={"limit": 500}), 200)
    return list(reversed(data["items"]))


def operations(client: httpx.Client, node_id: int) -> list[str]:
    """The node's event operations, oldest first."""
    return [e["operation"] for e in node_events(client, node_id)]


def add_extensions(client: httpx.Client, *numbers: str) -> None:
    for number in numbers:
        expect(client.post(f"{API}/extensions", json={"number": number}), 201)


# --- states that need the node's agent ----------------------------------------------------------


def report(live: ControlledApi, node_id: int, *, success: bool, reason: str | None = None) -> None:
    """Report the outcome of the node's pending operation, as its agent would."""
    pending = get_node(live.client, node_id)["pending_operation"]
    assert pending is not None, "nothing is pending on this node"
    outcome = live.controller.operations.report(
        node_id, operation_id=pending["operation_id"], success=success, reason=reason
    )
    assert outcome.recorded


def bring_online(live: ControlledApi, node_id: int) -> dict[str, Any]:
    action(live.client, node_id, "activate")
    report(live, node_id, success=True)
    node = get_node(live.client, node_id)
    assert node["status"] == "Online", node
    return node


# --- refusals change nothing --------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    node: Any
    node_events: int
    all_events: int
    live_nodes: int
    extensions: int


# What the controller's agent watch records on its own, every few seconds, for any node whose
# agent joined (services/agent_watch.py): not a change a refused request made. An earlier test's
# agent that joined and left is recorded lost a few seconds later, in the middle of this test's
# snapshots (CI, PostgreSQL, 2026-12-01).
WATCH_EVENTS = "agent-lost,agent-back"


def events_but_the_watch(client: httpx.Client, node_id: int | None = None) -> int:
    """How many events there are, the agent watch's left out: the watch's are counted before and
    after the total, and the three reads repeated until no watch event landed in between."""
    scope = {} if node_id is None else {"node_id": node_id}

    def total(**params: Any) -> int:
        count: int = expect(client.get(f"{API}/events", params={**scope, **params}), 200)["total"]
        return count

    for _ in range(20):  # bounded: a watch round records its events at once, seconds apart
        watch = total(operation=WATCH_EVENTS)
        every = total()
        if total(operation=WATCH_EVENTS) == watch:
            return every - watch
    raise AssertionError("the agent watch kept recording events while the snapshot was taken")


def snapshot(client: httpx.Client, node_id: int | None) -> Snapshot:
    node = None
    count = -1
    if node_id is not None:
        node = expect(client.get(f"{API}/nodes/{node_id}"), 200)
        count = events_but_the_watch(client, node_id)
    return Snapshot(
        node=node,
        node_events=count,
        all_events=events_but_the_watch(client),
        live_nodes=expect(client.get(f"{API}/nodes"), 200)["total"],
        extensions=expect(client.get(f"{API}/extensions"), 200)["total"],
    )


def refused(
    client: httpx.Client,
    node_id: int | None,
    method: str,
    path: str,
    *,
    status: int,
    rule: str | None = None,
    mentions: tuple[str, ...] = (),
    check: bool = True,
    **kwargs: Any,
) -> Any:
    """Send one request that must be refused, and check that it changed nothing at all.

    `check=False` skips the snapshots, for a loop of refusals inside `unchanged(...)`.
    """
    before = snapshot(client, node_id) if check else None
    response = client.request(method, path, **kwargs)
    data = expect(response, status)
    if status == 409:
        assert set(data) >= {"detail", "rule"}, data
        assert data["rule"] == rule, data
        assert isinstance(data["detail"], str)
        assert data["detail"]
    elif rule is not None:
        raise AssertionError("only a 409 names a rule")
    text = data["detail"] if isinstance(data["detail"], str) else str(data["detail"])
    for word in mentions:
        assert word in text, f"{word!r} not in {text!r}"
    if check:
        after = snapshot(client, node_id)
        assert after == before, (
            f"{method} {path} was refused but changed something: {before} -> {after}"
        )
    return data


@contextmanager
def unchanged(client: httpx.Client, *node_ids: int | None) -> Iterator[None]:
    """The block (a series of refusals) changes nothing: nodes, events, listing, extensions."""
    ids = node_ids or (None,)
    before = [snapshot(client, node_id) for node_id in ids]
    yield
    assert [snapshot(client, node_id) for node_id in ids] == before, "a refusal changed something"


def field_locs(data: Any) -> list[tuple[Any, ...]]:
    """The `loc` of each entry of a 422 answer."""
    assert isinstance(data["detail"], list), data
    return [tuple(entry["loc"]) for entry in data["detail"]]
