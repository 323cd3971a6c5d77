"""The pure parts of bulk actions and maintenance mode (domain/bulk.py, domain/policy.py)."""

from __future__ import annotations

import pytest

from voipcloud.domain import bulk, policy
from voipcloud.domain.bulk import BulkRequest, Selection
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.lifecycle import ADMIN_OPERATIONS
from voipcloud.domain.policy import NodeFacts
from voipcloud.domain.statuses import NodeStatus


def locs(exc: pytest.ExceptionInfo[InvalidInput]) -> list[tuple[str | int, ...]]:
    return [e.loc for e in exc.value.errors]


def test_a_selection_is_exactly_one_of_node_ids_and_filter() -> None:
    with pytest.raises(InvalidInput) as both:
        bulk.parse_selection([1], {})
    assert locs(both) == [("body",)]
    with pytest.raises(InvalidInput) as neither:
        bulk.parse_selection(None, None)
    assert locs(neither) == [("body",)]
    with pytest.raises(InvalidInput) as empty:
        bulk.parse_selection([], None)
    assert locs(empty) == [("body", "node_ids")]
    with pytest.raises(InvalidInput) as many:
        bulk.parse_selection(list(range(1, bulk.MAX_SELECTION + 2)), None)
    assert f"{bulk.MAX_SELECTION + 1} nodes named" in many.value.errors[0].message
    assert bulk.parse_selection([3, 1, 3], None).node_ids == (3, 1)  # once each, in order
    assert bulk.parse_selection(list(range(1, bulk.MAX_SELECTION + 1)), None).node_ids


def test_the_filter_is_the_listings_with_its_fields_named_in_the_body() -> None:
    chosen = bulk.parse_selection(None, {"status": "Damaged", "q": " edge ", "maintenance": False})
    assert chosen.filter is not None
    assert chosen.filter.status is NodeStatus.DAMAGED
    assert chosen.filter.q == "edge"
    assert chosen.filter.maintenance is False
    with pytest.raises(InvalidInput) as bad:
        bulk.parse_selection(None, {"status": "Asleep", "role": "nope", "colour": "x"})
    assert locs(bad) == [("body", "filter", "colour")]  # unknown field first
    with pytest.raises(InvalidInput) as bad:
        bulk.parse_selection(None, {"status": "Asleep", "role": "nope"}, where="form")
    assert locs(bad) == [("form", "filter", "status"), ("form", "filter", "role")]
    assert "every live node" in bulk.parse_selection(None, {}).describe()
    assert "role sip" in bulk.parse_selection(None, {"role": "sip"}).describe()
    too_many = bulk.too_many(7001)
    assert too_many.errors[0].loc == ("body", "filter")
    assert "matches 7001 nodes" in too_many.errors[0].message


def request(action: str, **fields: object) -> BulkRequest:
    return BulkRequest(action=action, selection=Selection(node_ids=(1,)), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("action", "fields", "loc"),
    [
        ("explode", {}, ("path", "action")),
        ("fix", {"role": "sip"}, ("body", "role")),
        ("fix", {"parameters": {"a": 1}}, ("body", "parameters")),
        ("fix", {"force": True, "reason": "r"}, ("body", "force")),
        ("deactivate", {"force": True}, ("body", "reason")),
        ("assign-role", {}, ("body", "role")),
        ("assign-role", {"role": "zz"}, ("body", "role")),
        ("assign-role", {"role": "wk", "parameters": {"max_jobs": "many"}}, ("body", "parameters")),
        ("delete-assignment", {}, ("body", "role")),
        ("standby", {"reason": "x" * (bulk.MAX_REASON + 1)}, ("body", "reason")),
        ("standby", {"reason": "nul\x00"}, ("body", "reason")),
    ],
)
def test_bad_fields_are_refused_before_any_node(
    action: str, fields: dict[str, object], loc: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidInput) as refused:
        bulk.check_request(request(action, **fields))
    assert any(e.loc[: len(loc)] == loc for e in refused.value.errors), refused.value.errors


def test_good_requests_are_normalized() -> None:
    checked = bulk.check_request(request("deactivate", force=True, reason="  gone  "))
    assert checked.reason == "gone"
    assert checked.operation.value == "deactivate"
    assigned = bulk.check_request(request("assign-role", role="wk", parameters={"max_jobs": 3}))
    assert assigned.role == "wk"
    assert set(bulk.ACTIONS) == {
        "standby",
        "activate",
        "deactivate",
        "fix",
        "mark-damaged",
        "delete",
        "assign-role",
        "delete-assignment",
    }


def test_a_selection_leaves_out_nodes_in_maintenance_whatever_else_holds() -> None:
    kept = NodeFacts(hostname="edge-3", status=NodeStatus.DAMAGED, maintenance="disks; by x")
    for op in ADMIN_OPERATIONS:
        left_out = policy.decide(op, kept, leave_out_maintenance=True)
        assert not left_out.allowed
        assert left_out.rule == "node-in-maintenance"
        assert "edge-3" in (left_out.reason or "")
        assert "disks" in (left_out.reason or "")
        # chosen one by one, the maintenance flag changes nothing
        assert policy.decide(op, kept) == policy.decide(
            op, NodeFacts(hostname="edge-3", status=NodeStatus.DAMAGED)
        )
    free = NodeFacts(hostname="edge-4", status=NodeStatus.DAMAGED)
    assert policy.decide(policy.Operation.FIX, free, leave_out_maintenance=True).allowed


@pytest.mark.parametrize("status", list(NodeStatus))
def test_entering_and_leaving_maintenance(status: NodeStatus) -> None:
    out = NodeFacts(hostname="n1", status=status)
    inside = NodeFacts(hostname="n1", status=status, maintenance="why; set by a")
    enter = policy.maintenance_change(out, entering=True)
    if status is NodeStatus.DELETED:
        assert (enter.allowed, enter.rule) == (False, "maintenance-deleted")
        with pytest.raises(RuleViolation):
            enter.check()
    else:
        assert enter.allowed
        enter.check()
    again = policy.maintenance_change(inside, entering=True)
    assert again.rule == (
        "maintenance-deleted" if status is NodeStatus.DELETED else "maintenance-already-on"
    )
    assert policy.maintenance_change(inside, entering=False).allowed  # always possible to leave
    assert policy.maintenance_change(out, entering=False).rule == "maintenance-not-on"
