"""Each role assignment carries its node's host name, indexed by role: a role's page by host name

Revision ID: 0019
Revises: 0018

A role's live nodes sorted by host name were read along the live host names
(`uq_nodes_live_hostname`), each NodeID checked against the role's NodeIDs held in memory,
until the page was found. Host names often begin with the role (`que-0042.fra1...`), so the
role's nodes cluster at one end of that index: `role=que&sort=-hostname` passed the 31,668
other nodes first, 9-10 ms of the API's time at 50,000 nodes on either database, the slowest
request of the listing (docs/benchmarks.md, "The listing's twelfth pass").

`role_assignments.hostname` is a copy of its node's host name, kept by the database (no
writer can leave it stale), and `ix_role_assignments_role_hostname` (role, host name, NodeID)
gives a role's nodes in host-name order: the page is read from its first entries, each node's
status checked through an index of the nodes (the live ones' partial index on PostgreSQL).

- PostgreSQL: a BEFORE INSERT OR UPDATE trigger on `role_assignments` sets it from the node
  (left as it is when there is no such node, so that the foreign key still says so), and an
  AFTER UPDATE OF hostname trigger on `nodes` writes a renamed node's into its assignments.
- SQLite: an AFTER INSERT trigger on `role_assignments` (SQLite's triggers cannot change the
  row being written) and the same AFTER UPDATE OF hostname on `nodes`. A later migration that
  rebuilds `nodes` or `role_assignments` (`batch_alter_table`) drops them with the old table
  and must create them again (`test_search_structures_exist` fails if they are missing).

The column's default, '', is what a row holds only between its insert and its trigger.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES = [
    """CREATE FUNCTION voipcloud_role_hostname() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    name text;
BEGIN
    SELECT hostname INTO name FROM nodes WHERE id = NEW.node_id;
    IF FOUND THEN
        NEW.hostname := name;
    END IF;
    RETURN NEW;
END
$$""",
    """CREATE FUNCTION voipcloud_role_hostnames_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE role_assignments SET hostname = NEW.hostname WHERE node_id = NEW.id;
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER role_assignments_hostname "
    "BEFORE INSERT OR UPDATE OF node_id, hostname ON role_assignments "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_role_hostname()",
    "CREATE TRIGGER role_assignments_follow_hostname AFTER UPDATE OF hostname ON nodes "
    "FOR EACH ROW WHEN (OLD.hostname IS DISTINCT FROM NEW.hostname) "
    "EXECUTE FUNCTION voipcloud_role_hostnames_follow()",
]

SQLITE = [
    "CREATE TRIGGER role_assignments_hostname AFTER INSERT ON role_assignments BEGIN "
    "UPDATE role_assignments SET hostname = coalesce("
    "(SELECT hostname FROM nodes WHERE id = new.node_id), hostname) "
    "WHERE node_id = new.node_id AND role = new.role; END",
    "CREATE TRIGGER role_assignments_follow_hostname AFTER UPDATE OF hostname ON nodes "
    "WHEN old.hostname IS NOT new.hostname BEGIN "
    "UPDATE role_assignments SET hostname = new.hostname WHERE node_id = new.id; END",
]
TRIGGERS = {
    "role_assignments_hostname": "role_assignments",
    "role_assignments_follow_hostname": "nodes",
}
FILL = (
    "UPDATE role_assignments SET hostname = "
    "(SELECT hostname FROM nodes WHERE nodes.id = role_assignments.node_id)"
)


def upgrade() -> None:
    # a constant default: no rewrite of the table on PostgreSQL, the fill below writes each row
    op.add_column(
        "role_assignments",
        sa.Column("hostname", sa.String(253), nullable=False, server_default=""),
    )
    op.execute(FILL)
    op.create_index(
        "ix_role_assignments_role_hostname", "role_assignments", ["role", "hostname", "node_id"]
    )
    for statement in POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for trigger, table in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {trigger}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION voipcloud_role_hostnames_follow()")
        op.execute("DROP FUNCTION voipcloud_role_hostname()")
    op.drop_index("ix_role_assignments_role_hostname", table_name="role_assignments")
    # SQLite drops a column in place (3.35 on): a batch rebuild would drop the table's other
    # triggers (the kept counts', 0009) with the old table
    op.execute("ALTER TABLE role_assignments DROP COLUMN hostname")
