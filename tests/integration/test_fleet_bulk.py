"""Bulk actions and the status counters through the real API, on SQLite and PostgreSQL.

Each node of a selection is checked against its own rules (the rulebook, domain/policy.py):
the per-node results are compared with what the rulebook answers for that node, and with the
node's state afterwards (done: changed as its single-node action would; refused: unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.accounts_helpers import add_account, csrf_of, session, web_login
from tests.integration.infrastructure_helpers import API, Infra, running_infra
from voipcloud.domain import policy
from voipcloud.domain.bulk import MAX_SELECTION
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.policy import NodeFacts
from voipcloud.domain.statuses import NodeStatus


@pytest.fixture
def infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    with running_infra(tmp_path, database_url) as running:
        yield running


def bulk(infra: Infra, action: str, body: dict[str, Any], status: int = 200) -> Any:
    answer = infra.client.post(f"{API}/nodes/bulk/{action}", json=body)
    assert answer.status_code == status, answer.text
    return answer.json()


def by_node(answer: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["node_id"]: r for r in answer["results"]}


def damaged_node(infra: Infra, hostname: str) -> int:
    node_id = infra.add_node(hostname, role="que")
    infra.bring_online(node_id)
    marked = infra.client.post(
        f"{API}/nodes/{node_id}/actions/mark-damaged", json={"reason": "disk errors"}
    )
    assert marked.status_code == 200, marked.text
    return node_id


def test_fix_over_a_filter_mixing_damaged_and_online_nodes(infra: Infra) -> None:
    damaged = [damaged_node(infra, f"dm-{n}") for n in range(3)]
    online = [infra.add_node(f"on-{n}", role="que") for n in range(2)]
    for node_id in online:
        infra.bring_online(node_id)
    offline = infra.add_node("off-0", role="que")
    # the filter: every node carrying the que role (Damaged, Online and Offline ones)
    before = {n: infra.node(n) for n in [*damaged, *online, offline]}
    answer = bulk(infra, "fix", {"filter": {"role": "que"}, "reason": "after the disk swap"})
    results = by_node(answer)
    assert set(results) == set(before)  # exactly what the filter matched, no other node
    assert [r["node_id"] for r in answer["results"]] == sorted(before)  # in id order
    assert (answer["done"], answer["refused"]) == (3, 3)
    for node_id, was in before.items():
        facts = NodeFacts(
            hostname=was["hostname"], status=NodeStatus(was["status"]), roles=frozenset({"que"})
        )
        expected = policy.decide(Operation.FIX, facts)  # the rulebook, for this node
        got = results[node_id]
        now = infra.node(node_id)
        assert got["hostname"] == was["hostname"]
        if expected.allowed:
            assert got["outcome"] == "done", got
            assert "rule" not in got or got["rule"] is None
            assert now["pending_operation"]["kind"] == "fix"
            assert now["status"] == "Damaged"  # until its agent reports
        else:
            assert got["outcome"] == "refused", got
            assert got["rule"] == expected.rule == "fix-status"
            assert was["hostname"] in got["reason"]
            assert now["updated_at"] == was["updated_at"]  # untouched
            assert now["pending_operation"] is None
    # each fix is the single-node operation, recorded as such on its node
    for node_id in damaged:
        ops = [e["operation"] for e in infra.events(node_id)]
        assert ops[0] == "fix"
        infra.report(node_id)
        assert infra.node(node_id)["status"] == "Online"
    # the same call again: now every node is refused by its own status, nothing changes
    again = bulk(infra, "fix", {"filter": {"role": "que"}})
    assert again["done"] == 0
    assert {r["rule"] for r in again["results"]} == {"fix-status"}


def test_maintenance_leaves_a_node_out_unless_included(infra: Infra) -> None:
    c = infra.client
    nodes = []
    for n in range(3):
        answer = c.post(f"{API}/nodes", json={"hostname": f"sb-{n}", "private_ip": "10.3.0.1"})
        nodes.append(answer.json()["node_id"])
    kept = nodes[1]
    assert c.post(f"{API}/nodes/{kept}/maintenance", json={"reason": "rack 4"}).status_code == 200
    answer = bulk(infra, "standby", {"node_ids": nodes})
    results = by_node(answer)
    assert results[kept]["outcome"] == "refused"
    assert results[kept]["rule"] == "node-in-maintenance"
    assert "rack 4" in results[kept]["reason"]
    assert infra.node(kept)["status"] == "Offline"
    assert [results[n]["outcome"] for n in (nodes[0], nodes[2])] == ["done", "done"]
    assert infra.node(nodes[0])["status"] == "StandBy"
    # chosen explicitly: included
    included = bulk(infra, "standby", {"node_ids": [kept], "include_maintenance": True})
    assert included["results"][0]["outcome"] == "done"
    assert infra.node(kept)["status"] == "StandBy"
    assert infra.node(kept)["maintenance"]["reason"] == "rack 4"  # still in maintenance
    # by filter too, and the maintenance filter selects them
    deactivated = bulk(infra, "deactivate", {"filter": {"maintenance": False, "q": "sb-"}})
    assert {r["node_id"] for r in deactivated["results"]} == {nodes[0], nodes[2]}
    assert deactivated["done"] == 2
    only_kept = bulk(infra, "deactivate", {"filter": {"maintenance": True}})
    assert [(r["node_id"], r["rule"]) for r in only_kept["results"]] == [
        (kept, "node-in-maintenance")
    ]


def test_role_actions_delete_and_unknown_nodes(infra: Infra) -> None:
    c = infra.client
    plain = []
    for n in range(2):
        answer = c.post(f"{API}/nodes", json={"hostname": f"ra-{n}", "private_ip": "10.4.0.1"})
        plain.append(answer.json()["node_id"])
    online = infra.add_node("ra-online", role="que")
    infra.bring_online(online)
    assigned = bulk(
        infra,
        "assign-role",
        {"node_ids": [*plain, online, 999999], "role": "jabber", "parameters": {}},
    )
    results = by_node(assigned)
    assert [results[n]["outcome"] for n in plain] == ["done", "done"]
    assert "jabber" in infra.node(plain[0])["roles"]
    assert results[online]["rule"] == "assign-role-status"
    assert results[999999]["outcome"] == "refused"
    assert results[999999]["hostname"] is None
    assert "999999" in results[999999]["reason"]
    # assigning it again: each node refuses on its own rule
    twice = bulk(infra, "assign-role", {"node_ids": plain, "role": "jabber"})
    assert {r["rule"] for r in twice["results"]} == {"role-already-assigned"}
    removed = bulk(infra, "delete-assignment", {"node_ids": plain, "role": "jabber"})
    assert removed["done"] == 2
    assert infra.node(plain[1])["roles"] == []
    deleted = bulk(infra, "delete", {"node_ids": [plain[0], online]})
    results = by_node(deleted)
    assert results[plain[0]]["outcome"] == "done"
    assert results[plain[0]]["status"] == "Deleted"
    assert results[online]["rule"] == "delete-status"
    assert infra.node(online)["status"] == "Online"
    # the controller node keeps its own rule
    ic = infra.controller_id()
    refused = bulk(infra, "delete", {"node_ids": [ic]})
    assert refused["results"][0]["rule"] == "controller-not-deletable"


def test_bad_requests_are_422_naming_the_field(infra: Infra) -> None:
    c = infra.client
    node = c.post(f"{API}/nodes", json={"hostname": "bad-0", "private_ip": "10.5.0.1"}).json()
    node_id = node["node_id"]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("fix", {}, "node_ids"),  # neither
        ("fix", {"node_ids": [node_id], "filter": {}}, "filter"),  # both
        ("fix", {"node_ids": []}, "node_ids"),
        ("fix", {"node_ids": list(range(1, MAX_SELECTION + 2))}, "node_ids"),
        ("fix", {"filter": {"status": "Sleeping"}}, "status"),
        ("fix", {"filter": {"colour": "red"}}, "colour"),
        ("explode", {"node_ids": [node_id]}, "action"),
        ("assign-role", {"node_ids": [node_id]}, "role"),
        ("assign-role", {"node_ids": [node_id], "role": "nope"}, "role"),
        ("assign-role", {"node_ids": [node_id], "role": "que", "parameters": {"x": 1}}, "x"),
        ("fix", {"node_ids": [node_id], "role": "que"}, "role"),
        ("fix", {"node_ids": [node_id], "force": True, "reason": "r"}, "force"),
        ("deactivate", {"node_ids": [node_id], "force": True}, "reason"),
        ("standby", {"node_ids": [node_id], "reason": "x" * 1001}, "reason"),
        ("standby", {"node_ids": ["one"]}, "node_ids"),
        ("standby", {"node_ids": [node_id], "include_maintenance": "yes"}, "include_maintenance"),
    ]
    for action, body, field in cases:
        answer = c.post(f"{API}/nodes/bulk/{action}", json=body)
        assert answer.status_code == 422, (action, body, answer.text)
        assert field in json.dumps(answer.json()["detail"]), (action, body, answer.text)
    assert infra.node(node_id)["status"] == "Offline"  # nothing was done
    assert [e["operation"] for e in infra.events(node_id)] == ["add-node"]


def test_a_filter_matching_too_many_is_refused_with_the_count(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = infra.client
    for n in range(4):
        c.post(f"{API}/nodes", json={"hostname": f"many-{n}", "private_ip": "10.6.0.1"})
    monkeypatch.setattr("voipcloud.domain.bulk.MAX_SELECTION", 3)
    answer = c.post(f"{API}/nodes/bulk/standby", json={"filter": {"q": "many-"}})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", "filter"]
    assert "matches 4 nodes" in detail["msg"]
    assert "at most 3" in detail["msg"]
    statuses = {n["status"] for n in c.get(f"{API}/nodes", params={"q": "many-"}).json()["items"]}
    assert statuses == {"Offline"}  # nothing was done
    # within the bound: done
    assert bulk(infra, "standby", {"filter": {"q": "many-", "role": None}}, 422)  # 4 > 3
    assert bulk(infra, "standby", {"filter": {"q": "many-1"}})["done"] == 1


def test_viewer_may_read_the_counters_but_not_act(infra: Infra, tmp_path: Path) -> None:
    c = infra.client
    api = type("Api", (), {"client": c})()
    add_account(api, "vic", "viewer")  # type: ignore[arg-type]
    add_account(api, "opal", "operator")  # type: ignore[arg-type]
    base = str(c.base_url)
    vic, opal = session(base, "vic"), session(base, "opal")
    node = c.post(f"{API}/nodes", json={"hostname": "perm-0", "private_ip": "10.8.0.1"}).json()
    refused = vic.post(f"{API}/nodes/bulk/standby", json={"node_ids": [node["node_id"]]})
    assert refused.status_code == 403
    assert refused.json()["rule"] == "role-forbidden"
    assert infra.node(node["node_id"])["status"] == "Offline"
    done = opal.post(f"{API}/nodes/bulk/standby", json={"node_ids": [node["node_id"]]})
    assert done.status_code == 200
    assert done.json()["results"][0]["outcome"] == "done"
    assert vic.get(f"{API}/nodes/summary").status_code == 200


def test_status_counters(infra: Infra) -> None:
    c = infra.client
    ids = [
        c.post(f"{API}/nodes", json={"hostname": f"cnt-{n}", "private_ip": "10.9.0.1"}).json()[
            "node_id"
        ]
        for n in range(4)
    ]
    bulk(infra, "standby", {"node_ids": ids[:2]})
    c.delete(f"{API}/nodes/{ids[3]}")
    c.post(f"{API}/nodes/{ids[0]}/maintenance", json={"reason": "cabling"})
    summary = c.get(f"{API}/nodes/summary").json()
    # the controller node is Offline too
    assert summary["by_status"] == {
        "Offline": 2,
        "StandBy": 2,
        "ActivateFailed": 0,
        "Damaged": 0,
        "Online": 0,
        "Deleted": 1,
        "Deactivated": 0,
        "DeactivatePending": 0,
    }
    assert summary["total"] == 4  # live nodes
    assert summary["in_maintenance"] == 1
    standby = next(s for s in summary["statuses"] if s["status"] == "StandBy")
    assert standby == {"status": "StandBy", "nodes": 2, "in_maintenance": 1}
    # it is not a node: other methods are 405 naming GET (not /nodes/{node_id}'s 422)
    for method in ("PATCH", "DELETE"):
        answer = c.request(method, f"{API}/nodes/summary")
        assert answer.status_code == 405, answer.text
        assert answer.headers["Allow"] == "GET"
    # each counter agrees with the listing's filter it links to
    for status, count in summary["by_status"].items():
        listed = c.get(f"{API}/nodes", params={"status": status, "limit": 1}).json()["total"]
        assert listed == count, status


def test_web_bulk_needs_the_nodes_permission_and_its_csrf_token(infra: Infra) -> None:
    c = infra.client
    node = c.post(f"{API}/nodes", json={"hostname": "webb-0", "private_ip": "10.8.1.1"}).json()
    api = type("Api", (), {"client": c})()
    add_account(api, "wendy", "viewer")  # type: ignore[arg-type]
    add_account(api, "omar", "operator")  # type: ignore[arg-type]
    base = str(c.base_url)
    viewer, operator = web_login(base, "wendy"), web_login(base, "omar")
    listing = viewer.get("/").text
    assert 'id="bulk-form"' not in listing  # a viewer gets no bar and no checkboxes
    assert 'name="node_ids"' not in listing
    assert 'id="status-counters"' in listing  # but the counters
    shown = operator.get("/").text
    assert 'id="bulk-form"' in shown
    assert f'id="select-{node["node_id"]}"' in shown
    form = {
        "action": "standby",
        "node_ids": str(node["node_id"]),
        "confirm": "yes",
        "csrf_token": csrf_of(viewer),
    }
    assert viewer.post("/nodes/bulk", data=form).status_code == 403
    assert operator.post("/nodes/bulk", data={**form, "csrf_token": "forged"}).status_code == 403
    assert infra.node(node["node_id"])["status"] == "Offline"  # neither did anything
    done = operator.post("/nodes/bulk", data={**form, "csrf_token": csrf_of(operator)})
    assert done.status_code == 200
    assert f'id="result-{node["node_id"]}" data-outcome="done"' in done.text
    assert infra.node(node["node_id"])["status"] == "StandBy"
