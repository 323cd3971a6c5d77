"""Webhooks and metrics with real processes: `voipcloud serve`, real agents, a real receiver.

The receiver checks every signature (the snippet of docs/operations.md), answers 500 to the
first delivery (so it must come again), and keeps the rest. Nodes are activated by their real
agents; agents are killed and restarted for agent lost / back. Then the receiver must hold
every status change of the event log exactly once, in order per node, and /metrics (parsed by
prometheus_client's own parser) must count what was done.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_agent_lifecycle import add_node_with_roles, connected
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status
from tests.support.receiver import Receiver

pytestmark = pytest.mark.e2e
SECRET = "e2e-webhook-secret-0123456789"
EVENTS = ["node.status_changed", "node.agent_lost", "node.agent_back"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def all_events(admin: httpx.Client) -> list[dict[str, Any]]:
    answer = admin.get("/api/v1/events", params={"format": "jsonl"})
    answer.raise_for_status()
    return [json.loads(line) for line in answer.text.splitlines()]


@pytest.fixture
def receiver() -> Any:
    first = {"done": False}

    def answer(_number: int, body: dict[str, Any]) -> int:
        if not first["done"] and body["event"] != "webhook.test":
            first["done"] = True
            return 500
        return 200

    started = Receiver(secret=SECRET, answer=answer).start()
    yield started
    started.stop()


def test_status_changes_reach_the_receiver_once_in_order_and_metrics_count_them(
    tmp_path: Path, start_agent: Callable[..., AgentProcess], receiver: Receiver
) -> None:
    controller = Controller(
        data_dir=tmp_path / "controller",
        env={"VOIPCLOUD_WEBHOOK_RETRY_FIRST": "1", "VOIPCLOUD_METRICS_ALLOW": "127.0.0.2/32"},
    ).start()
    try:
        admin = controller.admin()
        created = admin.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "secret": SECRET, "events": EVENTS},
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert "secret" not in created.text.replace("secret_set", "")
        since = max(e["id"] for e in all_events(admin))

        nodes: dict[int, AgentProcess] = {}
        for n in range(3):
            node_id, key = add_node_with_roles(admin, f"hook-{n}", ["wk"])
            nodes[node_id] = start_agent(controller, key, name=f"hook-{n}")
        for node_id in nodes:
            connected(admin, node_id)
            admin.post(f"/api/v1/nodes/{node_id}/actions/standby").raise_for_status()
            admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
        for node_id in nodes:
            wait_status(admin, node_id, "Online", timeout=30)
        first = next(iter(nodes))
        admin.post(f"/api/v1/nodes/{first}/actions/mark-damaged").raise_for_status()
        admin.post(f"/api/v1/nodes/{first}/actions/fix").raise_for_status()
        wait_status(admin, first, "Online", timeout=30)
        # agent lost and back: stop one agent, wait, start it again
        lost = list(nodes)[1]
        nodes[lost].stop()
        wait_for(lambda: node(admin, lost)["connectivity"] == "lost", timeout=15, what="agent lost")
        wait_for(lambda: _recorded(admin, "agent-lost"), timeout=10, what="agent-lost event")
        nodes[lost].start()
        connected(admin, lost)
        wait_for(lambda: _recorded(admin, "agent-back"), timeout=10, what="agent-back event")

        log = [e for e in all_events(admin) if e["id"] > since]
        changes = [
            e
            for e in log
            if e["node_id"] in nodes
            and e["status_before"]
            and e["status_after"]
            and e["status_before"] != e["status_after"]
        ]
        agent_events = [e for e in log if e["operation"] in ("agent-lost", "agent-back")]
        assert [e["operation"] for e in agent_events] == ["agent-lost", "agent-back"]
        assert {e["node_id"] for e in agent_events} == {lost}
        expected_ids = sorted(e["id"] for e in changes + agent_events)
        assert len(changes) == 2 * 3 + 2  # standby, activation succeeded x3; damaged, fix ok

        def all_in() -> bool:
            return {b["event_id"] for b in receiver.accepted()} >= set(expected_ids)

        wait_for(all_in, timeout=30, what="every event delivered")
        time.sleep(1.5)  # nothing more may come
        accepted = receiver.accepted()
        got_ids = [b["event_id"] for b in accepted]
        assert sorted(got_ids) == expected_ids, "each event exactly once"
        assert all(r.signature_ok for r in receiver.got)
        # in order per node
        for node_id in nodes:
            mine = [b["event_id"] for b in accepted if b["node"]["id"] == node_id]
            assert mine == sorted(mine), (node_id, mine)
        by_id = {e["id"]: e for e in changes}
        for body in accepted:
            if body["event"] == "node.status_changed":
                event = by_id[body["event_id"]]
                assert body["data"]["status_before"] == event["status_before"]
                assert body["data"]["status_after"] == event["status_after"]
                assert body["node"]["hostname"].startswith("hook-")
        # the first delivery was refused once and retried: 2 attempts, 500 then 200
        assert receiver.got[0].status == 500
        retried = receiver.got[0].json["event_id"]
        assert [r.json["event_id"] for r in receiver.got].count(retried) == 2

        def decided() -> dict[str, Any] | None:
            """The log once no delivery is pending: the receiver holds a request before the
            controller has the answer and records it."""
            found: dict[str, Any] = admin.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries", params={"limit": 200}
            ).json()
            return None if any(d["state"] == "pending" for d in found["items"]) else found

        deliveries = wait_for(decided, timeout=10, what="every delivery's outcome recorded")
        assert deliveries["total"] == len(expected_ids)
        first_delivery = next(d for d in deliveries["items"] if d["event_id"] == retried)
        assert [a["status"] for a in first_delivery["attempt_log"]] == [500, 200]
        assert first_delivery["state"] == "delivered"
        assert first_delivery["last_response"] == "accepted"
        assert all(d["state"] == "delivered" for d in deliveries["items"])

        # --- metrics: counters against what was done ---------------------------------------
        scrape = admin.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        found = samples(scrape.text)
        assert value(found, "voipcloud_operations_started_total", operation="activate") == 3
        assert value(found, "voipcloud_operations_succeeded_total", operation="activate") == 3
        assert value(found, "voipcloud_operations_failed_total", operation="activate") == 0
        assert value(found, "voipcloud_operations_started_total", operation="fix") == 1
        assert value(found, "voipcloud_operations_succeeded_total", operation="fix") == 1
        assert (
            value(
                found,
                "voipcloud_operation_duration_seconds_count",
                operation="activate",
                outcome="succeeded",
            )
            == 3
        )
        listing = admin.get("/api/v1/nodes", params={"limit": 100}).json()["items"]
        for status in ("Online", "Offline", "StandBy", "Damaged"):
            count = sum(1 for n in listing if n["status"] == status)
            assert value(found, "voipcloud_nodes", status=status) == count, status
        assert value(found, "voipcloud_nodes", status="Online") == 3
        assert value(found, "voipcloud_nodes_by_role", role="wk") == 3
        assert value(found, "voipcloud_agents", state="connected") == 3
        wk_health = [
            value(found, "voipcloud_role_health", role="wk", state=state)
            for state in ("healthy", "unhealthy", "unknown")
        ]
        assert sum(wk_health) == 3, wk_health
        assert value(found, "voipcloud_agent_heartbeats_total") > 0
        assert value(found, "voipcloud_webhook_attempts_total", result="failure") == 1
        assert value(found, "voipcloud_webhook_attempts_total", result="success") == len(
            expected_ids
        )
        # one route template per node action (the API contract has an operation each)
        action_posts = sum(
            count
            for (name, labels), count in found.items()
            if name == "voipcloud_http_request_duration_seconds_count"
            and dict(labels).get("method") == "POST"
            and dict(labels).get("status") == "200"
            and str(dict(labels).get("route", "")).startswith("/api/v1/nodes/{node_id}/actions/")
        )
        assert action_posts == 3 * 2 + 2
        routes = {dict(labels).get("route") for _name, labels in found} - {None}
        assert routes
        assert not any(c.isdigit() for r in routes for c in str(r).replace("v1", ""))

        # --- scraping is refused without a token, unless from an allowed address -------------
        assert httpx.get(f"{controller.url}/metrics").status_code == 401
        bad = httpx.get(f"{controller.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        allowed = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        assert allowed.get(f"{controller.url}/metrics").status_code == 200
        viewer_token = admin.post(
            "/api/v1/tokens", json={"name": "scraper", "scope": "read"}
        ).json()["token"]
        with_token = httpx.get(
            f"{controller.url}/metrics", headers={"Authorization": f"Bearer {viewer_token}"}
        )
        assert with_token.status_code == 200
    finally:
        controller.stop()


def test_a_slow_receiver_does_not_slow_requests_or_other_webhooks(tmp_path: Path) -> None:
    slow = Receiver(secret=SECRET, delay=5.0).start()
    quick = Receiver(secret=SECRET).start()
    controller = Controller(data_dir=tmp_path / "controller").start()
    try:
        admin = controller.admin()
        for target in (slow, quick):
            answer = admin.post(
                "/api/v1/webhooks",
                json={"url": target.url, "secret": SECRET, "events": ["node.status_changed"]},
            )
            assert answer.status_code == 201, answer.text
        hooks = admin.get("/api/v1/webhooks").json()["items"]
        node_id, _key = add_node_with_roles(admin, "slow-hook", ["wk"])
        other_id, _key = add_node_with_roles(admin, "slow-hook-2", ["wk"])
        # baseline latency of the same request, before any delivery is in flight
        baseline = []
        for _ in range(5):
            started = time.perf_counter()
            admin.get(f"/api/v1/nodes/{node_id}").raise_for_status()
            baseline.append(time.perf_counter() - started)
        # eight test deliveries to the slow receiver: it holds them 5 s each
        for _ in range(8):
            assert admin.post(f"/api/v1/webhooks/{hooks[0]['id']}/test").status_code == 202
        wait_for(lambda: slow.arrived >= 1, timeout=10, what="the slow receiver to be busy")
        timings = []
        started_all = time.perf_counter()
        for target in (node_id, other_id):
            started = time.perf_counter()
            answer = admin.post(f"/api/v1/nodes/{target}/actions/standby")
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
        for _ in range(5):
            started = time.perf_counter()
            admin.get(f"/api/v1/nodes/{node_id}").raise_for_status()
            timings.append(time.perf_counter() - started)
        assert max(timings) < 1.0, timings  # nothing waits for the 5 s receiver
        assert statistics.median(timings) < max(0.25, 5 * statistics.median(baseline))
        # the other webhook got both status changes while the slow one still sleeps
        wait_for(lambda: len(quick.accepted()) >= 2, timeout=5, what="the quick receiver")
        assert time.perf_counter() - started_all < 5.0
        print(f"request latency with a 5 s receiver busy: max {max(timings) * 1000:.0f} ms")
    finally:
        controller.stop()
        slow.stop()
        quick.stop()


def _recorded(admin: httpx.Client, operation: str) -> bool:
    answer = admin.get("/api/v1/events", params={"operation": operation})
    return bool(answer.json()["total"])
