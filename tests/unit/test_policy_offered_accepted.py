"""Offered <=> accepted: the web's buttons, the API's `actions` and the services agree.

Hypothesis draws a node's facts -- every status, any set of roles, IC node or not, a public IP
or none, 0..5 extensions, any pending operation -- and writes them into a real SQLite database.
For every node action and every role action it then reads what the web listing offers (an
enabled button), what `GET /nodes/{id}` answers in `actions` (`allowed`), and runs the
service itself on a fresh copy of that database: offered, answered allowed and accepted must
be the same yes or no, and a refusal must name the same rule everywhere.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voipcloud.api.convert import node_actions
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import Operation, PendingOperation
from voipcloud.domain.roles import CONTROLLER_ROLE, ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import extensions, roles
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database, sqlite_url
from voipcloud.web import views

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ADMIN = "admin"
OTHER_ROLES = [code for code in ROLES if code != CONTROLLER_ROLE]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policy-template")
    db = Database(sqlite_url(directory))
    db.migrate()
    box = SecretBox.in_data_dir(directory)
    c = Controller.build(Context(db=db, box=box, clock=lambda: NOW))
    ensure_controller_node(c.ctx, c.nodes)
    c.nodes.add(actor=ADMIN, hostname="edge-01", private_ip="10.0.0.5")
    db.dispose()
    return directory


class World:
    """One copy of the template database, with a controller over it."""

    def __init__(self, source: Path, target: Path) -> None:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        self.db = Database(sqlite_url(target))
        self.c = Controller.build(
            Context(db=self.db, box=SecretBox.in_data_dir(target), clock=lambda: NOW)
        )

    def close(self) -> None:
        self.db.dispose()


@pytest.fixture
def place(tmp_path: Path) -> Path:
    return tmp_path


facts_strategy = st.fixed_dictionaries(
    {
        "status": st.sampled_from(list(NodeStatus)),
        "controller": st.booleans(),
        "roles": st.sets(st.sampled_from(OTHER_ROLES), max_size=4),
        "public_ip": st.booleans(),
        "extensions": st.integers(min_value=0, max_value=5),
        "pending": st.sampled_from([None, *PendingOperation]),
        "assign_role": st.sampled_from(OTHER_ROLES),
    }
)


def _write(world: World, drawn: dict[str, Any]) -> int:
    with world.db.write() as conn:
        node = (
            node_rows.get_controller(conn)
            if drawn["controller"]
            else node_rows.get(conn, _edge_id(conn))
        )
        assert node is not None
        for code in sorted(drawn["roles"]):
            roles.add(conn, node_id=node.id, role=code, parameters={}, now=NOW)
        for number in range(drawn["extensions"]):
            extensions.add(conn, number=f"{100 + number}", label="x", now=NOW)
        pending = drawn["pending"]
        assert node_rows.compare_and_set(
            conn,
            node,
            now=NOW,
            status=drawn["status"].value,
            public_ip="203.0.113.5" if drawn["public_ip"] else None,
            pending_operation=pending.value if pending else None,
            operation_id="op-1" if pending else None,
            operation_started_at=NOW if pending else None,
        )
        return node.id


def _edge_id(conn: Any) -> int:
    owner = node_rows.live_hostname_owner(conn, "edge-01")
    assert owner is not None
    return owner


def _run(world: World, node_id: int, name: str, role: str | None) -> str | None:
    """Run the operation through its service; None when accepted, else the rule."""
    c = world.c
    try:
        if name == "assign-role":
            assert role is not None
            c.roles.assign(node_id, actor=ADMIN, role=role, parameters={})
        elif name == "edit-node":
            c.nodes.edit(node_id, actor=ADMIN, changes={"hostname": "renamed-01"})
        elif name == "delete":
            c.nodes.delete(node_id, actor=ADMIN)
        elif name == "force-deactivate":
            c.nodes.force_deactivate(node_id, actor=ADMIN, reason="the VM is gone")
        elif name == "delete-assignment":
            assert role is not None
            c.roles.unassign(node_id, actor=ADMIN, role=role)
        elif name == "admin-remove":
            assert role is not None
            c.roles.admin_remove(node_id, actor=ADMIN, role=role, confirm=True)
        else:
            c.nodes.action(node_id, name, actor=ADMIN, reason="checked")
    except RuleViolation as refusal:
        return refusal.rule
    return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=facts_strategy)
def test_offered_iff_accepted(template: Path, place: Path, drawn: dict[str, Any]) -> None:
    world = World(template, place / "state")
    try:
        node_id = _write(world, drawn)
        details = world.c.nodes.get(node_id)
        node = details.node
        # the web: each row button, and each role's Delete Assignment / Remove
        row = views.node_row(world.c, node, details.facts)
        web = {(b.decision.operation.value, None): b.allowed for b in row.buttons}
        for rv in row.roles:
            web[("delete-assignment", rv.role.code)] = rv.can_delete_assignment
            web[("admin-remove", rv.role.code)] = rv.can_remove
        # View Info's Regenerate session key
        info = views.node_info(world.c, node_id)
        web[("regenerate-session-key", None)] = info.can_regenerate_key
        # the API
        api = {
            (a.name, a.role): a
            for a in node_actions(
                details, "never", None, activation_timeout=world.c.ctx.activation_timeout
            )
        }
        checked = 0
        for (name, role), answer in api.items():
            if name == Operation.ASSIGN_ROLE.value:
                role = drawn["assign_role"]  # the button: is some role assignable at all?
                if answer.allowed:  # then the first one the rulebook allows is accepted
                    role = next(
                        r for r in OTHER_ROLES if r not in node.roles and _allowed(world, node, r)
                    )
            assert web.get((name, answer.role), False) == answer.allowed, (name, role, drawn)
            copy = World(place / "state", place / "copy")
            try:
                rule = _run(copy, node_id, name, role)
            finally:
                copy.close()
            if name == Operation.ASSIGN_ROLE.value and not answer.allowed:
                assert rule is not None, (name, role, drawn)
                continue
            assert (rule is None) == answer.allowed, (name, role, rule, answer, drawn)
            if rule is not None:
                assert rule == answer.rule, (name, role, rule, answer, drawn)
            checked += 1
        assert checked >= 9
    finally:
        world.close()


def _allowed(world: World, node: Any, role: str) -> bool:
    from voipcloud.domain import policy

    facts = world.c.nodes.get(node.id).facts
    return policy.decide(Operation.ASSIGN_ROLE, facts, role=role).allowed
