"""Two `voipcloud serve` processes on one PostgreSQL behave as one controller (issue 15).

Real processes: controllers A and B (own ports and data dirs, the same secret.key and
database), four real agents given both addresses (two prefer A, two prefer B). Shown:
an activation through A reaches an agent held by B (and the other way round) within a
second; an activation timeout fires once although both controllers watch deadlines; every
event is recorded once; B's web listing shows a change made through A; SIGKILL of A moves
its agents to B, whose API and metrics then show them, and the duties A held (deadlines)
are done by B.
"""

from __future__ import annotations

import itertools
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.test_agent_lifecycle import add_node_with_roles, events
from tests.support import databases
from tests.support.processes import (
    ADMIN_PASSWORD,
    AgentProcess,
    Controller,
    node,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.fault]

ACTIVATION_TIMEOUT = 4.0


@dataclass
class Cluster:
    a: Controller
    b: Controller
    url: str  # the database


def _ready(controller: Controller) -> bool:
    try:
        return httpx.get(f"{controller.url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _start(controller: Controller) -> Controller:
    """`Controller.start`, with more patience on a loaded machine (two controllers and the
    other tests share two cores): a process still starting is waited for, not failed."""
    try:
        controller.start()
    except AssertionError:
        if controller.process is None or controller.process.poll() is not None:
            raise
    wait_for(lambda: _ready(controller), timeout=90, what=f"{controller.url} ready")
    return controller


@pytest.fixture
def cluster(tmp_path: Path, postgres_template: str) -> Iterator[Cluster]:
    name = databases.create_database(template=postgres_template)  # migrated, nothing else
    url = databases.url_for(name)
    env = {
        "VOIPCLOUD_DATABASE_URL": url,
        "VOIPCLOUD_ACTIVATION_TIMEOUT": str(ACTIVATION_TIMEOUT),
        # beats every 5 s: the channels' own safety-net sweep (every missed-beats window, 15 s)
        # cannot pass for the push a commit on the other controller must cause at once
        "VOIPCLOUD_HEARTBEAT_INTERVAL": "5",
        "VOIPCLOUD_METRICS_ALLOW": "127.0.0.1/32",
    }
    a = Controller(data_dir=tmp_path / "a", env=env)
    b = Controller(data_dir=tmp_path / "b", env=env)
    started: list[Controller] = []
    try:
        started.append(a)
        _start(a)
        # what the controllers share besides the database: the key that seals its secrets
        b.data_dir.mkdir(parents=True)
        shutil.copy2(a.data_dir / "secret.key", b.data_dir / "secret.key")
        started.append(b)
        _start(b)
        yield Cluster(a, b, url)
    finally:
        for controller in started:
            controller.stop()
        databases.drop_database(name)


def _agent(tmp_path: Path, key: str, name: str, *controllers: Controller) -> AgentProcess:
    return AgentProcess(
        controller_url=",".join(c.url for c in controllers),
        session_key=key,
        state_dir=tmp_path / f"agent-{name}",
    ).start()


def _channels(controller: Controller) -> int:
    text = httpx.get(f"{controller.url}/metrics", timeout=5).text
    found = re.search(r"^voipcloud_controller_agent_channels (\S+)$", text, re.MULTILINE)
    assert found, text[:500]
    return int(float(found.group(1)))


def _all_connected(client: httpx.Client, node_ids: list[int]) -> bool:
    return all(node(client, n)["connectivity"] == "connected" for n in node_ids)


def _web(controller: Controller) -> httpx.Client:
    web = httpx.Client(base_url=controller.url, timeout=30, headers={"Accept": "text/html"})
    page = web.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    answer = web.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 303, answer.text[:300]
    return web


def _activated_within(
    through: httpx.Client, seen_by: httpx.Client, node_id: int
) -> tuple[float, dict]:
    """Activate through one controller; seconds from the request to the agent's report as
    recorded by the controller holding its channel (the `activation-succeeded` event)."""
    sent = datetime.now(UTC)
    assert through.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
    online = wait_status(seen_by, node_id, "Online", timeout=10)
    done = next(e for e in events(seen_by, node_id) if e["operation"] == "activation-succeeded")
    at = datetime.fromisoformat(done["at"].replace("Z", "+00:00"))
    return (at - sent).total_seconds(), online


def _event_rows(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "SELECT node_id, operation, status_before, status_after, reason, at "
                    "FROM events ORDER BY id"
                )
            )
    finally:
        engine.dispose()


def test_two_controllers_behave_as_one(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.a.admin(), cluster.b.admin()
    ids: dict[str, int] = {}
    agents: dict[str, AgentProcess] = {}
    for name, first, second in (
        ("a1", cluster.a, cluster.b),
        ("a2", cluster.a, cluster.b),
        ("b1", cluster.b, cluster.a),
        ("b2", cluster.b, cluster.a),
    ):
        node_id, key = add_node_with_roles(a if first is cluster.a else b, f"{name}-cl", ["wk"])
        ids[name] = node_id
        agents[name] = _agent(tmp_path, key, name, first, second)
    try:
        nodes = list(ids.values())
        # every controller shows every agent connected, whichever holds its channel
        wait_for(
            lambda: _all_connected(a, nodes), timeout=90, what="A to show the four agents connected"
        )
        wait_for(
            lambda: _all_connected(b, nodes), timeout=90, what="B to show the four agents connected"
        )
        assert (_channels(cluster.a), _channels(cluster.b)) == (2, 2)

        # an administrator's change on one controller reaches the agent held by the other
        pushed_ab, online = _activated_within(a, b, ids["b1"])
        assert online["status"] == "Online"
        pushed_ba, _ = _activated_within(b, a, ids["a1"])
        print(
            f"activation to the agent's recorded report: A→B {pushed_ab:.3f} s, "
            f"B→A {pushed_ba:.3f} s"
        )
        assert pushed_ab < 1.0
        assert pushed_ba < 1.0
        assert node(a, ids["b1"])["status"] == "Online"  # A reads what B recorded

        # an activation that no agent answers times out once, though both watch deadlines
        lonely, _key = add_node_with_roles(b, "lonely-cl", ["wk"])
        assert a.post(f"/api/v1/nodes/{lonely}/actions/activate").status_code == 200
        failed = wait_status(b, lonely, "ActivateFailed", timeout=ACTIVATION_TIMEOUT + 10)
        assert "no report from the agent" in (failed["status_reason"] or "")
        time.sleep(3)  # several more rounds of both controllers' deadline sweeps
        ops = Counter(e["operation"] for e in events(a, lonely))
        assert ops["activate"] == 1
        assert ops["activation-timed-out"] == 1, ops

        # B's live listing shows a change made through A (204 while nothing changed)
        web = _web(cluster.b)
        listing = web.get("/nodes/listing")
        assert listing.status_code == 200
        fp = re.search(r"fp=([0-9a-zA-Z_-]+)", listing.text)
        assert fp, listing.text[:500]
        assert web.get("/nodes/listing", params={"fp": fp.group(1)}).status_code == 204
        assert a.post(f"/api/v1/nodes/{ids['b2']}/actions/activate").status_code == 200
        wait_status(a, ids["b2"], "Online")
        changed = web.get("/nodes/listing", params={"fp": fp.group(1)})
        assert changed.status_code == 200
        row = re.search(r"b2-cl.*?</tr>", changed.text, re.DOTALL)
        assert row, changed.text[:2000]
        assert "Online" in row.group(0)

        # the web session signed on B is valid on A (the key is shared): no stickiness needed
        on_a = httpx.Client(
            base_url=cluster.a.url, cookies=web.cookies, headers={"Accept": "text/html"}
        )
        assert on_a.get("/nodes/listing").status_code == 200
        assert httpx.get(f"{cluster.a.url}/nodes/listing", timeout=10).status_code != 200

        # losing A moves its agents to B; B does A's duties
        cluster.a.kill()
        wait_for(lambda: _channels(cluster.b) == 4, timeout=20, what="B to hold all four")
        wait_for(lambda: _all_connected(b, nodes), timeout=90, what="B to show all four connected")
        pushed, _ = _activated_within(b, b, ids["a2"])  # an agent that moved from A
        assert pushed < 5
        deadline, _key = add_node_with_roles(b, "deadline-cl", ["wk"])
        assert b.post(f"/api/v1/nodes/{deadline}/actions/activate").status_code == 200
        wait_status(b, deadline, "ActivateFailed", timeout=ACTIVATION_TIMEOUT + 40)
        assert Counter(e["operation"] for e in events(b, deadline))["activation-timed-out"] == 1
    finally:
        for agent in agents.values():
            agent.stop()

    # every event recorded once: one join per agent, one activation and one report each,
    # and no node's event written twice (same node, operation, statuses and reason within
    # 2 s; the two administrators' logins are two events)
    rows = [r for r in _event_rows(cluster.url) if r[0] is not None]
    per_node = Counter((r[0], r[1]) for r in rows)
    for name in ("a1", "a2", "b1", "b2"):
        assert per_node[(ids[name], "agent-joined")] == 1, name
        assert per_node[(ids[name], "activate")] == 1, name
        assert per_node[(ids[name], "activation-succeeded")] == 1, name
    twice = [
        (first, second)
        for first, second in itertools.pairwise(rows)
        if first[:5] == second[:5] and abs((second[5] - first[5]).total_seconds()) < 2
    ]
    assert not twice, twice


def test_a_controller_without_the_clusters_key_refuses_to_start(cluster: Cluster) -> None:
    """The database's secrets are sealed with the first controller's secret.key: another
    controller with none (or its own) must not start and write with a new key."""
    stranger = Controller(data_dir=cluster.a.data_dir.parent / "stranger", env=cluster.a.env)
    with pytest.raises(AssertionError, match="voipcloud serve exited"):
        stranger.start()
    assert stranger.process is not None
    assert stranger.process.returncode != 0
    log = stranger.log()
    assert "secret.key" in log
    assert "Refusing to start" in log
    assert not (stranger.data_dir / "secret.key").exists()
    # the cluster is untouched: B still serves
    assert _ready(cluster.b)
