"""Rollouts through the real API (HTTP server, runner in its lifespan), SQLite and PostgreSQL.

Without agents: a Deactivate rollout over StandBy nodes needs none (StandBy -> Deactivated at
once), so the runner of the live server carries it through every batch; an Activate rollout
over nodes without agents stays running, which is what the pause / cancel checks need. The
rollouts with real agents are in tests/e2e/test_rollouts.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveApi
from tests.integration.accounts_helpers import API, add_account, events, session


def add_node(client: httpx.Client, hostname: str, *, standby: bool = False) -> int:
    answer = client.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": "10.0.0.7"})
    assert answer.status_code == 201, answer.text
    node_id: int = answer.json()["node_id"]
    assigned = client.post(f"{API}/nodes/{node_id}/roles", json={"role": "wk", "parameters": {}})
    assert assigned.status_code == 201, assigned.text
    if standby:
        done = client.post(f"{API}/nodes/{node_id}/actions/standby", json={})
        assert done.status_code == 200, done.text
    return node_id


def start(client: httpx.Client, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {
        "action": "deactivate",
        "batch_size": 2,
        "pause_seconds": 0,
        "failure_tolerance": 0,
    }
    payload.update(body)
    return client.post(f"{API}/rollouts", json=payload)


def gauges(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed with prometheus_client's own parser."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def wait_for(client: httpx.Client, rollout_id: int, states: set[str]) -> dict[str, Any]:
    for _ in range(200):  # bounded: 20 s
        found: dict[str, Any] = client.get(f"{API}/rollouts/{rollout_id}").json()
        if found["state"] in states:
            return found
        time.sleep(0.1)
    raise AssertionError(f"rollout {rollout_id} stayed {found['state']}: {found}")


def test_a_rollout_runs_every_batch_and_is_recorded(api: LiveApi) -> None:
    client = api.client
    ids = [add_node(client, f"sb-{i}", standby=True) for i in range(5)]
    answer = start(client, node_ids=ids, reason="retire the old rack")
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["counts"]["total"] == 5
    assert created["batches"] == 3
    assert [n["batch"] for n in created["nodes"]] == [1, 1, 2, 2, 3]
    finished = wait_for(client, created["id"], {"finished", "stopped"})
    assert finished["state"] == "finished", finished
    assert finished["counts"] == {
        "total": 5,
        "done": 5,
        "failed": 0,
        "skipped": 0,
        "pending": 0,
        "running": 0,
    }
    assert finished["progress"] == 100.0
    assert finished["commands"] == []
    for node_id in ids:
        assert client.get(f"{API}/nodes/{node_id}").json()["status"] == "Deactivated"
    log = events(client)
    rollout_level = [
        e["operation"] for e in log if e["node_id"] is None and "rollout" in e["operation"]
    ]
    assert rollout_level.count("rollout-batch-started") == 3
    assert {"rollout-started", "rollout-finished"} <= set(rollout_level)
    deactivations = [e for e in log if e["operation"] == "deactivate" and e["node_id"] in ids]
    assert {e["actor"] for e in deactivations} == {f"rollout {created['id']} (by admin)"}
    assert all("retire the old rack" in (e["reason"] or "") for e in deactivations)
    listed = client.get(f"{API}/rollouts").json()
    assert listed["total"] == 1
    metrics = gauges(client)
    assert metrics[("voipcloud_rollouts", (("state", "finished"),))] == 1
    assert metrics[("voipcloud_rollouts", (("state", "running"),))] == 0
    assert listed["items"][0]["id"] == created["id"]
    assert listed["items"][0]["nodes"] is None


def test_a_filter_selects_the_matching_nodes(api: LiveApi) -> None:
    client = api.client
    ids = [add_node(client, f"edge-{i}", standby=True) for i in range(3)]
    add_node(client, "edge-offline")  # Offline: not matched by status=StandBy
    answer = start(client, filter={"status": "StandBy", "q": "edge"}, batch_size=10)
    assert answer.status_code == 201, answer.text
    assert sorted(n["node_id"] for n in answer.json()["nodes"]) == ids


BAD_INPUT: list[tuple[dict[str, Any], list[str]]] = [
    ({"batch_size": 0}, ["body", "batch_size"]),
    ({"batch_size": 1001}, ["body", "batch_size"]),
    ({"batch_size": "two"}, ["body", "batch_size"]),
    ({"pause_seconds": -1}, ["body", "pause_seconds"]),
    ({"pause_seconds": 3601}, ["body", "pause_seconds"]),
    ({"failure_tolerance": -1}, ["body", "failure_tolerance"]),
    ({"failure_tolerance": 3}, ["body", "failure_tolerance"]),  # more than the 2 nodes
    ({"action": "delete"}, ["body", "action"]),
    ({"node_ids": [999999]}, ["body", "node_ids"]),
    ({"node_ids": []}, ["body", "node_ids"]),
    ({"node_ids": None, "filter": {"status": "Broken"}}, ["body", "filter", "status"]),
    ({"node_ids": None, "filter": {"q": "no-such-host"}}, ["body", "filter"]),
    ({"node_ids": None}, ["body", "node_ids"]),  # neither node_ids nor filter
    ({"filter": {"q": "x"}}, ["body", "node_ids"]),  # both
    ({"reason": "a\u0000b"}, ["body", "reason"]),
    ({"include_maintenance": "yes"}, ["body", "include_maintenance"]),
]


def test_bad_input_is_a_422_naming_the_field(api: LiveApi) -> None:
    client = api.client
    ids = [add_node(client, f"n-{i}", standby=True) for i in range(2)]
    for body, field in BAD_INPUT:
        payload: dict[str, Any] = {"node_ids": ids, **body}
        payload = {k: v for k, v in payload.items() if v is not None}
        answer = start(client, **payload)
        assert answer.status_code == 422, (body, answer.text)
        locs = [e["loc"][: len(field)] for e in answer.json()["detail"]]
        assert field in locs, (body, answer.json())
    assert client.get(f"{API}/rollouts").json()["total"] == 0  # nothing half-created
    for node_id in ids:
        assert client.get(f"{API}/nodes/{node_id}").json()["status"] == "StandBy"


def test_commands_follow_the_state_else_409_naming_the_rule(api: LiveApi) -> None:
    client = api.client
    ids = [add_node(client, f"off-{i}") for i in range(4)]
    # no agent: the activations wait for their deadline, the rollout stays running
    created = start(client, action="activate", node_ids=ids, failure_tolerance=4).json()
    rollout_id = created["id"]
    refused = client.post(f"{API}/rollouts/{rollout_id}/resume")
    assert refused.status_code == 409, refused.text
    assert refused.json()["rule"] == "rollout-resume-state"
    assert "running" in refused.json()["detail"]
    paused = client.post(f"{API}/rollouts/{rollout_id}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    assert paused.json()["commands"] == ["resume", "cancel"]
    running = gauges(client)  # a paused rollout's nodes by outcome, and its progress
    labels = (("action", "activate"), ("outcome", "running"), ("rollout", str(rollout_id)))
    assert (
        running[("voipcloud_rollout_nodes", labels)]
        + running[("voipcloud_rollout_nodes", (*labels[:1], ("outcome", "pending"), labels[2]))]
        == 4
    )
    assert running[("voipcloud_rollouts", (("state", "paused"),))] == 1
    again = client.post(f"{API}/rollouts/{rollout_id}/pause")
    assert again.status_code == 409
    assert again.json()["rule"] == "rollout-pause-state"
    assert client.post(f"{API}/rollouts/{rollout_id}/resume").json()["state"] == "running"
    cancelled = client.post(f"{API}/rollouts/{rollout_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["state"] == "cancelled"
    assert body["state_reason"] == "cancelled by admin"
    assert body["counts"]["pending"] == 0  # the rest are skipped
    assert body["counts"]["skipped"] + body["counts"]["running"] == 4
    for command in ("pause", "resume", "cancel"):
        answer = client.post(f"{API}/rollouts/{rollout_id}/{command}")
        assert answer.status_code == 409, answer.text
        assert answer.json()["rule"] == f"rollout-{command}-state"
    operations = [e["operation"] for e in events(client) if e["node_id"] is None]
    assert {"rollout-paused", "rollout-resumed", "rollout-cancelled"} <= set(operations)
    assert client.get(f"{API}/rollouts/999999").status_code == 404


def test_viewers_read_operators_start(api: LiveApi) -> None:
    add_account(api, "olga", "operator")
    add_account(api, "victor", "viewer")
    operator = session(api.base_url, "olga")
    viewer = session(api.base_url, "victor")
    ids = [add_node(api.client, f"p-{i}", standby=True) for i in range(2)]
    refused = start(viewer, node_ids=ids)
    assert refused.status_code == 403
    assert refused.json()["rule"] == "role-forbidden"
    created = start(operator, node_ids=ids)
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "olga"
    rollout_id = created.json()["id"]
    assert viewer.get(f"{API}/rollouts/{rollout_id}").status_code == 200
    assert viewer.get(f"{API}/rollouts").json()["total"] == 1
    assert viewer.post(f"{API}/rollouts/{rollout_id}/cancel").status_code == 403
