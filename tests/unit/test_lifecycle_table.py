"""The node lifecycle, checked over every (status, operation) pair.

`EXPECTED` below is written out by hand from SPEC.md section 5 (and, where the SPEC is silent,
from the decisions recorded in the brief). It is deliberately NOT derived from
`voipcloud.domain.lifecycle.TRANSITIONS`: the tests compare the code against it.

The second half drives the same pairs through the services (Controller on a real SQLite
database), bringing a node into each status through real operations.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.roles import removal_warning
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database, sqlite_url

# --------------------------------------------------------------------------------------------
# The expected table, from SPEC.md section 5
# --------------------------------------------------------------------------------------------

REFUSED = "refused"

OFF = NodeStatus.OFFLINE
SB = NodeStatus.STANDBY
AF = NodeStatus.ACTIVATE_FAILED
DM = NodeStatus.DAMAGED
ON = NodeStatus.ONLINE
DEL = NodeStatus.DELETED
DA = NodeStatus.DEACTIVATED
DP = NodeStatus.DEACTIVATE_PENDING
X = REFUSED

# Column order of every row below.
COLUMNS: tuple[NodeStatus, ...] = (OFF, SB, AF, DM, ON, DEL, DA, DP)

# operation -> resulting status (or REFUSED) for each status in COLUMNS.
EXPECTED_ROWS: dict[str, tuple[NodeStatus | str, ...]] = {
    #                         Offline StandBy ActFail Damaged Online Deleted Deact DeactPend
    # Edit node: any status but Deleted; the status does not change
    "edit-node": (OFF, SB, AF, DM, ON, X, DA, DP),
    # Assign role / Delete assignment: Offline, ActivateFailed, Deactivated
    "assign-role": (OFF, X, AF, X, X, X, DA, X),
    "delete-assignment": (OFF, X, AF, X, X, X, DA, X),
    # Edit role parameters: every live status (on Online a structural change fires
    # configuration-changed, below)
    "edit-role": (OFF, SB, AF, DM, ON, X, DA, DP),
    # Set StandBy: Offline, ActivateFailed, Deactivated
    "standby": (SB, X, SB, X, X, X, SB, X),
    # Activate: Offline, StandBy, ActivateFailed, Deactivated; pending until the agent reports
    "activate": (OFF, SB, AF, X, X, X, DA, X),
    # Deactivate: Online -> DeactivatePending; StandBy -> Deactivated
    "deactivate": (X, DA, X, X, DP, X, X, X),
    # Force deactivation (issue 11, where SPEC is silent): only a DeactivatePending node, whose
    # agent has not signed the completion, is moved to Deactivated by the administrator
    "force-deactivate": (X, X, X, X, X, X, X, DA),
    # Mark Damaged: Online
    "mark-damaged": (X, X, X, X, DM, X, X, X),
    # Fix Node: Damaged; pending until the agent reports
    "fix": (X, X, X, DM, X, X, X, X),
    # Delete Node: any status but Online, Damaged (and Deleted)
    "delete": (DEL, DEL, DEL, X, X, X, DEL, DEL),
    # Administrative Remove: "The status of the node is not important" (live nodes)
    "admin-remove": (OFF, SB, AF, DM, ON, X, DA, DP),
    # Regenerate session key: every live status
    "regenerate-session-key": (OFF, SB, AF, DM, ON, X, DA, DP),
    # Configuration Wizard: Offline, ActivateFailed, Deactivated
    "wizard": (OFF, X, AF, X, X, X, DA, X),
    # automatic ----------------------------------------------------------------------------
    # a role parameter / property used by an Online node changed: Online -> Damaged
    "configuration-changed": (X, X, X, X, DM, X, X, X),
    # the agent reports on a pending activation (the node kept its activatable status)
    "activation-succeeded": (ON, ON, ON, X, X, X, ON, X),
    "activation-failed": (AF, AF, AF, X, X, X, AF, X),
    "activation-timed-out": (AF, AF, AF, X, X, X, AF, X),
    # the agent signs deactivation complete
    "deactivation-completed": (X, X, X, X, X, X, X, DA),
    # the agent reports on Fix Node: success Online, failure stays Damaged
    "fix-succeeded": (X, X, X, ON, X, X, X, X),
    "fix-failed": (X, X, X, DM, X, X, X, X),
}

EXPECTED: dict[tuple[NodeStatus, str], NodeStatus | str] = {
    (status, op): row[i] for op, row in EXPECTED_ROWS.items() for i, status in enumerate(COLUMNS)
}

ADMIN_OPS = (
    "edit-node",
    "assign-role",
    "edit-role",
    "delete-assignment",
    "standby",
    "activate",
    "deactivate",
    "force-deactivate",
    "mark-damaged",
    "fix",
    "delete",
    "admin-remove",
    "regenerate-session-key",
    "wizard",
)
AUTOMATIC_OPS = (
    "configuration-changed",
    "activation-succeeded",
    "activation-failed",
    "activation-timed-out",
    "deactivation-completed",
    "fix-succeeded",
    "fix-failed",
)
ALL_OPS = ADMIN_OPS + AUTOMATIC_OPS
PAIRS = list(itertools.product(list(NodeStatus), ALL_OPS))


def _id(value: Any) -> str:
    return str(value)


# --------------------------------------------------------------------------------------------
# The table itself
# --------------------------------------------------------------------------------------------


def test_table_covers_every_status_and_operation() -> None:
    assert set(COLUMNS) == set(NodeStatus)
    assert len(COLUMNS) == len(NodeStatus) == 8
    assert set(ALL_OPS) == {op.value for op in Operation}
    assert len(ALL_OPS) == len(set(ALL_OPS)) == len(Operation)
    assert set(EXPECTED_ROWS) == set(ALL_OPS)
    assert all(len(row) == len(COLUMNS) for row in EXPECTED_ROWS.values())
    assert set(EXPECTED) == {(s, o) for s in NodeStatus for o in ALL_OPS}
    assert all(v == REFUSED or isinstance(v, NodeStatus) for v in EXPECTED.values())


def test_admin_operations_are_the_administrator_ones() -> None:
    assert {op.value for op in lifecycle.ADMIN_OPERATIONS} == set(ADMIN_OPS)


def test_nothing_is_allowed_on_deleted() -> None:
    assert all(EXPECTED[(DEL, op)] == REFUSED for op in ALL_OPS)


# --------------------------------------------------------------------------------------------
# lifecycle.plan() for every pair
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "op"), PAIRS, ids=_id)
def test_plan(status: NodeStatus, op: str) -> None:
    operation = Operation(op)
    expected = EXPECTED[(status, op)]
    if expected == REFUSED:
        assert not lifecycle.allowed(operation, status)
        with pytest.raises(RuleViolation) as info:
            lifecycle.plan(operation, status, hostname="edge-07.example.net")
        err = info.value
        assert err.rule == f"{op}-status"
        assert lifecycle.TITLES[operation] in err.message
        assert status.value in err.message
        assert "edge-07.example.net" in err.message
        assert str(err) == err.message
    else:
        assert lifecycle.allowed(operation, status)
        assert lifecycle.plan(operation, status, hostname="edge-07.example.net") is expected


@pytest.mark.parametrize(("status", "op"), [p for p in PAIRS if EXPECTED[p] == REFUSED], ids=_id)
def test_refusal_message_names_the_status(status: NodeStatus, op: str) -> None:
    with pytest.raises(RuleViolation) as info:
        lifecycle.plan(Operation(op), status, hostname="h1")
    message = info.value.message
    # the status is named as the node's own, as a word of its own ("Deactivated" must not
    # only match inside "DeactivatePending")
    assert re.search(rf"node h1 is {status.value}[;.]", message), message


def test_refusal_lists_where_the_operation_is_allowed() -> None:
    with pytest.raises(RuleViolation) as info:
        lifecycle.plan(Operation.DELETE, ON, hostname="h1")
    message = info.value.message
    for status in (OFF, SB, AF, DA, DP):
        assert status.value in message
    assert "Delete Node" in message


def test_allowed_sources_match_the_table() -> None:
    for op in ALL_OPS:
        expected = {s for s in NodeStatus if EXPECTED[(s, op)] != REFUSED}
        assert set(lifecycle.allowed_sources(Operation(op))) == expected, op


def test_titles_cover_every_operation() -> None:
    assert set(lifecycle.TITLES) == set(Operation)
    assert all(lifecycle.TITLES.values())


def test_busy_rule() -> None:
    # while an agent operation is pending, only edit-node, delete, admin-remove may run
    for op in ALL_OPS:
        operation = Operation(op)
        if op in ("edit-node", "delete", "admin-remove"):
            lifecycle.check_not_busy(operation, "activate", hostname="h1")
        else:
            with pytest.raises(RuleViolation) as info:
                lifecycle.check_not_busy(operation, "activate", hostname="h1")
            assert info.value.rule == "operation-in-progress"
            assert "h1" in info.value.message
        lifecycle.check_not_busy(operation, None, hostname="h1")


def test_busy_rule_while_deactivating() -> None:
    # DeactivatePending (a pending deactivation) keeps role parameters editable (SPEC 5)
    allowed = ("edit-node", "delete", "admin-remove", "edit-role", "force-deactivate")
    for op in ALL_OPS:
        operation = Operation(op)
        if op in allowed:
            lifecycle.check_not_busy(operation, "deactivate", hostname="h1")
        else:
            with pytest.raises(RuleViolation) as info:
                lifecycle.check_not_busy(operation, "deactivate", hostname="h1")
            assert info.value.rule == "operation-in-progress"


def test_edit_role_while_deactivate_pending_keeps_the_status(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    node = env.c.roles.edit(node_id, actor=ADMIN, role="sip", parameters={"sip_port": 5070})
    assert node.status is DP
    assert node.pending_operation == "deactivate"
    (sip,) = env.c.roles.assigned(node_id)
    assert sip.effective["sip_port"].value == 5070
    # the deactivation still completes
    assert report(env, node_id, success=True).node.status is DA


# --------------------------------------------------------------------------------------------
# Services on a real SQLite database
# --------------------------------------------------------------------------------------------

ADMIN = "admin:admin"
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    c: Controller
    clock: Clock
    db: Database
    box: SecretBox

    @property
    def ic_id(self) -> int:
        with self.db.read() as conn:
            node = node_rows.get_controller(conn)
        assert node is not None
        return node.id


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lifecycle-template")
    db = Database(sqlite_url(directory))
    db.migrate()
    db.dispose()
    path = directory / "voipcloud.sqlite3"
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path


@contextlib.contextmanager
def open_env(template: Path, directory: Path) -> Iterator[Env]:
    """Services on a copy of a migrated SQLite file in `directory`, with the controller node."""
    shutil.copyfile(template, directory / template.name)
    db = Database(sqlite_url(directory))
    box = SecretBox.in_data_dir(directory)
    clock = Clock()
    c = Controller.build(Context(db=db, box=box, clock=clock))
    ensure_controller_node(c.ctx, c.nodes)
    try:
        yield Env(c=c, clock=clock, db=db, box=box)
    finally:
        db.dispose()


@pytest.fixture
def env(template_db: Path, tmp_path: Path) -> Iterator[Env]:
    with open_env(template_db, tmp_path) as opened:
        yield opened


def add_node(env: Env, hostname: str = "edge-01", *, public: bool = True) -> int:
    node = env.c.nodes.add(
        actor=ADMIN,
        hostname=hostname,
        private_ip="10.0.0.5",
        public_ip="203.0.113.5" if public else None,
    )
    assert node.status is OFF
    return node.id


def report(env: Env, node_id: int, *, success: bool, reason: str | None = None) -> Any:
    node = env.c.nodes.get(node_id).node
    assert node.operation_id is not None
    return env.c.operations.report(
        node_id, operation_id=node.operation_id, success=success, reason=reason
    )


def bring_to(env: Env, node_id: int, status: NodeStatus) -> None:
    """Take an Offline node (with at least one role) to `status` through real operations."""
    c = env.c
    if status is SB:
        c.nodes.action(node_id, "standby", actor=ADMIN)
    elif status is DEL:
        c.nodes.delete(node_id, actor=ADMIN)
    elif status is not OFF:
        c.nodes.action(node_id, "activate", actor=ADMIN)
        env.clock.advance(1)
        if status is AF:
            report(env, node_id, success=False, reason="apt failed")
        else:
            report(env, node_id, success=True)
            env.clock.advance(1)
            if status is DM:
                c.nodes.action(node_id, "mark-damaged", actor=ADMIN, reason="disk errors")
            elif status in (DP, DA):
                c.nodes.action(node_id, "deactivate", actor=ADMIN)
                if status is DA:
                    env.clock.advance(1)
                    report(env, node_id, success=True)
    env.clock.advance(1)
    assert c.nodes.get(node_id).node.status is status


def snapshot(env: Env, node_id: int) -> tuple[Any, ...]:
    details = env.c.nodes.get(node_id)
    assigned = [
        (a.role.code, a.assignment.parameters, a.assignment.updated_at)
        for a in env.c.roles.assigned(node_id, reveal_secrets=True)
    ]
    return (
        details.node,
        details.session_key,
        assigned,
        env.c.nodes.events(None).total,
        env.c.nodes.events(node_id).total,
    )


# The administrator operations the services expose for one node, each as a call.
SERVICE_OPS: dict[str, Callable[[Env, int], Any]] = {
    "edit-node": lambda e, n: e.c.nodes.edit(n, actor=ADMIN, changes={"hostname": "edge-99"}),
    "assign-role": lambda e, n: e.c.roles.assign(n, actor=ADMIN, role="wk", parameters={}),
    "edit-role": lambda e, n: e.c.roles.edit(
        n, actor=ADMIN, role="sip", parameters={"customer_connectivity": "sip.example.com"}
    ),
    "delete-assignment": lambda e, n: e.c.roles.unassign(n, actor=ADMIN, role="sip"),
    "standby": lambda e, n: e.c.nodes.action(n, "standby", actor=ADMIN),
    "activate": lambda e, n: e.c.nodes.action(n, "activate", actor=ADMIN),
    "deactivate": lambda e, n: e.c.nodes.action(n, "deactivate", actor=ADMIN),
    "force-deactivate": lambda e, n: e.c.nodes.action(
        n, "deactivate", actor=ADMIN, force=True, reason="machine gone"
    ),
    "mark-damaged": lambda e, n: e.c.nodes.action(n, "mark-damaged", actor=ADMIN),
    "fix": lambda e, n: e.c.nodes.action(n, "fix", actor=ADMIN),
    "regenerate-session-key": lambda e, n: e.c.nodes.action(
        n, "regenerate-session-key", actor=ADMIN
    ),
    "delete": lambda e, n: e.c.nodes.delete(n, actor=ADMIN),
}

# A DeactivatePending node always has its deactivation pending for its agent. The status
# allows regenerating the session key, but the pending operation does not: a new key would
# cut off the agent that must still sign the deactivation complete (and nothing expires a
# deactivation), leaving the node stuck. A decision where SPEC.md is silent.
REFUSED_WHILE_PENDING = {(DP, "regenerate-session-key"): "operation-in-progress"}

SERVICE_PAIRS = [
    pytest.param(status, op, id=f"{status}-{op}")
    for status, op in itertools.product(list(NodeStatus), SERVICE_OPS)
]


@pytest.mark.parametrize(("status", "op"), SERVICE_PAIRS)
def test_service_pair(env: Env, status: NodeStatus, op: str) -> None:
    node_id = add_node(env)
    result = env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    assert result.session_key
    bring_to(env, node_id, status)
    before = snapshot(env, node_id)
    hostname = before[0].hostname
    expected = EXPECTED[(status, op)]

    if (status, op) in REFUSED_WHILE_PENDING:
        with pytest.raises(RuleViolation) as busy:
            SERVICE_OPS[op](env, node_id)
        assert busy.value.rule == REFUSED_WHILE_PENDING[(status, op)]
        assert hostname in busy.value.message
        assert snapshot(env, node_id) == before, "a refused operation changed something"
        return

    if expected == REFUSED:
        errors: tuple[type[Exception], ...] = (RuleViolation,)
        if status is DEL and op in ("edit-role", "delete-assignment"):
            # a Deleted node's roles were released: "no such role" is a fair refusal too
            errors = (RuleViolation, NotFound)
        with pytest.raises(errors) as info:
            SERVICE_OPS[op](env, node_id)
        if isinstance(info.value, RuleViolation):
            assert info.value.rule == f"{op}-status"
            assert status.value in info.value.message
            assert hostname in info.value.message
        assert snapshot(env, node_id) == before, "a refused operation changed something"
        return

    SERVICE_OPS[op](env, node_id)
    after = env.c.nodes.get(node_id)
    node = after.node
    assert node.status is expected
    assert env.c.nodes.events(node_id).total > before[4]
    latest = env.c.nodes.events(node_id, limit=1).items[0]
    assert latest.operation == op
    assert latest.status_before == status.value
    assert latest.status_after == expected.value

    if op == "activate":
        assert node.pending_operation == "activate"
        assert node.operation_id
    elif op == "fix":
        assert node.pending_operation == "fix"
    elif op == "deactivate":
        assert node.pending_operation == ("deactivate" if status is ON else None)
    elif op == "force-deactivate":
        assert node.pending_operation is None
        assert node.operation_id is None
        assert node.status_reason == "forced by administrator: machine gone"
        assert latest.reason == "forced by administrator: machine gone"
        assert latest.actor == ADMIN
        assert node.config_generation > before[0].config_generation
    elif op == "delete":
        assert node.roles == []
        assert not node.has_session_key
        assert after.session_key is None
        assert node.pending_operation is None
    elif op == "regenerate-session-key":
        assert after.session_key
        assert after.session_key != before[1]
    elif op == "assign-role":
        assert set(node.roles) == {"sip", "wk"}
    elif op == "delete-assignment":
        assert node.roles == []
    elif op == "edit-node":
        assert node.hostname == "edge-99"
    elif op == "edit-role":
        (sip,) = env.c.roles.assigned(node_id)
        assert sip.effective["customer_connectivity"].value == "sip.example.com"


@pytest.mark.parametrize("status", [s for s in NodeStatus if s is not DEL], ids=_id)
def test_admin_remove_on_controller_in_every_live_status(env: Env, status: NodeStatus) -> None:
    ic = env.ic_id
    env.c.roles.assign(ic, actor=ADMIN, role="jabber", parameters={})
    bring_to(env, ic, status)
    assert EXPECTED[(status, "admin-remove")] == status
    node = env.c.roles.admin_remove(ic, actor=ADMIN, role="jabber", confirm=True)
    assert node.status is status
    assert node.roles == ["ic"]
    latest = env.c.nodes.events(ic, limit=1).items[0]
    assert latest.operation == "admin-remove"


# --------------------------------------------------------------------------------------------
# Rules other than the status
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["sip", "web", "pbx"])
def test_public_ip_required(env: Env, role: str) -> None:
    node_id = add_node(env, public=False)
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.assign(node_id, actor=ADMIN, role=role, parameters={})
    assert info.value.rule == "public-ip-required"
    assert snapshot(env, node_id) == before


@pytest.mark.parametrize("role", ["jabber", "que", "wk", "sql", "dd", "es", "us"])
def test_roles_without_public_ip(env: Env, role: str) -> None:
    node_id = add_node(env, public=False)
    result = env.c.roles.assign(node_id, actor=ADMIN, role=role, parameters={})
    assert result.node.roles == [role]


def test_public_ip_cannot_be_removed_while_a_role_needs_it(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.edit(node_id, actor=ADMIN, changes={"public_ip": None})
    assert info.value.rule == "public-ip-required"
    assert env.c.nodes.get(node_id).node.public_ip == "203.0.113.5"


def add_extensions(env: Env, count: int) -> None:
    for i in range(count):
        env.c.extensions.add(actor=ADMIN, number=str(100 + i))
    assert env.c.extensions.count() == count


@pytest.mark.parametrize("extensions", [0, 3])
def test_dd_allowed_with_at_most_three_extensions(env: Env, extensions: int) -> None:
    add_extensions(env, extensions)
    node_id = add_node(env)
    assert env.c.roles.assign(node_id, actor=ADMIN, role="dd", parameters={}).node.roles == ["dd"]


def test_dd_refused_with_four_extensions(env: Env) -> None:
    add_extensions(env, 4)
    node_id = add_node(env)
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.assign(node_id, actor=ADMIN, role="dd", parameters={})
    assert info.value.rule == "dd-extension-limit"
    assert snapshot(env, node_id) == before
    # other roles are not limited
    env.c.roles.assign(node_id, actor=ADMIN, role="sql", parameters={})


def _ic_with_roles(env: Env, *roles: str) -> int:
    ic = env.ic_id
    env.c.nodes.edit(ic, actor=ADMIN, changes={"public_ip": "198.51.100.1"})
    for role in roles:
        env.c.roles.assign(ic, actor=ADMIN, role=role, parameters={})
    return ic


@pytest.mark.parametrize("role", ["sip", "pbx", "jabber", "que", "web"])
def test_admin_remove_removable_roles(env: Env, role: str) -> None:
    ic = _ic_with_roles(env, role)
    add_extensions(env, 2)
    node = env.c.roles.admin_remove(ic, actor=ADMIN, role=role, confirm=True)
    assert node.roles == ["ic"]


@pytest.mark.parametrize("role", ["ic", "wk", "sql", "dd", "es", "us"])
def test_admin_remove_refuses_other_roles(env: Env, role: str) -> None:
    ic = _ic_with_roles(env, *([] if role == "ic" else [role]))
    before = snapshot(env, ic)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.admin_remove(ic, actor=ADMIN, role=role, confirm=True)
    assert info.value.rule == "admin-remove-role"
    assert snapshot(env, ic) == before


def test_admin_remove_only_on_the_controller_node(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.admin_remove(node_id, actor=ADMIN, role="sip", confirm=True)
    assert info.value.rule == "admin-remove-controller-only"
    assert snapshot(env, node_id) == before


@pytest.mark.parametrize("extensions", [3, 4])
def test_admin_remove_needs_fewer_than_three_extensions(env: Env, extensions: int) -> None:
    ic = _ic_with_roles(env, "sip")
    add_extensions(env, extensions)
    before = snapshot(env, ic)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.admin_remove(ic, actor=ADMIN, role="sip", confirm=True)
    assert info.value.rule == "admin-remove-extensions"
    assert snapshot(env, ic) == before
    env.c.extensions.remove(actor=ADMIN, number="100")
    if extensions == 3:
        env.c.roles.admin_remove(ic, actor=ADMIN, role="sip", confirm=True)
        assert env.c.nodes.get(ic).node.roles == ["ic"]


def test_admin_remove_needs_confirmation(env: Env) -> None:
    ic = _ic_with_roles(env, "pbx")
    before = snapshot(env, ic)
    with pytest.raises(InvalidInput) as info:
        env.c.roles.admin_remove(ic, actor=ADMIN, role="pbx", confirm=False)
    hostname = before[0].hostname
    warning = removal_warning(ROLES["pbx"], hostname)
    assert warning.startswith("Warning")
    assert info.value.errors[0].message == warning
    assert info.value.errors[0].loc == ("body", "confirm")
    assert snapshot(env, ic) == before
    node = env.c.roles.admin_remove(ic, actor=ADMIN, role="pbx", confirm=True)
    assert "pbx" not in node.roles


def test_online_edit_customer_connectivity_keeps_online(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, ON)
    node = env.c.roles.edit(
        node_id, actor=ADMIN, role="sip", parameters={"customer_connectivity": "sip.example.com"}
    )
    assert node.status is ON
    assert env.c.nodes.events(node_id, limit=1).items[0].operation == "edit-role"


@pytest.mark.parametrize(
    "parameters",
    [
        {"sip_port": 5070},
        {"max_calls": 10},
        {"sip_domain": "voice.example.com"},
        {"customer_connectivity": "sip.example.com", "sip_port": 5071},
    ],
    ids=lambda p: ",".join(p),
)
def test_online_edit_of_other_parameters_marks_damaged(
    env: Env, parameters: dict[str, Any]
) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, ON)
    node = env.c.roles.edit(node_id, actor=ADMIN, role="sip", parameters=parameters)
    assert node.status is DM
    assert node.status_reason
    assert "sip." in node.status_reason
    latest = env.c.nodes.events(node_id, limit=1).items[0]
    assert latest.operation == "configuration-changed"
    assert (latest.status_before, latest.status_after) == ("Online", "Damaged")
    # and Fix brings it back
    env.c.nodes.action(node_id, "fix", actor=ADMIN)
    assert report(env, node_id, success=True).node.status is ON


@pytest.mark.parametrize("status", [OFF, SB, AF, DA, DM], ids=_id)
def test_offline_edit_of_any_parameter_keeps_status(env: Env, status: NodeStatus) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, status)
    node = env.c.roles.edit(node_id, actor=ADMIN, role="sip", parameters={"sip_port": 5070})
    assert node.status is status


def test_unchanged_edit_is_not_an_event(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={"sip_port": 5070})
    bring_to(env, node_id, ON)
    before = snapshot(env, node_id)
    node = env.c.roles.edit(node_id, actor=ADMIN, role="sip", parameters={"sip_port": 5070})
    assert node.status is ON
    assert snapshot(env, node_id) == before


def test_activate_needs_a_role(env: Env) -> None:
    node_id = add_node(env)
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert info.value.rule == "activate-needs-role"
    assert snapshot(env, node_id) == before


def test_activate_of_roleless_node_in_wrong_status_names_the_status(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="wk", parameters={})
    bring_to(env, node_id, ON)
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert info.value.rule == "activate-status"
    assert "Online" in info.value.message


BUSY_REFUSED: dict[str, Callable[[Env, int], Any]] = {
    op: SERVICE_OPS[op]
    for op in (
        "assign-role",
        "edit-role",
        "delete-assignment",
        "standby",
        "activate",
        "regenerate-session-key",
    )
}


@pytest.mark.parametrize("op", list(BUSY_REFUSED))
def test_operation_in_progress_refused_while_activation_pending(env: Env, op: str) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert pending.status is OFF
    assert pending.pending_operation == "activate"
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        BUSY_REFUSED[op](env, node_id)
    assert info.value.rule == "operation-in-progress"
    assert pending.hostname in info.value.message
    assert snapshot(env, node_id) == before
    # the activation still completes
    assert report(env, node_id, success=True).node.status is ON


def test_edit_node_allowed_while_activation_pending(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    node = env.c.nodes.edit(node_id, actor=ADMIN, changes={"hostname": "edge-02"})
    assert node.hostname == "edge-02"
    assert node.operation_id == pending.operation_id
    assert report(env, node_id, success=True).node.status is ON


def test_delete_while_activation_pending_drops_the_operation(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    node = env.c.nodes.delete(node_id, actor=ADMIN)
    assert node.status is DEL
    assert node.pending_operation is None
    assert pending.operation_id is not None
    events = env.c.nodes.events(None).total
    late = env.c.operations.report(node_id, operation_id=pending.operation_id, success=True)
    assert not late.recorded
    assert late.node.status is DEL
    assert env.c.nodes.events(None).total == events
    env.clock.advance(3600)
    assert env.c.operations.expire() == []


def test_activation_timeout(env: Env) -> None:
    env.c.ctx.activation_timeout = 60.0
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    env.c.nodes.action(node_id, "standby", actor=ADMIN)
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    env.clock.advance(59)
    assert env.c.operations.expire() == []
    assert env.c.nodes.get(node_id).node.pending_operation == "activate"
    env.clock.advance(1)
    (expired,) = env.c.operations.expire()
    assert expired.id == node_id
    assert expired.status is AF
    # a sentence: how long, and when the agent was last heard from
    assert expired.status_reason == (
        "no report from the agent within 60 s — the agent has never joined"
    )
    assert expired.pending_operation is None
    latest = env.c.nodes.events(node_id, limit=1).items[0]
    assert latest.operation == "activation-timed-out"
    assert (latest.status_before, latest.status_after) == ("StandBy", "ActivateFailed")
    assert latest.reason == "timeout"
    # a late report of the expired activation is not recorded
    assert pending.operation_id is not None
    late = env.c.operations.report(node_id, operation_id=pending.operation_id, success=True)
    assert not late.recorded
    assert late.node.status is AF
    # expiring again does nothing
    env.clock.advance(600)
    assert env.c.operations.expire() == []


def test_fix_timeout_stays_damaged(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DM)
    env.c.nodes.action(node_id, "fix", actor=ADMIN)
    env.clock.advance(env.c.ctx.activation_timeout + 1)
    (expired,) = env.c.operations.expire()
    assert expired.status is DM
    assert expired.pending_operation is None
    latest = env.c.nodes.events(node_id, limit=1).items[0]
    assert latest.operation == "fix-failed"
    assert latest.reason == "timeout"


def test_deactivation_is_not_expired(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    env.clock.advance(10 * env.c.ctx.activation_timeout)
    assert env.c.operations.expire() == []
    assert env.c.nodes.get(node_id).node.status is DP


def test_fix_failure_stays_damaged_with_the_reason(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DM)
    env.c.nodes.action(node_id, "fix", actor=ADMIN)
    outcome = report(env, node_id, success=False, reason="disk full")
    assert outcome.recorded
    assert outcome.node.status is DM
    assert env.c.nodes.events(node_id, limit=1).items[0].reason == "disk full"
    # the failure is shown, and the reason it was Damaged is kept beside it
    assert outcome.node.status_reason == "Fix failed: disk full — Damaged because: disk errors"


@pytest.mark.parametrize("success", [True, False])
def test_duplicate_report_is_not_recorded_twice(env: Env, success: bool) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert pending.operation_id is not None
    first = env.c.operations.report(node_id, operation_id=pending.operation_id, success=success)
    assert first.recorded
    assert first.node.status is (ON if success else AF)
    before = snapshot(env, node_id)
    for again in (success, not success):
        dup = env.c.operations.report(node_id, operation_id=pending.operation_id, success=again)
        assert not dup.recorded
        assert dup.node.status is first.node.status
    assert snapshot(env, node_id) == before


def test_report_with_a_stale_operation_id_is_not_recorded(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    before = snapshot(env, node_id)
    stale = env.c.operations.report(
        node_id, operation_id="00000000-0000-0000-0000-000000000000", success=True
    )
    assert not stale.recorded
    assert snapshot(env, node_id) == before
    assert pending.pending_operation == "activate"


def test_deactivation_failure_keeps_pending(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    outcome = report(env, node_id, success=False, reason="still running")
    assert outcome.recorded
    assert outcome.node.status is DP
    assert outcome.node.pending_operation == "deactivate"
    assert report(env, node_id, success=True).node.status is DA


def test_hostname_unique_among_live_nodes(env: Env) -> None:
    first = add_node(env, "edge-01")
    total = env.c.nodes.events(None).total
    for taken in ("edge-01", "EDGE-01", " edge-01. "):
        with pytest.raises(RuleViolation) as info:
            env.c.nodes.add(actor=ADMIN, hostname=taken, private_ip="10.0.0.6")
        assert info.value.rule == "hostname-unique"
    assert env.c.nodes.events(None).total == total
    second = add_node(env, "edge-02")
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.edit(second, actor=ADMIN, changes={"hostname": "Edge-01"})
    assert info.value.rule == "hostname-unique"
    assert env.c.nodes.get(second).node.hostname == "edge-02"
    # a Deleted node's hostname is free again
    env.c.nodes.delete(first, actor=ADMIN)
    third = add_node(env, "edge-01")
    assert third != first
    assert env.c.nodes.get(first).node.hostname == "edge-01"
    assert env.c.nodes.get(first).node.status is DEL
    # and it may be taken by renaming too
    env.c.nodes.delete(third, actor=ADMIN)
    env.c.nodes.edit(second, actor=ADMIN, changes={"hostname": "edge-01"})
    assert env.c.nodes.get(second).node.hostname == "edge-01"


def test_controller_hostname_is_taken(env: Env) -> None:
    ic = env.c.nodes.get(env.ic_id).node
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.add(actor=ADMIN, hostname=ic.hostname, private_ip="10.0.0.6")
    assert info.value.rule == "hostname-unique"


@pytest.mark.parametrize("status", [OFF, SB, AF, DA], ids=_id)
def test_controller_node_is_not_deletable(env: Env, status: NodeStatus) -> None:
    ic = env.ic_id
    bring_to(env, ic, status)
    before = snapshot(env, ic)
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.delete(ic, actor=ADMIN)
    assert info.value.rule == "controller-not-deletable"
    assert snapshot(env, ic) == before


def test_controller_node_exists_at_first_start(env: Env) -> None:
    ic = env.c.nodes.get(env.ic_id)
    assert ic.node.status is OFF
    assert ic.node.roles == ["ic"]
    assert ic.node.is_controller


def test_controller_role_is_reserved(env: Env) -> None:
    node_id = add_node(env)
    with pytest.raises(RuleViolation) as info:
        env.c.roles.assign(node_id, actor=ADMIN, role="ic", parameters={})
    assert info.value.rule == "controller-role-reserved"
    with pytest.raises(RuleViolation) as info:
        env.c.roles.unassign(env.ic_id, actor=ADMIN, role="ic")
    assert info.value.rule == "controller-role-reserved"


def test_delete_revokes_the_session_key(env: Env) -> None:
    node_id = add_node(env)
    key = env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={}).session_key
    assert key
    with env.db.read() as conn:
        found = node_rows.get_by_key_digest(conn, env.box.digest(key))
        assert found is not None
        assert found.id == node_id
    env.c.nodes.delete(node_id, actor=ADMIN)
    with env.db.read() as conn:
        assert node_rows.get_by_key_digest(conn, env.box.digest(key)) is None


def test_unknown_action_is_invalid(env: Env) -> None:
    node_id = add_node(env)
    with pytest.raises(InvalidInput):
        env.c.nodes.action(node_id, "reboot", actor=ADMIN)


def test_unknown_node(env: Env) -> None:
    with pytest.raises(NotFound):
        env.c.nodes.action(424242, "standby", actor=ADMIN)
    with pytest.raises(NotFound):
        env.c.nodes.delete(424242, actor=ADMIN)


# --------------------------------------------------------------------------------------------
# Force deactivation (issue 11): the administrator's way out of DeactivatePending
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, "", "   \n "])
def test_force_deactivation_needs_a_reason(env: Env, reason: str | None) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    before = snapshot(env, node_id)
    with pytest.raises(InvalidInput) as info:
        env.c.nodes.action(node_id, "deactivate", actor=ADMIN, force=True, reason=reason)
    (error,) = info.value.errors
    assert error.loc == ("body", "reason")
    assert "reason" in error.message
    assert snapshot(env, node_id) == before


@pytest.mark.parametrize("action", ["standby", "activate", "fix", "mark-damaged"])
def test_only_deactivate_can_be_forced(env: Env, action: str) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    before = snapshot(env, node_id)
    with pytest.raises(InvalidInput) as info:
        env.c.nodes.action(node_id, action, actor=ADMIN, force=True, reason="why")
    assert info.value.errors[0].loc == ("body", "force")
    assert snapshot(env, node_id) == before


def test_force_deactivation_drops_the_pending_operation(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, DP)
    stuck = env.c.nodes.get(node_id).node
    assert stuck.operation_id is not None
    # the agent tried and failed; the node stays DeactivatePending
    assert report(env, node_id, success=False, reason="stop failed").node.status is DP
    env.clock.advance(3600)
    node = env.c.nodes.action(
        node_id, "deactivate", actor="admin:ops", force=True, reason="  VM destroyed  "
    )
    assert node.status is DA
    assert node.pending_operation is None
    assert node.status_reason == "forced by administrator: VM destroyed"
    assert node.config_generation == stuck.config_generation + 1
    latest = env.c.nodes.events(node_id, limit=1).items[0]
    assert (latest.operation, latest.actor) == ("force-deactivate", "admin:ops")
    assert (latest.status_before, latest.status_after) == ("DeactivatePending", "Deactivated")
    # a late report of the dropped deactivation is not recorded
    events = env.c.nodes.events(None).total
    late = env.c.operations.report(node_id, operation_id=stuck.operation_id, success=True)
    assert not late.recorded
    assert late.node.status is DA
    assert env.c.nodes.events(None).total == events
    # and the node goes on as any Deactivated node: activate again
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert pending.pending_operation == "activate"
    assert report(env, node_id, success=True).node.status is ON


@pytest.mark.parametrize("status", [OFF, SB, AF, DM, ON, DA], ids=_id)
def test_force_deactivation_refused_outside_deactivate_pending(
    env: Env, status: NodeStatus
) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, status)
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.action(node_id, "deactivate", actor=ADMIN, force=True, reason="why")
    assert info.value.rule == "force-deactivate-status"
    assert "DeactivatePending" in info.value.message
    assert snapshot(env, node_id) == before


def test_force_deactivation_refused_while_an_activation_is_pending(env: Env) -> None:
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    env.c.nodes.action(node_id, "activate", actor=ADMIN)
    before = snapshot(env, node_id)
    with pytest.raises(RuleViolation) as info:
        env.c.nodes.action(node_id, "deactivate", actor=ADMIN, force=True, reason="why")
    assert info.value.rule == "force-deactivate-status"
    assert snapshot(env, node_id) == before
