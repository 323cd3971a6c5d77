"""Random sequences of operations through the services, with the invariants checked each step.

A Hypothesis state machine drives a Controller on SQLite: nodes are added, renamed, given
roles, activated, reported on by their "agents", timed out, deleted... Refusals the rules
call for (RuleViolation, NotFound, InvalidInput) are expected, and must change nothing; any
other exception fails the test. After every step the invariants of the lifecycle are checked
against the database.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import func, select

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import events as event_rows
from voipcloud.store import nodes as node_rows
from voipcloud.store import tables
from voipcloud.store.database import Database, sqlite_url

ADMIN = "admin:admin"
DB_FILE = "voipcloud.sqlite3"
TIMEOUT = 60.0
REFUSALS = (RuleViolation, NotFound, InvalidInput)
MISSING = 30  # the node index that names no node

HOSTNAMES = ("alpha", "beta", "gamma", "Alpha", "beta.example.net")
PUBLIC_IPS = (None, "203.0.113.7", "203.0.113.8")
ROLE_CODES = tuple(ROLES)  # incl. ic, dd, sip
# one parameter change per role; the customer-connectivity ones keep an Online node Online
EDITS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sip", {"customer_connectivity": "sip.example.com"}),
    ("sip", {"sip_port": 5070}),
    ("sip", {"sip_port": 5080}),
    ("web", {"customer_connectivity": "www.example.com"}),
    ("web", {"max_sessions": 10}),
    ("pbx", {"max_channels": 100}),
    ("jabber", {"c2s_port": 5223}),
    ("que", {"port": 5673}),
    ("wk", {"max_jobs": 4}),
    ("wk", {"max_jobs": 5}),
    ("sql", {"max_connections": 10}),
    ("dd", {"replication_factor": 2}),
    ("es", {"heap_size_mb": 512}),
    ("us", {"quota_gb": 5}),
    ("ic", {"controller_port": 8081}),
)
ACTIONS = ("standby", "activate", "deactivate", "mark-damaged", "fix", "regenerate-session-key")

# Written out from SPEC.md section 5: where a node may be while each agent operation is
# pending (the status from which that operation's outcome is allowed).
PENDING_STATUSES: dict[str, frozenset[NodeStatus]] = {
    "activate": frozenset(
        {
            NodeStatus.OFFLINE,
            NodeStatus.STANDBY,
            NodeStatus.ACTIVATE_FAILED,
            NodeStatus.DEACTIVATED,
        }
    ),
    "deactivate": frozenset({NodeStatus.DEACTIVATE_PENDING}),
    "fix": frozenset({NodeStatus.DAMAGED}),
}
PENDING_OUTCOMES: dict[str, tuple[Operation, ...]] = {
    "activate": (
        Operation.ACTIVATION_SUCCEEDED,
        Operation.ACTIVATION_FAILED,
        Operation.ACTIVATION_TIMED_OUT,
    ),
    "deactivate": (Operation.DEACTIVATION_COMPLETED,),
    "fix": (Operation.FIX_SUCCEEDED, Operation.FIX_FAILED),
}


# --------------------------------------------------------------------------------------------
# One migrated template database per module; each example works on a copy of it.
# --------------------------------------------------------------------------------------------

_template: Path | None = None


def template_db() -> Path:
    global _template
    if _template is None:
        directory = Path(tempfile.mkdtemp(prefix="voipcloud-stateful-template-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        db = Database(sqlite_url(directory))
        db.migrate()
        db.dispose()
        _template = directory / DB_FILE
    return _template


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="voipcloud-stateful-"))
        shutil.copyfile(template_db(), self.dir / DB_FILE)
        self.db = Database(sqlite_url(self.dir))
        self.box = SecretBox.in_data_dir(self.dir)
        self.clock = Clock()
        self.c = Controller.build(
            Context(db=self.db, box=self.box, clock=self.clock, activation_timeout=TIMEOUT)
        )
        ic = ensure_controller_node(self.c.ctx, self.c.nodes)
        self.ic_id = ic.id
        self.node_ids: list[int] = [ic.id]
        self.keys: dict[int, set[str]] = {}  # every session key seen, per node
        self.operation_ids: list[tuple[int, str]] = []  # every agent operation id seen
        self.extensions: set[str] = set()

    def teardown(self) -> None:
        self.db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # helpers ---------------------------------------------------------------------------------

    def pick(self, index: int) -> int:
        """A node id: one of ours, or (rarely) one that does not exist."""
        if index == MISSING:
            return 10_000 + index
        return self.node_ids[index % len(self.node_ids)]

    def pick_role(self, node_id: int, index: int) -> str:
        """Mostly a role the node has; sometimes any role."""
        if index >= len(ROLE_CODES):
            try:
                roles = self.node(node_id).roles
            except NotFound:
                roles = []
            if roles:
                return roles[index % len(roles)]
        return ROLE_CODES[index % len(ROLE_CODES)]

    def node(self, node_id: int) -> Node:
        return self.c.nodes.get(node_id).node

    def snapshot(self) -> tuple[Any, ...]:
        """Every row that matters, to prove a refusal changed nothing."""
        with self.db.read() as conn:
            nodes = conn.execute(select(tables.nodes).order_by(tables.nodes.c.id)).all()
            roles = conn.execute(
                select(tables.role_assignments).order_by(
                    tables.role_assignments.c.node_id, tables.role_assignments.c.role
                )
            ).all()
            events = conn.execute(select(func.count()).select_from(tables.events)).scalar_one()
            extensions = conn.execute(
                select(tables.extensions).order_by(tables.extensions.c.number)
            ).all()
        return (nodes, roles, events, extensions)

    def attempt(self, call: Callable[[], Any]) -> Any:
        """Run `call`; an expected refusal must leave everything as it was."""
        self.clock.advance(1)
        before = self.snapshot()
        refused: Exception | None = None
        try:
            result = call()
        except REFUSALS as exc:
            refused = exc
        if refused is not None:
            assert self.snapshot() == before, f"refused ({refused}) but something changed"
            event(f"refused: {getattr(refused, 'rule', type(refused).__name__)}")
            return refused
        self.remember(result)
        return result

    def remember(self, result: Any) -> None:
        node = getattr(result, "node", result)
        if isinstance(node, Node) and node.operation_id:
            self.operation_ids.append((node.id, node.operation_id))
        key = getattr(result, "session_key", None)
        if isinstance(node, Node) and key:
            self.keys.setdefault(node.id, set()).add(key)

    def check_planned(
        self, result: Any, operation: Operation, before: Node | None, after_status: NodeStatus
    ) -> None:
        """A success happened where the table allows it, and led where the table says."""
        if before is None:
            return
        if isinstance(result, Node) and result.row_version == before.row_version:
            return  # nothing to change: the services answer without planning
        if isinstance(result, RuleViolation) and result.rule == f"{operation}-status":
            assert not lifecycle.allowed(operation, before.status)
            assert before.status.value in result.message
        if not isinstance(result, Exception):
            assert lifecycle.allowed(operation, before.status), (operation, before.status)
            target = lifecycle.plan(operation, before.status, hostname=before.hostname)
            if operation is not Operation.EDIT_ROLE:  # may fire configuration-changed
                assert after_status is target

    def before(self, node_id: int) -> Node | None:
        try:
            return self.node(node_id)
        except NotFound:
            return None

    def status_of(self, node_id: int) -> NodeStatus:
        try:
            return self.node(node_id).status
        except NotFound:
            return NodeStatus.DELETED

    # rules -----------------------------------------------------------------------------------

    @initialize(public_ip=st.sampled_from(PUBLIC_IPS), role=st.sampled_from(("wk", "sip", "dd")))
    def first_node(self, public_ip: str | None, role: str) -> None:
        node = self.c.nodes.add(
            actor=ADMIN, hostname="first", private_ip="10.1.0.8", public_ip=public_ip
        )
        self.node_ids.append(node.id)
        self.attempt(lambda: self.c.roles.assign(node.id, actor=ADMIN, role=role, parameters={}))

    @rule(hostname=st.sampled_from(HOSTNAMES), public_ip=st.sampled_from(PUBLIC_IPS))
    def add_node(self, hostname: str, public_ip: str | None) -> None:
        result = self.attempt(
            lambda: self.c.nodes.add(
                actor=ADMIN, hostname=hostname, private_ip="10.1.0.9", public_ip=public_ip
            )
        )
        if isinstance(result, Node):
            assert result.status is NodeStatus.OFFLINE
            assert not result.has_session_key
            self.node_ids.append(result.id)
        else:
            assert isinstance(result, RuleViolation)
            assert result.rule == "hostname-unique"

    @rule(index=st.integers(0, 30), hostname=st.sampled_from(HOSTNAMES))
    def edit_hostname(self, index: int, hostname: str) -> None:
        node_id = self.pick(index)
        before = self.before(node_id)
        result = self.attempt(
            lambda: self.c.nodes.edit(node_id, actor=ADMIN, changes={"hostname": hostname})
        )
        self.check_planned(result, Operation.EDIT_NODE, before, self.status_of(node_id))

    @rule(index=st.integers(0, 30), public_ip=st.sampled_from(PUBLIC_IPS))
    def edit_public_ip(self, index: int, public_ip: str | None) -> None:
        node_id = self.pick(index)
        before = self.before(node_id)
        result = self.attempt(
            lambda: self.c.nodes.edit(node_id, actor=ADMIN, changes={"public_ip": public_ip})
        )
        self.check_planned(result, Operation.EDIT_NODE, before, self.status_of(node_id))

    @rule(index=st.integers(0, 30), role=st.sampled_from(ROLE_CODES))
    def assign_role(self, index: int, role: str) -> None:
        node_id = self.pick(index)
        before = self.before(node_id)
        result = self.attempt(
            lambda: self.c.roles.assign(node_id, actor=ADMIN, role=role, parameters={})
        )
        self.check_planned(result, Operation.ASSIGN_ROLE, before, self.status_of(node_id))
        if not isinstance(result, Exception):
            assert role in result.node.roles
            assert result.node.has_session_key
            assert result.session_key
        elif isinstance(result, RuleViolation) and result.rule == "dd-extension-limit":
            assert role == "dd"
            assert len(self.extensions) > 3

    @rule(index=st.integers(0, 30), edit_index=st.integers(0, 40))
    def edit_role(self, index: int, edit_index: int) -> None:
        node_id = self.pick(index)
        role = self.pick_role(node_id, edit_index)
        edits = [e for e in EDITS if e[0] == role]
        _, parameters = edits[edit_index % len(edits)]
        before = self.before(node_id)
        structural = False
        if before is not None and role in before.roles:
            (current,) = [a for a in self.c.roles.assigned(node_id) if a.role.code == role]
            structural = any(
                current.effective[name].value != value
                for name, value in parameters.items()
                if name != "customer_connectivity"
            )
        result = self.attempt(
            lambda: self.c.roles.edit(node_id, actor=ADMIN, role=role, parameters=parameters)
        )
        after = self.status_of(node_id)
        self.check_planned(result, Operation.EDIT_ROLE, before, after)
        if before is not None and not isinstance(result, Exception):
            if before.status is NodeStatus.ONLINE:
                assert after is (NodeStatus.DAMAGED if structural else NodeStatus.ONLINE)
            else:
                assert after is before.status

    @rule(index=st.integers(0, 30), role_index=st.integers(0, 40))
    def unassign(self, index: int, role_index: int) -> None:
        node_id = self.pick(index)
        role = self.pick_role(node_id, role_index)
        before = self.before(node_id)
        result = self.attempt(lambda: self.c.roles.unassign(node_id, actor=ADMIN, role=role))
        self.check_planned(result, Operation.DELETE_ASSIGNMENT, before, self.status_of(node_id))
        if not isinstance(result, Exception):
            assert role not in result.roles

    @rule(index=st.integers(0, 30), action=st.sampled_from(ACTIONS))
    def action(self, index: int, action: str) -> None:
        node_id = self.pick(index)
        before = self.before(node_id)
        result = self.attempt(lambda: self.c.nodes.action(node_id, action, actor=ADMIN))
        self.check_planned(result, Operation(action), before, self.status_of(node_id))
        if isinstance(result, Node) and action == "regenerate-session-key":
            details = self.c.nodes.get(node_id)
            assert details.session_key
            self.remember(details)
        if isinstance(result, RuleViolation) and result.rule == "activate-needs-role":
            assert before is not None
            assert not before.roles

    def deactivating(self) -> list[int]:
        return [n.id for n in self.pending_nodes() if n.pending_operation == "deactivate"]

    @precondition(lambda self: bool(self.deactivating()))
    @rule(index=st.integers(0, 30), reason=st.sampled_from((None, " ", "machine gone")))
    def force_stuck_deactivation(self, index: int, reason: str | None) -> None:
        """Force deactivation (issue 11) of a DeactivatePending node."""
        stuck = self.deactivating()
        self.force_deactivate(stuck[index % len(stuck)], reason)

    @rule(index=st.integers(0, 30), reason=st.sampled_from((None, "", "machine gone")))
    def force_any_deactivation(self, index: int, reason: str | None) -> None:
        """Force deactivation of any node: refused unless it is DeactivatePending."""
        self.force_deactivate(self.pick(index), reason)

    def force_deactivate(self, node_id: int, reason: str | None) -> None:
        before = self.before(node_id)
        result = self.attempt(
            lambda: self.c.nodes.action(
                node_id, "deactivate", actor=ADMIN, force=True, reason=reason
            )
        )
        self.check_planned(result, Operation.FORCE_DEACTIVATE, before, self.status_of(node_id))
        if isinstance(result, InvalidInput):
            assert not (reason or "").strip()
        if isinstance(result, Node):
            assert before is not None
            assert before.status is NodeStatus.DEACTIVATE_PENDING
            assert result.status is NodeStatus.DEACTIVATED
            assert result.pending_operation is None
            assert result.status_reason == "forced by administrator: machine gone"
            event("forced a deactivation")

    @rule(index=st.integers(0, 30))
    def delete(self, index: int) -> None:
        node_id = self.pick(index)
        before = self.before(node_id)
        result = self.attempt(lambda: self.c.nodes.delete(node_id, actor=ADMIN))
        self.check_planned(result, Operation.DELETE, before, self.status_of(node_id))
        if node_id == self.ic_id:
            assert isinstance(result, RuleViolation)
        if isinstance(result, Node):
            assert result.status is NodeStatus.DELETED
            assert result.roles == []

    @rule(
        role_index=st.integers(0, 40),
        confirm=st.booleans(),
        on_controller=st.booleans(),
        index=st.integers(0, 30),
    )
    def admin_remove(self, role_index: int, confirm: bool, on_controller: bool, index: int) -> None:
        node_id = self.ic_id if on_controller else self.pick(index)
        role = self.pick_role(node_id, role_index)
        before = self.before(node_id)
        result = self.attempt(
            lambda: self.c.roles.admin_remove(node_id, actor=ADMIN, role=role, confirm=confirm)
        )
        if isinstance(result, Node):
            assert before is not None
            assert confirm
            assert before.is_controller
            assert role in ("sip", "pbx", "jabber", "que", "web")
            assert len(self.extensions) < 3
            assert result.status is before.status
            assert role not in result.roles

    @rule(number=st.integers(100, 105))
    def add_extension(self, number: int) -> None:
        result = self.attempt(lambda: self.c.extensions.add(actor=ADMIN, number=str(number)))
        if isinstance(result, Exception):
            assert str(number) in self.extensions
        else:
            self.extensions.add(str(number))

    @rule(number=st.integers(100, 105))
    def remove_extension(self, number: int) -> None:
        result = self.attempt(lambda: self.c.extensions.remove(actor=ADMIN, number=str(number)))
        if isinstance(result, Exception):
            assert str(number) not in self.extensions
        else:
            self.extensions.discard(str(number))

    def pending_nodes(self) -> list[Node]:
        with self.db.read() as conn:
            return node_rows.with_pending_operation(conn)

    @precondition(lambda self: bool(self.pending_nodes()))
    @rule(index=st.integers(0, 30), success=st.booleans(), duplicate=st.booleans())
    def agent_report(self, index: int, success: bool, duplicate: bool) -> None:
        pending = self.pending_nodes()
        node = pending[index % len(pending)]
        assert node.operation_id is not None
        operation_id = node.operation_id
        result = self.attempt(
            lambda: self.c.operations.report(
                node.id, operation_id=operation_id, success=success, reason="agent says so"
            )
        )
        assert not isinstance(result, Exception)
        assert result.recorded
        expected = {
            ("activate", True): NodeStatus.ONLINE,
            ("activate", False): NodeStatus.ACTIVATE_FAILED,
            ("deactivate", True): NodeStatus.DEACTIVATED,
            ("deactivate", False): NodeStatus.DEACTIVATE_PENDING,
            ("fix", True): NodeStatus.ONLINE,
            ("fix", False): NodeStatus.DAMAGED,
        }[(node.pending_operation or "", success)]
        assert result.node.status is expected
        if duplicate and node.pending_operation == "deactivate" and not success:
            # a failed deactivation stays pending: the agent's next report is a new attempt,
            # and its success is recorded
            self.clock.advance(1)
            again = self.c.operations.report(node.id, operation_id=operation_id, success=True)
            assert again.recorded
            assert again.node.status is NodeStatus.DEACTIVATED
            assert again.node.pending_operation is None
        elif duplicate:
            self.stale(node.id, operation_id, not success)

    @rule(
        index=st.integers(0, 30),
        success=st.booleans(),
        then=st.sampled_from((None, "mark-damaged", "deactivate", "force-deactivate")),
    )
    def activate_and_report(self, index: int, success: bool, then: str | None) -> None:
        """Activate a node and have its agent answer at once (reaches Online sooner), then
        maybe go on to Damaged or DeactivatePending (rarely reached by single steps)."""
        node_id = self.pick(index)
        result = self.attempt(lambda: self.c.nodes.action(node_id, "activate", actor=ADMIN))
        if isinstance(result, Exception):
            return
        assert result.pending_operation == "activate"
        operation_id = result.operation_id
        assert operation_id is not None
        self.clock.advance(1)
        outcome = self.c.operations.report(node_id, operation_id=operation_id, success=success)
        assert outcome.recorded
        expected = NodeStatus.ONLINE if success else NodeStatus.ACTIVATE_FAILED
        assert outcome.node.status is expected
        assert outcome.node.pending_operation is None
        if success and then is not None:
            action = "deactivate" if then == "force-deactivate" else then
            after = self.attempt(lambda: self.c.nodes.action(node_id, action, actor=ADMIN))
            assert isinstance(after, Node), after
            target = NodeStatus.DAMAGED if then == "mark-damaged" else NodeStatus.DEACTIVATE_PENDING
            assert after.status is target
            if then == "force-deactivate":  # the agent never signs: the administrator ends it
                self.force_deactivate(node_id, "machine gone")
                assert self.status_of(node_id) is NodeStatus.DEACTIVATED

    @precondition(lambda self: bool(self.operation_ids))
    @rule(index=st.integers(0, 100), success=st.booleans())
    def stale_report(self, index: int, success: bool) -> None:
        node_id, operation_id = self.operation_ids[index % len(self.operation_ids)]
        node = self.node(node_id)
        if node.operation_id == operation_id and node.pending_operation:
            return  # still current: that is agent_report's case
        self.stale(node_id, operation_id, success)

    def stale(self, node_id: int, operation_id: str, success: bool) -> None:
        before = self.snapshot()
        outcome = self.c.operations.report(node_id, operation_id=operation_id, success=success)
        if outcome.node.operation_id == operation_id and outcome.node.pending_operation:
            # a failed deactivation keeps its operation pending: a repeat is a new attempt
            assert outcome.node.pending_operation == "deactivate"
            assert not success
            return
        assert not outcome.recorded
        assert self.snapshot() == before

    @rule(seconds=st.sampled_from([0, 1, 30, 59, 60, 61, 120, 600]))
    def expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        deadline = self.clock.now - timedelta(seconds=TIMEOUT)
        due = {
            n.id: n
            for n in self.pending_nodes()
            if n.pending_operation in ("activate", "fix")
            and n.operation_started_at is not None
            and n.operation_started_at <= deadline
        }
        expired = self.c.operations.expire()
        assert {n.id for n in expired} == set(due)
        for node in expired:
            assert node.pending_operation is None
            was = due[node.id].pending_operation
            if was == "activate":
                assert node.status is NodeStatus.ACTIVATE_FAILED
                assert node.status_reason.startswith("no report from the agent within")
            else:
                assert node.status is NodeStatus.DAMAGED

    # invariants --------------------------------------------------------------------------------

    @invariant()
    def statuses_are_valid(self) -> None:
        with self.db.read() as conn:
            raw = conn.execute(select(tables.nodes.c.status)).scalars().all()
        valid = {s.value for s in NodeStatus}
        assert set(raw) <= valid

    @invariant()
    def lifecycle_invariants(self) -> None:
        nodes = {node_id: self.c.nodes.get(node_id) for node_id in self.node_ids}
        for details in nodes.values():
            if details.session_key:
                self.keys.setdefault(details.node.id, set()).add(details.session_key)

        with self.db.read() as conn:
            # session keys: only a live node's current key finds it; every other key found
            # nothing (regenerated or revoked by delete)
            for node_id, keys in self.keys.items():
                current = nodes[node_id].session_key
                for key in keys:
                    found = node_rows.get_by_key_digest(conn, self.box.digest(key))
                    if key == current:
                        assert found is not None
                        assert found.id == node_id
                    else:
                        assert found is None, f"old key of node {node_id} still works"

            # the event log accounts for every status change
            for node_id, details in nodes.items():
                status = NodeStatus.OFFLINE.value
                for change in event_rows.status_changes(conn, node_id):
                    assert change.status_before == status, (node_id, change)
                    status = change.status_after
                assert status == details.node.status.value, node_id

        for details in nodes.values():
            event(f"status: {details.node.status}")
        live_hostnames: list[str] = []
        controllers = []
        for details in nodes.values():
            node = details.node
            if node.is_controller:
                controllers.append(node)
            if node.status is NodeStatus.DELETED:
                assert node.roles == []
                assert not node.has_session_key
                assert details.session_key is None
                assert node.pending_operation is None
            else:
                live_hostnames.append(node.hostname)
            # pending operations
            pending = node.pending_operation
            assert (pending is None) == (node.operation_id is None)
            assert (pending is None) == (node.operation_started_at is None)
            assert (node.status is NodeStatus.DEACTIVATE_PENDING) == (pending == "deactivate")
            if pending is not None:
                assert node.status in PENDING_STATUSES[pending], (pending, node.status)
                for outcome in PENDING_OUTCOMES[pending]:
                    assert lifecycle.allowed(outcome, node.status), (outcome, node.status)
            # never stuck (issue 11): a deactivation has no controller deadline, so the
            # administrator can always end it (activations and fixes time out, above)
            if node.status is NodeStatus.DEACTIVATE_PENDING:
                assert lifecycle.allowed(Operation.FORCE_DEACTIVATE, node.status)
                lifecycle.check_not_busy(
                    Operation.FORCE_DEACTIVATE, pending, hostname=node.hostname
                )
            # roles that need a public IP have one
            if any(ROLES[r].public_ip.value == "required" for r in node.roles):
                assert node.public_ip
        assert len(live_hostnames) == len(set(live_hostnames))

        assert len(controllers) == 1
        (controller,) = controllers
        assert controller.id == self.ic_id
        assert controller.status is not NodeStatus.DELETED
        assert "ic" in controller.roles
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(tables.nodes)).scalar_one()
            controllers_in_db = conn.execute(
                select(func.count()).select_from(tables.nodes).where(tables.nodes.c.is_controller)
            ).scalar_one()
        assert total == len(self.node_ids)
        assert controllers_in_db == 1

    @invariant()
    def extensions_match(self) -> None:
        assert self.c.extensions.count() == len(self.extensions)


LifecycleMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    # no "explain" phase: its line tracer makes a failing run take minutes on Python 3.11
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycleMachine = LifecycleMachine.TestCase
