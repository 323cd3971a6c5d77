"""Every race is a 409 naming the rule, never a 500, on SQLite and PostgreSQL.

On PostgreSQL (READ COMMITTED) two requests can both pass a check and then meet at a unique
constraint; the loser's driver error is mapped once, in `voipcloud.store.errors`, to the
rule of that constraint. SQLite serializes writers (BEGIN IMMEDIATE), so there the loser is
refused by the check itself; both must answer the same way.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import LiveApi
from tests.integration.live_controller import API, add_node, expect, node_events, unique
from tests.integration.test_api_concurrency import race, token
from voipcloud.domain.errors import RuleViolation
from voipcloud.store import errors as store_errors
from voipcloud.store import tables
from voipcloud.store.database import Database

ROUNDS = 30
ROLE = "wk"  # no public IP and no parameter needed


def test_two_assignments_of_one_role_at_once_answer_201_and_409(api: LiveApi) -> None:
    c = api.client
    refusals: Counter[str] = Counter()
    for _ in range(ROUNDS):
        node_id = add_node(c, unique("race-role"))["node_id"]

        def assign(client: Any, nid: int = node_id) -> Any:
            return client.post(f"{API}/nodes/{nid}/roles", json={"role": ROLE, "parameters": {}})

        answers = race(api.base_url, token(c), assign, assign)  # asserts no 5xx
        codes = sorted(a.status_code for a in answers)
        assert codes == [201, 409], [a.text for a in answers]
        refusal = next(a for a in answers if a.status_code == 409).json()
        assert refusal["rule"] in {"role-already-assigned", "concurrent-change"}, refusal
        assert refusal["detail"]
        refusals[refusal["detail"]] += 1
        node = expect(c.get(f"{API}/nodes/{node_id}"), 200)
        assert node["roles"] == [ROLE]
        assigned = [e for e in node_events(c, node_id) if e["operation"] == "assign-role"]
        assert len(assigned) == 1, assigned
    if api.settings.database_url and api.settings.database_url.startswith("postgresql"):
        # the loser met the primary key at least once: the path this test is about
        assert any("at the same time" in detail for detail in refusals), refusals


# --- the mapping itself, on each database: a real violation of each kind ---------------------


def _node(hostname: str, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "hostname": hostname,
        "private_ip": "10.0.0.1",
        "status": "Offline",
        "is_controller": False,
        "config_generation": 1,
        "row_version": 1,
        "created_at": now,
        "updated_at": now,
        **extra,
    }


def _violation(db: Database, *statements: Any) -> RuleViolation:
    """Run `statements` in one transaction that must fail on a constraint; nothing stays."""

    def run() -> None:
        with db.write() as conn:
            for statement in statements:
                conn.execute(statement)

    with pytest.raises(RuleViolation) as caught:
        run()
    return caught.value


@pytest.fixture
def db(database_url: str) -> Any:
    database = Database(database_url)
    yield database
    database.dispose()


def test_each_unique_constraint_is_a_rule(db: Database) -> None:
    nodes, ra = tables.nodes, tables.role_assignments
    with db.write() as conn:
        node_id = conn.execute(sa.insert(nodes).values(_node("mapped-1"))).inserted_primary_key[0]
    now = datetime.now(UTC)
    assignment = sa.insert(ra).values(
        node_id=node_id, role=ROLE, parameters={}, created_at=now, updated_at=now
    )
    with db.write() as conn:
        conn.execute(assignment)

    hostname = _violation(db, sa.insert(nodes).values(_node("mapped-1")))
    assert hostname.rule == "hostname-unique"
    role = _violation(db, assignment)
    assert role.rule == "role-already-assigned"
    extension = sa.insert(tables.extensions).values(number="700", label="", created_at=now)
    twice = _violation(db, extension, extension)
    assert twice.rule == "extension-unique"
    # a Deleted node does not hold its hostname: no conflict
    with db.write() as conn:
        conn.execute(sa.update(nodes).where(nodes.c.id == node_id).values(status="Deleted"))
        conn.execute(sa.insert(nodes).values(_node("mapped-1")))
    # nothing of the refused transactions stayed
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.extensions)).scalar() == 0
        live = sa.select(sa.func.count()).where(nodes.c.hostname == "mapped-1")
        assert conn.execute(live).scalar() == 2


def test_an_unknown_constraint_gets_the_fallback_rule(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            sa.text("CREATE TABLE scratch_race (a INTEGER, CONSTRAINT uq_scratch_a UNIQUE (a))")
        )
    row = sa.text("INSERT INTO scratch_race (a) VALUES (1)")
    found = _violation(db, row, row)
    assert (found.rule, found.message) == store_errors.FALLBACK_RULE


def test_the_mapping_names_only_constraints_of_the_schema() -> None:
    names = set()
    for table in tables.metadata.tables.values():
        names |= {c.name for c in table.constraints}
        names |= {i.name for i in table.indexes if i.unique}
    assert set(store_errors.UNIQUE_RULES) <= names, set(store_errors.UNIQUE_RULES) - names
    # SQLite names columns, not constraints: each mapped one is found by its columns
    for table in tables.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name in store_errors.UNIQUE_RULES:
                cols = ", ".join(f"{table.name}.{c.name}" for c in constraint.columns)
                message = f"UNIQUE constraint failed: {cols}"
                assert store_errors._sqlite_constraint_name(message) == constraint.name
