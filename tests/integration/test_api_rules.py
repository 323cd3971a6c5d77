"""SPEC.md section 5 through the REST API: every rule refused with the right answer, and a
refusal changes nothing (the node's whole JSON, its events, all events, the listing).

Online, ActivateFailed and the states after them need the node's agent to report; these tests
report the outcome through the controller of the running app, the call the agent channel makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.live_controller import (
    API,
    BACKENDS,
    ControlledApi,
    action,
    add_extensions,
    add_node,
    assign,
    bring_online,
    expect,
    field_locs,
    get_node,
    module_app,
    node_events,
    operations,
    refused,
    report,
    running_app,
    unique,
)


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[ControlledApi]:
    """Shared by the tests that only touch nodes they add themselves."""
    with module_app(request) as running:
        yield running


@pytest.fixture
def fresh(tmp_path: Path, database_url: str) -> Iterator[ControlledApi]:
    """A fresh app, for the tests that change the IC node or the extensions."""
    with running_app(tmp_path, database_url) as running:
        yield running


def controller_node(live: ControlledApi) -> dict[str, Any]:
    listing = expect(live.client.get(f"{API}/nodes"), 200)
    ic = [n for n in listing["items"] if n["is_controller"]]
    assert len(ic) == 1
    return get_node(live.client, ic[0]["node_id"])


def nodes_in_every_status(live: ControlledApi) -> dict[str, dict[str, Any]]:
    """One node in each of the eight statuses, each carrying the jabber role."""
    c = live.client
    made: dict[str, int] = {}
    for status in (
        "Offline",
        "StandBy",
        "ActivateFailed",
        "Online",
        "Damaged",
        "DeactivatePending",
        "Deactivated",
        "Deleted",
    ):
        node_id = add_node(c, f"st-{status.lower()}")["node_id"]
        assign(c, node_id, "jabber")
        made[status] = node_id
    action(c, made["StandBy"], "standby")
    action(c, made["ActivateFailed"], "activate")
    report(live, made["ActivateFailed"], success=False, reason="port 5222 in use")
    for status in ("Online", "Damaged", "DeactivatePending"):
        bring_online(live, made[status])
    action(c, made["Damaged"], "mark-damaged", reason="disk errors")
    action(c, made["DeactivatePending"], "deactivate")
    action(c, made["Deactivated"], "standby")
    action(c, made["Deactivated"], "deactivate")
    expect(c.delete(f"{API}/nodes/{made['Deleted']}"), 200)
    nodes = {status: get_node(c, node_id) for status, node_id in made.items()}
    for status, node in nodes.items():
        assert node["status"] == status, node
    return nodes


LIVE = {
    "Offline",
    "StandBy",
    "ActivateFailed",
    "Online",
    "Damaged",
    "DeactivatePending",
    "Deactivated",
}
ALL = {*LIVE, "Deleted"}

# (label, method, path under the node, json body, statuses allowed by SPEC.md section 5, rule)
OPERATIONS: list[tuple[str, str, str, Any, set[str], str]] = [
    (
        "Assign Role",
        "POST",
        "/roles",
        {"role": "que"},
        {"Offline", "ActivateFailed", "Deactivated"},
        "assign-role-status",
    ),
    (
        "Delete Assignment",
        "DELETE",
        "/roles/jabber",
        None,
        {"Offline", "ActivateFailed", "Deactivated", "Deleted"},  # Deleted: see below, a 404
        "delete-assignment-status",
    ),
    (
        "Set StandBy",
        "POST",
        "/actions/standby",
        None,
        {"Offline", "ActivateFailed", "Deactivated"},
        "standby-status",
    ),
    (
        "Activate",
        "POST",
        "/actions/activate",
        None,
        {"Offline", "StandBy", "ActivateFailed", "Deactivated"},
        "activate-status",
    ),
    (
        "Deactivate",
        "POST",
        "/actions/deactivate",
        None,
        {"Online", "StandBy"},
        "deactivate-status",
    ),
    ("Mark Damaged", "POST", "/actions/mark-damaged", None, {"Online"}, "mark-damaged-status"),
    ("Fix Node", "POST", "/actions/fix", None, {"Damaged"}, "fix-status"),
    (
        "Delete Node",
        "DELETE",
        "",
        None,
        {"Offline", "StandBy", "ActivateFailed", "Deactivated", "DeactivatePending"},
        "delete-status",
    ),
    ("Edit node", "PATCH", "", {"container_id": "ctr-9"}, LIVE, "edit-node-status"),
    (
        "Regenerate session key",
        "POST",
        "/actions/regenerate-session-key",
        None,
        LIVE,
        "regenerate-session-key-status",
    ),
]


def test_every_operation_is_refused_outside_its_statuses_and_changes_nothing(
    live: ControlledApi,
) -> None:
    nodes = nodes_in_every_status(live)
    checked = 0
    for title, method, suffix, payload, allowed, rule in OPERATIONS:
        for status in sorted(ALL - allowed):
            node = nodes[status]
            data = refused(
                live.client,
                node["node_id"],
                method,
                f"{API}/nodes/{node['node_id']}{suffix}",
                json=payload,
                status=409,
                rule=rule,
                mentions=(title, node["hostname"], status),
            )
            if status != "Deleted":
                # the message says where the operation is allowed
                assert sorted(allowed & LIVE)[0] in data["detail"], data
            checked += 1
    assert checked == 43
    # a Deleted node has no role any more: deleting its assignment finds nothing
    deleted = nodes["Deleted"]
    refused(
        live.client,
        deleted["node_id"],
        "DELETE",
        f"{API}/nodes/{deleted['node_id']}/roles/jabber",
        status=404,
        mentions=(deleted["hostname"], "Jabber"),
    )


@pytest.mark.parametrize("status", ["Online", "Damaged"])
def test_delete_node_refused_while_online_or_damaged(live: ControlledApi, status: str) -> None:
    c = live.client
    host = unique("del-me")
    node_id = add_node(c, host)["node_id"]
    assign(c, node_id, "jabber")
    bring_online(live, node_id)
    if status == "Damaged":
        action(c, node_id, "mark-damaged", reason="fan failure")
    data = refused(
        c,
        node_id,
        "DELETE",
        f"{API}/nodes/{node_id}",
        status=409,
        rule="delete-status",
        mentions=("Delete Node", host, status),
    )
    assert "deactivate it first" in data["detail"]
    # the way out the message suggests works
    if status == "Damaged":
        action(c, node_id, "fix")
        report(live, node_id, success=True)
    assert action(c, node_id, "deactivate")["status"] == "DeactivatePending"
    report(live, node_id, success=True)
    deleted = expect(c.delete(f"{API}/nodes/{node_id}"), 200)
    assert deleted["status"] == "Deleted"
    assert deleted["roles"] == []


def test_a_deactivate_pending_node_can_be_deleted(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "stuck")["node_id"]
    assign(c, node_id, "jabber")
    bring_online(live, node_id)
    assert action(c, node_id, "deactivate")["status"] == "DeactivatePending"
    deleted = expect(c.delete(f"{API}/nodes/{node_id}"), 200)
    assert deleted["status"] == "Deleted"
    assert deleted["pending_operation"] is None
    assert deleted["session_key"] is None
    assert operations(c, node_id)[-1] == "delete"


def test_delete_assignment_allowed_only_when_offline_activate_failed_or_deactivated(
    live: ControlledApi,
) -> None:
    c = live.client
    node_id = add_node(c, "roles-node")["node_id"]
    assign(c, node_id, "jabber")
    assign(c, node_id, "que")
    assign(c, node_id, "wk")
    # Offline
    assert expect(c.delete(f"{API}/nodes/{node_id}/roles/wk"), 200)["roles"] == ["jabber", "que"]
    # ActivateFailed
    action(c, node_id, "activate")
    report(live, node_id, success=False, reason="boom")
    assert expect(c.delete(f"{API}/nodes/{node_id}/roles/que"), 200)["roles"] == ["jabber"]
    # StandBy: refused
    action(c, node_id, "standby")
    refused(
        c,
        node_id,
        "DELETE",
        f"{API}/nodes/{node_id}/roles/jabber",
        status=409,
        rule="delete-assignment-status",
        mentions=("Delete Assignment", "roles-node", "StandBy"),
    )
    # Deactivated
    action(c, node_id, "deactivate")
    assert expect(c.delete(f"{API}/nodes/{node_id}/roles/jabber"), 200)["roles"] == []
    assert operations(c, node_id).count("delete-assignment") == 3
    # a role the node does not carry
    refused(c, node_id, "DELETE", f"{API}/nodes/{node_id}/roles/sip", status=404)


def test_assign_role_allowed_only_when_offline_activate_failed_or_deactivated(
    live: ControlledApi,
) -> None:
    c = live.client
    node_id = add_node(c, "assign-node")["node_id"]
    first = assign(c, node_id, "jabber")  # Offline
    key = first["session_key"]
    assert key
    action(c, node_id, "activate")
    report(live, node_id, success=False)
    assert assign(c, node_id, "que")["session_key"] == key  # ActivateFailed; key kept
    action(c, node_id, "standby")
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/roles",
        json={"role": "wk"},
        status=409,
        rule="assign-role-status",
        mentions=("Assign Role", "assign-node", "StandBy"),
    )
    action(c, node_id, "deactivate")
    assert assign(c, node_id, "wk")["roles"] == ["jabber", "que", "wk"]  # Deactivated
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/roles",
        json={"role": "wk"},
        status=409,
        rule="role-already-assigned",
        mentions=("assign-node", "Worker"),
    )


@pytest.mark.parametrize("role", ["web", "sip", "pbx"])
def test_roles_needing_a_public_ip_are_refused_without_one(live: ControlledApi, role: str) -> None:
    c = live.client
    host = unique("private-only")
    node_id = add_node(c, host)["node_id"]
    name = {"web": "Management Interface", "sip": "SIP", "pbx": "PBX"}[role]
    data = refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/roles",
        json={"role": role},
        status=409,
        rule="public-ip-required",
        mentions=(name, host, "public IP"),
    )
    assert data["rule"] == "public-ip-required"
    # roles that do not need one are fine on the same node
    assert assign(c, node_id, "jabber")["roles"] == ["jabber"]
    # with a public IP the role can be assigned, and the IP cannot be taken away again
    expect(c.patch(f"{API}/nodes/{node_id}", json={"public_ip": "203.0.113.40"}), 200)
    assign(c, node_id, role)
    refused(
        c,
        node_id,
        "PATCH",
        f"{API}/nodes/{node_id}",
        json={"public_ip": None},
        status=409,
        rule="public-ip-required",
        mentions=(host, role),
    )


def test_distributed_database_only_while_at_most_three_extensions(fresh: ControlledApi) -> None:
    live = fresh
    c = live.client
    first = add_node(c, "dd-1")["node_id"]
    second = add_node(c, "dd-2")["node_id"]
    add_extensions(c, "1001", "1002", "1003")
    assert "dd" in assign(c, first, "dd")["roles"]  # three: still allowed
    add_extensions(c, "1004")
    data = refused(
        c,
        second,
        "POST",
        f"{API}/nodes/{second}/roles",
        json={"role": "dd"},
        status=409,
        rule="dd-extension-limit",
        mentions=("Distributed Database", "at most 3", "there are 4"),
    )
    assert data["rule"] == "dd-extension-limit"
    expect(c.delete(f"{API}/extensions/1004"), 204)
    assert "dd" in assign(c, second, "dd")["roles"]


def test_edit_role_parameters_on_an_online_node(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "sip-online", public_ip="203.0.113.50")["node_id"]
    assign(c, node_id, "sip")
    bring_online(live, node_id)
    count = len(node_events(c, node_id))

    # Customer Connectivity stays editable and keeps the node Online
    edited = expect(
        c.patch(
            f"{API}/nodes/{node_id}/roles/sip",
            json={"parameters": {"customer_connectivity": "sip.example.com"}},
        ),
        200,
    )
    assert edited["status"] == "Online"
    assert edited["status_reason"] is None
    sip = edited["assignments"][0]["parameters"]
    assert sip["customer_connectivity"] == {"value": "sip.example.com", "source": "explicit"}
    events = node_events(c, node_id)
    assert len(events) == count + 1
    assert events[-1]["operation"] == "edit-role"
    assert events[-1]["status_before"] == events[-1]["status_after"] == "Online"
    assert "customer_connectivity" in events[-1]["reason"]

    # any other parameter marks the node Damaged, with a reason naming the parameter
    damaged = expect(
        c.patch(f"{API}/nodes/{node_id}/roles/sip", json={"parameters": {"sip_port": 5070}}),
        200,
    )
    assert damaged["status"] == "Damaged"
    assert "sip_port" in damaged["status_reason"]
    assert damaged["assignments"][0]["parameters"]["sip_port"]["value"] == 5070
    events = node_events(c, node_id)
    assert [e["operation"] for e in events[count + 1 :]] == ["edit-role", "configuration-changed"]
    change = events[-1]
    assert (change["status_before"], change["status_after"]) == ("Online", "Damaged")
    assert "sip_port" in change["reason"]
    assert change["actor"] == "controller"

    # on a Damaged node every parameter is editable and the status stays
    again = expect(
        c.patch(f"{API}/nodes/{node_id}/roles/sip", json={"parameters": {"max_calls": 10}}), 200
    )
    assert again["status"] == "Damaged"


def test_edit_role_parameters_on_other_statuses_keeps_the_status(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "edit-standby")["node_id"]
    assign(c, node_id, "jabber")
    action(c, node_id, "standby")
    edited = expect(
        c.patch(f"{API}/nodes/{node_id}/roles/jabber", json={"parameters": {"c2s_port": 5223}}),
        200,
    )
    assert edited["status"] == "StandBy"
    assert edited["assignments"][0]["parameters"]["c2s_port"]["value"] == 5223
    # a role the node does not carry
    refused(
        c,
        node_id,
        "PATCH",
        f"{API}/nodes/{node_id}/roles/que",
        json={"parameters": {"port": 5673}},
        status=404,
    )


def test_edit_role_parameters_while_deactivate_pending(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "edit-pending")["node_id"]
    assign(c, node_id, "jabber")
    bring_online(live, node_id)
    action(c, node_id, "deactivate")
    edited = expect(
        c.patch(f"{API}/nodes/{node_id}/roles/jabber", json={"parameters": {"c2s_port": 5223}}),
        200,
    )
    assert edited["status"] == "DeactivatePending"
    assert edited["assignments"][0]["parameters"]["c2s_port"]["value"] == 5223
    assert edited["pending_operation"]["kind"] == "deactivate"
    # the deactivation still completes
    report(live, node_id, success=True)
    assert get_node(c, node_id)["status"] == "Deactivated"


def test_administrative_remove_rules(fresh: ControlledApi) -> None:
    live = fresh
    c = live.client
    ic = controller_node(live)
    ic_id = ic["node_id"]
    host = ic["hostname"]
    expect(c.patch(f"{API}/nodes/{ic_id}", json={"public_ip": "203.0.113.1"}), 200)
    for role in ("sip", "jabber", "wk"):
        assign(c, ic_id, role)
    other = add_node(c, "other-sip", public_ip="203.0.113.2")["node_id"]
    assign(c, other, "sip")
    remove = f"{API}/nodes/{ic_id}/roles/{{}}/remove"

    # only SIP, PBX, Jabber, Queue, Management Interface
    for role in ("wk", "ic"):
        data = refused(
            c,
            ic_id,
            "POST",
            remove.format(role),
            json={"confirm": True},
            status=409,
            rule="admin-remove-role",
        )
        for name in ("SIP", "PBX", "Jabber", "Queue", "Management Interface"):
            assert name in data["detail"]
    # only on the IC node
    refused(
        c,
        other,
        "POST",
        f"{API}/nodes/{other}/roles/sip/remove",
        json={"confirm": True},
        status=409,
        rule="admin-remove-controller-only",
        mentions=("other-sip", "Infrastructure Controller"),
    )
    # a role the IC node does not carry; a role that does not exist
    refused(c, ic_id, "POST", remove.format("pbx"), json={"confirm": True}, status=404)
    refused(c, ic_id, "POST", remove.format("nope"), json={"confirm": True}, status=404)
    # only while fewer than three extensions are provisioned
    add_extensions(c, "2001", "2002", "2003")
    refused(
        c,
        ic_id,
        "POST",
        remove.format("sip"),
        json={"confirm": True},
        status=409,
        rule="admin-remove-extensions",
        mentions=("fewer than three", "there are 3"),
    )
    expect(c.delete(f"{API}/extensions/2003"), 204)
    # the warning must be confirmed: without confirm, a 422 carrying the warning text
    for payload in ({}, {"confirm": False}):
        data = refused(
            c,
            ic_id,
            "POST",
            remove.format("sip"),
            json=payload,
            status=422,
            mentions=("will be removed from the Infrastructure Controller", host),
        )
        assert ("body", "confirm") in field_locs(data)
    # confirmed: the role is gone, with an event
    done = expect(c.post(remove.format("sip"), json={"confirm": True}), 200)
    assert done["roles"] == ["ic", "jabber", "wk"]
    assert done["status"] == "Offline"
    last = node_events(c, ic_id)[-1]
    assert last["operation"] == "admin-remove"
    assert "sip" in last["reason"]
    assert last["actor"] == "admin:admin"


def test_administrative_remove_works_whatever_the_status(fresh: ControlledApi) -> None:
    live = fresh
    c = live.client
    ic_id = controller_node(live)["node_id"]
    assign(c, ic_id, "jabber")
    assign(c, ic_id, "que")
    bring_online(live, ic_id)
    done = expect(c.post(f"{API}/nodes/{ic_id}/roles/que/remove", json={"confirm": True}), 200)
    assert done["roles"] == ["ic", "jabber"]
    assert done["status"] == "Online"
    action(c, ic_id, "mark-damaged")
    done = expect(c.post(f"{API}/nodes/{ic_id}/roles/jabber/remove", json={"confirm": True}), 200)
    assert done["roles"] == ["ic"]
    assert done["status"] == "Damaged"
    assert operations(c, ic_id).count("admin-remove") == 2


def test_standby_goes_straight_to_deactivated(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "standby-node")["node_id"]
    assign(c, node_id, "jabber")
    action(c, node_id, "standby")
    deactivated = action(c, node_id, "deactivate")
    assert deactivated["status"] == "Deactivated"
    assert deactivated["pending_operation"] is None
    last = node_events(c, node_id)[-1]
    assert (last["operation"], last["status_before"], last["status_after"]) == (
        "deactivate",
        "StandBy",
        "Deactivated",
    )


def test_activate_needs_a_role(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "no-roles")["node_id"]
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/activate",
        status=409,
        rule="activate-needs-role",
        mentions=("Activate", "no-roles", "no role"),
    )
    action(c, node_id, "standby")
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/activate",
        status=409,
        rule="activate-needs-role",
        mentions=("no-roles",),
    )


def test_the_controller_node_and_its_role_are_protected(live: ControlledApi) -> None:
    c = live.client
    ic = controller_node(live)
    ic_id = ic["node_id"]
    refused(
        c,
        ic_id,
        "DELETE",
        f"{API}/nodes/{ic_id}",
        status=409,
        rule="controller-not-deletable",
        mentions=(ic["hostname"], "Infrastructure Controller"),
    )
    refused(
        c,
        ic_id,
        "DELETE",
        f"{API}/nodes/{ic_id}/roles/ic",
        status=409,
        rule="controller-role-reserved",
        mentions=("Infrastructure Controller",),
    )
    other = add_node(c, "wannabe-ic", public_ip="203.0.113.60")["node_id"]
    refused(
        c,
        other,
        "POST",
        f"{API}/nodes/{other}/roles",
        json={"role": "ic"},
        status=409,
        rule="controller-role-reserved",
        mentions=("Infrastructure Controller",),
    )
    assert get_node(c, ic_id)["roles"] == ["ic"]


def test_hostname_unique_among_live_nodes_and_free_after_delete(live: ControlledApi) -> None:
    c = live.client
    first = add_node(c, "edge-1")["node_id"]
    second = add_node(c, "edge-2")["node_id"]
    for spelling in ("edge-1", "EDGE-1", "edge-1.", " edge-1 "):
        refused(
            c,
            None,
            "POST",
            f"{API}/nodes",
            json={"hostname": spelling, "private_ip": "10.0.0.2"},
            status=409,
            rule="hostname-unique",
            mentions=("edge-1",),
        )
    refused(
        c,
        second,
        "PATCH",
        f"{API}/nodes/{second}",
        json={"hostname": "Edge-1"},
        status=409,
        rule="hostname-unique",
        mentions=("edge-1",),
    )
    # renaming a node to its own name is not a conflict
    expect(c.patch(f"{API}/nodes/{first}", json={"hostname": "edge-1"}), 200)

    expect(c.delete(f"{API}/nodes/{first}"), 200)
    renamed = expect(c.patch(f"{API}/nodes/{second}", json={"hostname": "edge-1"}), 200)
    assert renamed["hostname"] == "edge-1"
    # and once more after the rename frees edge-2
    third = add_node(c, "edge-2")
    assert third["node_id"] not in (first, second)
    # the Deleted node keeps its name for history
    assert get_node(c, first)["hostname"] == "edge-1"


def test_regenerate_session_key_changes_the_key(live: ControlledApi) -> None:
    c = live.client
    node_id = add_node(c, "keyed")["node_id"]
    key = assign(c, node_id, "jabber")["session_key"]
    regenerated = action(c, node_id, "regenerate-session-key")
    assert regenerated["session_key"]
    assert regenerated["session_key"] != key
    assert len(regenerated["session_key"]) >= 32
    assert get_node(c, node_id)["session_key"] == regenerated["session_key"]
    assert regenerated["status"] == "Offline"
    assert operations(c, node_id)[-1] == "regenerate-session-key"
    again = action(c, node_id, "regenerate-session-key")
    assert again["session_key"] not in (key, regenerated["session_key"])
    # the old keys no longer let an agent join (the refusal is logged); the current one does
    with live.anonymous() as agent:
        for old in (key, regenerated["session_key"]):
            answer = expect(agent.post(f"{API}/agent/join", json={"session_key": old}), 401)
            assert "not valid" in answer["detail"]
        joined = expect(
            agent.post(f"{API}/agent/join", json={"session_key": again["session_key"]}), 200
        )
        assert joined["node_id"] == node_id


def test_regenerate_session_key_refused_while_deactivate_pending(live: ControlledApi) -> None:
    """A decision where SPEC.md is silent: the agent of a DeactivatePending node must still
    sign the deactivation complete, so its key is not replaced under it."""
    c = live.client
    host = unique("keyed-pending")
    node_id = add_node(c, host)["node_id"]
    key = assign(c, node_id, "jabber")["session_key"]
    bring_online(live, node_id)
    action(c, node_id, "deactivate")
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/regenerate-session-key",
        status=409,
        rule="operation-in-progress",
        mentions=(host, "deactivate"),
    )
    assert get_node(c, node_id)["session_key"] == key
    report(live, node_id, success=True)
    assert get_node(c, node_id)["status"] == "Deactivated"
    assert action(c, node_id, "regenerate-session-key")["session_key"] != key
