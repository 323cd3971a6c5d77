"""Maintenance mode through the real API on SQLite and PostgreSQL: enter / leave with who and
why, shown in the detail and the listing, filterable, recorded as events, bumping the node's
version; refused for Deleted nodes; muting webhook deliveries; the metrics gauge."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveApi
from tests.integration.accounts_helpers import API, add_account, session
from tests.support.processes import wait_for
from tests.support.receiver import Receiver

SECRET = "maintenance-secret-0123456789"


def add_node(client: httpx.Client, hostname: str) -> int:
    answer = client.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": "10.7.0.1"})
    assert answer.status_code == 201, answer.text
    node_id: int = answer.json()["node_id"]
    return node_id


def listed(client: httpx.Client, **params: Any) -> dict[int, dict[str, Any]]:
    answer = client.get(f"{API}/nodes", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    return {n["node_id"]: n for n in answer.json()["items"]}


def test_enter_and_leave_maintenance(api: LiveApi) -> None:
    c = api.client
    node = add_node(c, "maint-01")
    other = add_node(c, "maint-02")
    path = f"{API}/nodes/{node}/maintenance"
    # the reason is required, one line, bounded; nothing changes when refused
    for body, field in (
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": "two\nlines"}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "ok", "extra": 1}, "extra"),
    ):
        answer = c.post(path, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in json.dumps(answer.json()["detail"]), answer.text
    before = c.get(f"{API}/nodes/{node}")
    assert before.json()["maintenance"] is None

    entered = c.post(path, json={"reason": "  disk replacement OPS-12 "})
    assert entered.status_code == 200, entered.text
    flag = entered.json()["maintenance"]
    assert flag["reason"] == "disk replacement OPS-12"
    assert flag["by"] == "admin:admin"
    assert flag["since"]
    assert entered.json()["status"] == "Offline"  # orthogonal to the status
    after = c.get(f"{API}/nodes/{node}")
    assert after.headers["ETag"] != before.headers["ETag"]  # the version moved on
    # a PATCH with the version read before is refused: the maintenance flag changed it
    stale = c.patch(
        f"{API}/nodes/{node}",
        json={"hostname": "m-x"},
        headers={"If-Match": before.headers["ETag"]},
    )
    assert stale.status_code == 412, stale.text
    assert stale.json()["changed"] == ["maintenance"]

    # listing items carry it, and the filter finds it
    items = listed(c)
    assert items[node]["maintenance"]["reason"] == "disk replacement OPS-12"
    assert items[other]["maintenance"] is None
    assert set(listed(c, maintenance="true")) == {node}
    assert node not in listed(c, maintenance="false")
    assert other in listed(c, maintenance="false")
    assert c.get(f"{API}/nodes", params={"maintenance": "maybe"}).status_code == 422

    again = c.post(path, json={"reason": "another"})
    assert again.status_code == 409
    assert again.json()["rule"] == "maintenance-already-on"
    assert "maint-01" in again.json()["detail"]

    left = c.delete(path)
    assert left.status_code == 200, left.text
    assert left.json()["maintenance"] is None
    not_on = c.delete(path)
    assert not_on.status_code == 409
    assert not_on.json()["rule"] == "maintenance-not-on"
    ops = [e["operation"] for e in c.get(f"{API}/nodes/{node}/events").json()["items"]]
    assert ops[:2] == ["leave-maintenance", "enter-maintenance"]
    history = c.get(f"{API}/nodes/{node}/events").json()["items"]
    assert history[1]["reason"] == "entered maintenance: disk replacement OPS-12"
    assert history[1]["status_before"] == history[1]["status_after"] == "Offline"
    assert "disk replacement OPS-12" in history[0]["reason"]

    # a Deleted node cannot enter maintenance
    assert c.delete(f"{API}/nodes/{other}").status_code == 200
    refused = c.post(f"{API}/nodes/{other}/maintenance", json={"reason": "gone"})
    assert refused.status_code == 409
    assert refused.json()["rule"] == "maintenance-deleted"
    assert c.get(f"{API}/nodes/{other}").json()["maintenance"] is None
    assert c.post(f"{API}/nodes/999999/maintenance", json={"reason": "x"}).status_code == 404

    # permission `nodes`: an operator may, a viewer may not (and sees the flag)
    add_account(api, "olga", "operator")
    add_account(api, "vera", "viewer")
    olga, vera = session(api.base_url, "olga"), session(api.base_url, "vera")
    assert olga.post(path, json={"reason": "by olga"}).json()["maintenance"]["by"] == (
        "operator:olga"
    )
    denied = vera.delete(path)
    assert denied.status_code == 403
    assert denied.json()["rule"] == "role-forbidden"
    assert vera.get(f"{API}/nodes/{node}").json()["maintenance"]["reason"] == "by olga"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(secret=SECRET).start()
    yield started
    started.stop()


def test_no_webhook_delivery_about_a_node_in_maintenance(api: LiveApi, receiver: Receiver) -> None:
    c = api.client
    hook = c.post(
        f"{API}/webhooks",
        json={"url": receiver.url, "secret": SECRET, "events": ["node.status_changed"]},
    )
    assert hook.status_code == 201, hook.text
    kept, loud = add_node(c, "muted-01"), add_node(c, "loud-01")
    assert c.post(f"{API}/nodes/{kept}/maintenance", json={"reason": "muted"}).status_code == 200
    for node_id in (kept, loud):
        assert c.post(f"{API}/nodes/{node_id}/actions/standby").status_code == 200
    wait_for(lambda: len(receiver.accepted()) >= 1, timeout=15, what="the loud node's change")
    time.sleep(1.5)  # the muted node's change would have arrived by now
    got = receiver.accepted()
    assert [(b["node"]["id"], b["data"]["status_after"]) for b in got] == [(loud, "StandBy")]
    assert all(r.signature_ok for r in receiver.got)
    # out of maintenance, its next change is delivered again (and only that one)
    assert c.delete(f"{API}/nodes/{kept}/maintenance").status_code == 200
    assert c.post(f"{API}/nodes/{kept}/actions/deactivate").status_code == 200
    wait_for(lambda: len(receiver.accepted()) >= 2, timeout=15, what="the change after")
    time.sleep(1.0)
    got = receiver.accepted()
    assert [(b["node"]["id"], b["data"]["status_after"]) for b in got] == [
        (loud, "StandBy"),
        (kept, "Deactivated"),
    ]
    hook_id = hook.json()["id"]
    log = c.get(f"{API}/webhooks/{hook_id}/deliveries").json()
    assert log["total"] == 2  # no delivery row was made for the muted change


def _gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in the scrape")


def test_metrics_count_the_nodes_in_maintenance(api: LiveApi) -> None:
    c = api.client
    nodes = [add_node(c, f"gauge-{n}") for n in range(3)]
    assert _gauge(c.get("/metrics").text, "voipcloud_nodes_in_maintenance") == 0
    for node_id in nodes[:2]:
        c.post(f"{API}/nodes/{node_id}/maintenance", json={"reason": "rack move"})
    assert _gauge(c.get("/metrics").text, "voipcloud_nodes_in_maintenance") == 2
    c.delete(f"{API}/nodes/{nodes[0]}/maintenance")
    assert _gauge(c.get("/metrics").text, "voipcloud_nodes_in_maintenance") == 1
    # a Deleted node is not counted (it may still carry the flag)
    assert c.delete(f"{API}/nodes/{nodes[1]}").status_code == 200
    assert _gauge(c.get("/metrics").text, "voipcloud_nodes_in_maintenance") == 0
