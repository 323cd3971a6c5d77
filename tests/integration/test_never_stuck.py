"""Never stuck (issue 11), through the REST API on SQLite and PostgreSQL.

The invariant: no node stays in a transient situation (an activation or a fix pending for its
agent, or DeactivatePending) longer than its deadline without a visible reason and an action
that can move it. Activations and fixes have the controller's deadline (the activation
timeout), after which the controller itself moves them on. A deactivation has no controller
deadline (its agent retries it); past the same bound it must show why it waits, and the
administrator must be able to end it: Force deactivation (or Delete Node).

The "action that can move it" is checked twice: in the lifecycle table, and by performing it
through the API and seeing the node move. The outcomes that need the node's agent are reported
through the running app's controller, the call the agent channel makes
(tests/integration/live_controller.py); tests/e2e/test_force_deactivation.py does the same
with a real agent process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.live_controller import (
    API,
    ControlledApi,
    action,
    add_node,
    assign,
    bring_online,
    expect,
    get_node,
    node_events,
    refused,
    report,
    running_app,
    unique,
)
from voipcloud.domain import lifecycle
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.statuses import NodeStatus

TIMEOUT = 3.0  # the activation timeout of these apps, in seconds
GRACE = 3.0  # the controller's expiry tick plus request latency on a busy machine
# what the controller does by itself when an agent operation outlives its deadline
CONTROLLER_WAYS = {"activate": Operation.ACTIVATION_TIMED_OUT, "fix": Operation.FIX_FAILED}


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[ControlledApi]:
    with running_app(tmp_path, database_url, activation_timeout=TIMEOUT) as running:
        yield running


@pytest.fixture
def patient(tmp_path: Path, database_url: str) -> Iterator[ControlledApi]:
    """No timeout gets in the way of the force tests."""
    with running_app(tmp_path, database_url) as running:
        yield running


# --- the invariant -----------------------------------------------------------------------------


def pending_kind(node: dict[str, Any]) -> str | None:
    pending = node["pending_operation"]
    return pending["kind"] if pending else None


def transient(node: dict[str, Any]) -> bool:
    return node["status"] == NodeStatus.DEACTIVATE_PENDING.value or pending_kind(node) is not None


def admin_ways_out(node: dict[str, Any]) -> list[Operation]:
    """The administrator operations the lifecycle table allows now that leave the transient
    situation: they change the status, or end the pending operation."""
    status = NodeStatus(node["status"])
    ways = []
    for operation in sorted(lifecycle.ADMIN_OPERATIONS):
        if not lifecycle.allowed(operation, status):
            continue
        try:
            lifecycle.check_not_busy(operation, pending_kind(node), hostname=node["hostname"])
        except RuleViolation:
            continue
        if operation is Operation.DELETE and node["is_controller"]:
            continue  # the IC node is never deletable
        ends_pending = operation in (Operation.FORCE_DEACTIVATE, Operation.DELETE)
        if lifecycle.plan(operation, status, hostname="h") is not status or ends_pending:
            ways.append(operation)
    return ways


def ways_out(node: dict[str, Any]) -> list[Operation]:
    ways = admin_ways_out(node)
    kind = pending_kind(node)
    if kind in CONTROLLER_WAYS:
        timed_out = CONTROLLER_WAYS[kind]
        assert lifecycle.allowed(timed_out, NodeStatus(node["status"]))
        ways.append(timed_out)
    return ways


def visible_reason(live: ControlledApi, node: dict[str, Any]) -> str:
    """Why the node waits, as the administrator sees it (Quick info: status reason, agent
    connectivity, recent events); "" when nothing says."""
    if node["status_reason"]:
        return str(node["status_reason"])
    if node["connectivity"] != "connected":
        return f"agent {node['connectivity']}"
    newest = expect(live.client.get(f"{API}/nodes/{node['node_id']}/events?limit=1"), 200)
    reason = newest["items"][0]["reason"] if newest["items"] else None
    return str(reason or "")


def age(node: dict[str, Any], now: datetime) -> float:
    started = datetime.fromisoformat(node["pending_operation"]["started_at"])
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return (now - started).total_seconds()


def check_never_stuck(live: ControlledApi) -> list[dict[str, Any]]:
    """Check the invariant on every live node; answers the transient ones."""
    now = datetime.now(UTC)
    listing = expect(live.client.get(f"{API}/nodes", params={"limit": 500}), 200)
    found = []
    for item in listing["items"]:
        node = get_node(live.client, item["node_id"])
        if not transient(node):
            continue
        found.append(node)
        kind = pending_kind(node)
        # DeactivatePending always has its deactivation pending (and only then)
        assert (node["status"] == "DeactivatePending") == (kind == "deactivate"), node
        overdue = age(node, now) > TIMEOUT
        if kind in CONTROLLER_WAYS:
            # the controller moves it at its deadline: it never stays past it
            assert age(node, now) <= TIMEOUT + GRACE, f"{kind} pending past its deadline: {node}"
        if overdue:
            assert visible_reason(live, node), f"no visible reason: {node}"
        ways = ways_out(node)
        assert ways, f"no action can move {node['hostname']} out of {node['status']}: {node}"
        if kind == "deactivate":
            assert Operation.FORCE_DEACTIVATE in ways, ways
    return found


def wait_until(live: ControlledApi, done: Any, *, seconds: float, what: str) -> None:
    """Poll (bounded), checking the invariant at every step, until `done()`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check_never_stuck(live)
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_no_node_stays_transient_without_a_reason_and_a_way_out(live: ControlledApi) -> None:
    c = live.client

    def node_with_role(prefix: str) -> int:
        node_id = int(add_node(c, unique(prefix))["node_id"])
        assign(c, node_id, "jabber")
        return node_id

    # every transient situation, each on its own node
    from_offline = node_with_role("act-off")
    from_standby = node_with_role("act-sb")
    action(c, from_standby, "standby")
    from_deactivated = node_with_role("act-da")
    bring_online(live, from_deactivated)
    action(c, from_deactivated, "deactivate")
    report(live, from_deactivated, success=True)
    fixing = node_with_role("fix")
    bring_online(live, fixing)
    action(c, fixing, "mark-damaged", reason="disk errors")
    silent = node_with_role("dp-silent")  # its agent never answers
    bring_online(live, silent)
    failing = node_with_role("dp-failing")  # its agent cannot stop the role
    bring_online(live, failing)
    deleted_while_pending = node_with_role("act-del")
    ic = next(n for n in expect(c.get(f"{API}/nodes"), 200)["items"] if n["is_controller"])

    for node_id in (from_offline, from_standby, from_deactivated, deleted_while_pending):
        action(c, node_id, "activate")
    action(c, ic["node_id"], "activate")
    action(c, fixing, "fix")
    action(c, silent, "deactivate")
    action(c, failing, "deactivate", reason="retiring the machine")
    report(live, failing, success=False, reason="stop failed: prosodyctl exited with status 1")

    pending = check_never_stuck(live)
    assert len(pending) == 8, [(n["hostname"], n["status"]) for n in pending]
    # before any deadline the administrator can already move them: Delete Node ends a
    # pending activation
    assert Operation.DELETE in admin_ways_out(get_node(c, deleted_while_pending))
    deleted = expect(c.delete(f"{API}/nodes/{deleted_while_pending}"), 200)
    assert (deleted["status"], deleted["pending_operation"]) == ("Deleted", None)
    # ... but the IC node has no administrator way out of its activation: the timeout is it
    assert admin_ways_out(get_node(c, ic["node_id"])) == []

    # past the deadline: the controller moved every activation and fix, with the reason
    timed = (from_offline, from_standby, from_deactivated, fixing, ic["node_id"])
    wait_until(
        live,
        lambda: not any(pending_kind(get_node(c, n)) for n in timed),
        seconds=TIMEOUT + GRACE + 5,
        what="the controller's activation timeout",
    )
    for node_id, status in zip(
        timed,
        ("ActivateFailed", "ActivateFailed", "ActivateFailed", "Damaged", "ActivateFailed"),
        strict=True,
    ):
        node = get_node(c, node_id)
        assert node["status"] == status, node
        assert "no report from the agent within" in node["status_reason"], node
        # and it is not stuck there: the administrator can try again
        again = Operation.FIX if status == "Damaged" else Operation.ACTIVATE
        assert lifecycle.allowed(again, NodeStatus(status))

    # the deactivations have no controller deadline: still DeactivatePending, overdue, each
    # with a visible reason and Force deactivation among its ways out
    stuck = {n["node_id"]: n for n in check_never_stuck(live)}
    assert set(stuck) == {silent, failing}
    assert all(age(n, datetime.now(UTC)) > TIMEOUT for n in stuck.values())
    assert visible_reason(live, stuck[silent]) == "agent never"
    # the agent's failure is what the administrator reads (status reason or latest event)
    latest = node_events(c, failing)[-1]
    assert "prosodyctl exited with status 1" in (
        (stuck[failing]["status_reason"] or "") + (latest["reason"] or "")
    )
    for node in stuck.values():
        assert ways_out(node) == [Operation.DELETE, Operation.FORCE_DEACTIVATE]

    # performing each way out moves the node
    forced = action_forced(live, silent, "the VM was destroyed")
    assert (forced["status"], forced["pending_operation"]) == ("Deactivated", None)
    gone = expect(c.delete(f"{API}/nodes/{failing}"), 200)
    assert (gone["status"], gone["pending_operation"]) == ("Deleted", None)
    again = action(c, from_offline, "activate")
    assert pending_kind(again) == "activate"
    assert check_never_stuck(live) == [get_node(c, from_offline)]


def action_forced(live: ControlledApi, node_id: int, reason: str) -> dict[str, Any]:
    answer = live.client.post(
        f"{API}/nodes/{node_id}/actions/deactivate", json={"force": True, "reason": reason}
    )
    data: dict[str, Any] = expect(answer, 200)
    return data


# --- Force deactivation through the API -----------------------------------------------------


def stuck_node(live: ControlledApi, prefix: str) -> dict[str, Any]:
    """A node whose deactivation its agent could not complete."""
    node_id = int(add_node(live.client, unique(prefix))["node_id"])
    assign(live.client, node_id, "jabber")
    bring_online(live, node_id)
    action(live.client, node_id, "deactivate")
    report(live, node_id, success=False, reason="stop failed")
    node = get_node(live.client, node_id)
    assert node["status"] == "DeactivatePending"
    return node


def test_force_deactivation(patient: ControlledApi) -> None:
    c = patient.client
    node = stuck_node(patient, "forced")
    node_id = node["node_id"]
    path = f"{API}/nodes/{node_id}/actions/deactivate"
    operation_id = node["pending_operation"]["operation_id"]

    # a reason is required: 422 naming the field, and nothing changes
    for body in ({"force": True}, {"force": True, "reason": ""}, {"force": True, "reason": " \n"}):
        data = refused(c, node_id, "POST", path, status=422, json=body)
        assert [tuple(e["loc"]) for e in data["detail"]] == [("body", "reason")], data
        assert "reason" in data["detail"][0]["msg"]
    # only deactivate can be forced
    data = refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/fix",
        status=422,
        json={"force": True, "reason": "why"},
    )
    assert [tuple(e["loc"]) for e in data["detail"]] == [("body", "force")], data

    forced = action_forced(patient, node_id, "VM destroyed in the provider's console")
    assert forced["status"] == "Deactivated"
    assert forced["pending_operation"] is None
    assert (
        forced["status_reason"] == "forced by administrator: VM destroyed in the provider's console"
    )
    assert forced["roles"] == ["jabber"]  # the roles stay assigned, as on any Deactivated node
    latest = node_events(c, node_id)[-1]
    assert latest["operation"] == "force-deactivate"
    assert latest["actor"] == "admin:admin"
    assert (latest["status_before"], latest["status_after"]) == ("DeactivatePending", "Deactivated")
    assert latest["reason"] == forced["status_reason"]

    # the agent's late report of the dropped deactivation is answered as already recorded
    before = get_node(c, node_id)
    late = patient.controller.operations.report(node_id, operation_id=operation_id, success=True)
    assert not late.recorded
    assert get_node(c, node_id) == before

    # forcing again: 409 naming the rule, nothing changes
    data = refused(
        c,
        node_id,
        "POST",
        path,
        status=409,
        rule="force-deactivate-status",
        mentions=("Deactivated", "DeactivatePending", forced["hostname"]),
        json={"force": True, "reason": "again"},
    )
    assert "already Deactivated" in data["detail"]

    # and the node lives on: activate again
    bring_online(patient, node_id)


@pytest.mark.parametrize("status", ["Offline", "StandBy", "Online", "Damaged", "ActivateFailed"])
def test_force_refused_unless_deactivate_pending(patient: ControlledApi, status: str) -> None:
    c = patient.client
    node_id = int(add_node(c, unique(f"no-force-{status.lower()}"))["node_id"])
    assign(c, node_id, "jabber")
    if status == "StandBy":
        action(c, node_id, "standby")
    elif status == "ActivateFailed":
        action(c, node_id, "activate")
        report(patient, node_id, success=False, reason="port in use")
    elif status in ("Online", "Damaged"):
        bring_online(patient, node_id)
        if status == "Damaged":
            action(c, node_id, "mark-damaged", reason="disk")
    assert get_node(c, node_id)["status"] == status
    data = refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/deactivate",
        status=409,
        rule="force-deactivate-status",
        mentions=(status, "DeactivatePending"),
        json={"force": True, "reason": "why"},
    )
    assert "Force deactivation" in data["detail"]


def test_force_refused_while_an_activation_is_pending(patient: ControlledApi) -> None:
    c = patient.client
    node_id = int(add_node(c, unique("no-force-pending"))["node_id"])
    assign(c, node_id, "jabber")
    action(c, node_id, "activate")
    refused(
        c,
        node_id,
        "POST",
        f"{API}/nodes/{node_id}/actions/deactivate",
        status=409,
        rule="force-deactivate-status",
        json={"force": True, "reason": "why"},
    )
    report(patient, node_id, success=True)
    assert get_node(c, node_id)["status"] == "Online"
