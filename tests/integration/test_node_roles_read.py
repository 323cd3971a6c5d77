"""A node's roles are read with it: beside its row in the same statement on PostgreSQL (a round
trip fewer in every node read and every page of the listing), by a second statement on SQLite;
in the order they were assigned either way (store/nodes.py, `_read`)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, update

from voipcloud.domain.filters import NodeFilter
from voipcloud.services.controller import Controller
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import role_assignments

ADMIN = "admin:admin"


def test_roles_come_in_the_order_they_were_assigned(services: Controller) -> None:
    node = services.nodes.add(
        actor=ADMIN, hostname="ordered", private_ip="10.9.6.1", public_ip="203.0.113.61"
    )
    bare = services.nodes.add(actor=ADMIN, hostname="bare", private_ip="10.9.6.2")
    for role in ("sip", "pbx", "que"):
        services.roles.assign(node.id, actor=ADMIN, role=role, parameters={})
    # assigned one after the other: "sip" first, though it sorts last by name; "pbx" and
    # "que" at the same instant, which their names order
    base = services.ctx.clock()
    with services.ctx.db.write() as conn:
        for role, moved in (("sip", 0), ("pbx", 1), ("que", 1)):
            conn.execute(
                update(role_assignments)
                .where(role_assignments.c.node_id == node.id, role_assignments.c.role == role)
                .values(created_at=base + timedelta(seconds=moved))
            )
    expected = ["sip", "pbx", "que"]
    with services.ctx.db.read() as conn:
        assert node_rows.roles_of(conn, [node.id])[node.id] == expected
        found = node_rows.get(conn, node.id)
        nothing = node_rows.get(conn, bare.id)
    assert found is not None
    assert found.roles == expected
    assert nothing is not None
    assert nothing.roles == []
    listed = {n.hostname: n.roles for n in services.nodes.list(NodeFilter(q="e")).items}
    assert listed["ordered"] == expected
    assert listed["bare"] == []


def test_a_node_and_its_roles_are_one_statement_on_postgresql(services: Controller) -> None:
    node = services.nodes.add(
        actor=ADMIN, hostname="one-read", private_ip="10.9.6.3", public_ip="203.0.113.63"
    )
    services.roles.assign(node.id, actor=ADMIN, role="sip", parameters={})
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("SELECT"):  # not SQLite's BEGIN
            statements.append(statement)

    engine = services.ctx.db.engine
    event.listen(engine, "after_cursor_execute", seen)
    try:
        with services.ctx.db.read() as conn:
            found = node_rows.get(conn, node.id)
            missing = node_rows.get(conn, 999_999)
    finally:
        event.remove(engine, "after_cursor_execute", seen)
    assert found is not None
    assert found.roles == ["sip"]
    assert missing is None
    reads = [s for s in statements if "role_assignments" in s]
    if services.ctx.db.dialect == "postgresql":
        assert len(statements) == len(reads) == 2  # one a read, the roles in it
    else:
        assert len(statements) == 3  # the found node's roles apart (none to read for the other)
        assert len(reads) == 1
