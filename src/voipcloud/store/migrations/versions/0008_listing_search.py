"""the Node Listing at 50,000 nodes: an index for substring search, sort indexes, node counts

Revision ID: 0008
Revises: 0007

Search (`q`: a substring of the hostname, a prefix of either IP, or the NodeID):
- PostgreSQL: the `pg_trgm` extension and a GIN trigram index on `nodes.hostname` serve
  `hostname LIKE '%q%'`; B-tree indexes with `varchar_pattern_ops` serve `private_ip LIKE 'q%'`
  and `public_ip LIKE 'q%'` whatever the database's collation. `CREATE EXTENSION pg_trgm`
  needs the CREATE privilege on the database (pg_trgm is a trusted extension since
  PostgreSQL 13), or a superuser: an operator whose voipcloud role lacks it runs
  `CREATE EXTENSION pg_trgm;` in the database once, as a superuser, before upgrading.
  A downgrade leaves the extension installed (another user of the database may need it).
- SQLite: an FTS5 table with the trigram tokenizer over `nodes.hostname` (external content:
  it stores only the index, the text stays in `nodes`), kept in step by three triggers on
  `nodes`. IP prefixes use the B-tree indexes below (`GLOB 'q*'`).

Sorts and filters: (status, id), (private_ip, status), (public_ip, status),
(created_at, id), (updated_at, id) on both databases, (last_seen, id) on SQLite only (on
PostgreSQL an index on `last_seen` would turn every heartbeat's update into one that writes
every index of the row); (role, node_id) on role assignments. `ix_nodes_search_cover`
(hostname, status, private_ip, public_ip) replaces `ix_nodes_hostname` for exact lookups and
holds everything a search looks at: a filtered total reads it alone, never the wide rows.
`ix_nodes_maintenance` (status, only rows in maintenance) lets the status counters above the
listing count the nodes in maintenance without a scan.

A later migration that rebuilds `nodes` on SQLite (`batch_alter_table`: copy, drop, rename)
drops these triggers with the old table: it must create them again (and `rebuild` the FTS
index); `test_search_structures_exist` fails if they are missing.

Counts: `node_counts` holds signed changes of the number of nodes per status, appended by
triggers on `nodes` in the same transaction as the change (an insert never waits for another
transaction, so counting adds no lock contention and no deadlock). The listing's unfiltered and
status-only totals are `SUM(delta)` over its few rows. Every 1,024th change folds the rows into
one per status (on PostgreSQL only when no other transaction is folding at that moment).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Folding: every 1,024th change; on PostgreSQL under pg_try_advisory_xact_lock(715008), an
# arbitrary key, so that one transaction folds at a time.

SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE nodes_search USING fts5("
    "hostname, content='nodes', content_rowid='id', tokenize='trigram')",
    "INSERT INTO nodes_search(nodes_search) VALUES ('rebuild')",
    "CREATE TRIGGER nodes_search_insert AFTER INSERT ON nodes BEGIN "
    "INSERT INTO nodes_search(rowid, hostname) VALUES (new.id, new.hostname); END",
    "CREATE TRIGGER nodes_search_delete AFTER DELETE ON nodes BEGIN "
    "INSERT INTO nodes_search(nodes_search, rowid, hostname) "
    "VALUES ('delete', old.id, old.hostname); END",
    "CREATE TRIGGER nodes_search_update AFTER UPDATE OF id, hostname ON nodes BEGIN "
    "INSERT INTO nodes_search(nodes_search, rowid, hostname) "
    "VALUES ('delete', old.id, old.hostname); "
    "INSERT INTO nodes_search(rowid, hostname) VALUES (new.id, new.hostname); END",
]

SQLITE_COUNTS = [
    "CREATE TRIGGER node_counts_insert AFTER INSERT ON nodes BEGIN "
    "INSERT INTO node_counts(status, delta) VALUES (new.status, 1); END",
    "CREATE TRIGGER node_counts_delete AFTER DELETE ON nodes BEGIN "
    "INSERT INTO node_counts(status, delta) VALUES (old.status, -1); END",
    "CREATE TRIGGER node_counts_update AFTER UPDATE OF status ON nodes "
    "WHEN old.status IS NOT new.status BEGIN "
    "INSERT INTO node_counts(status, delta) VALUES (old.status, -1); "
    "INSERT INTO node_counts(status, delta) VALUES (new.status, 1); END",
    # SQLite has one writer at a time: folding here never races another fold. Its own
    # inserts do not fire it again (recursive triggers are off).
    "CREATE TRIGGER node_counts_fold AFTER INSERT ON node_counts "
    "WHEN new.id % 1024 = 0 BEGIN "
    "INSERT INTO node_counts(status, delta) "
    "SELECT status, SUM(delta) FROM node_counts WHERE id <= new.id GROUP BY status; "
    "DELETE FROM node_counts WHERE id <= new.id; END",
]

POSTGRES_COUNTS = [
    """CREATE FUNCTION voipcloud_node_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO node_counts(status, delta) VALUES (NEW.status, 1) RETURNING id INTO last_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO node_counts(status, delta) VALUES (OLD.status, -1) RETURNING id INTO last_id;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO node_counts(status, delta) VALUES (OLD.status, -1);
        INSERT INTO node_counts(status, delta) VALUES (NEW.status, 1) RETURNING id INTO last_id;
    END IF;
    IF last_id % 1024 = 0 AND pg_try_advisory_xact_lock(715008) THEN
        -- rows of transactions still open are invisible here and stay for a later fold
        WITH folded AS (DELETE FROM node_counts WHERE id <= last_id RETURNING status, delta)
        INSERT INTO node_counts(status, delta)
        SELECT status, SUM(delta) FROM folded GROUP BY status;
    END IF;
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER node_counts_change AFTER INSERT OR DELETE OR UPDATE OF status ON nodes "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_node_counts()",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_nodes_status", table_name="nodes")
    op.drop_index("ix_nodes_hostname", table_name="nodes")
    op.create_index("ix_nodes_status_id", "nodes", ["status", "id"])
    op.create_index(
        "ix_nodes_search_cover", "nodes", ["hostname", "status", "private_ip", "public_ip"]
    )
    op.create_index("ix_nodes_private_ip_status", "nodes", ["private_ip", "status"])
    op.create_index("ix_nodes_public_ip_status", "nodes", ["public_ip", "status"])
    op.create_index("ix_nodes_created_at_id", "nodes", ["created_at", "id"])
    op.create_index(
        "ix_nodes_maintenance",
        "nodes",
        ["status"],
        sqlite_where=sa.text("maintenance_since IS NOT NULL"),
        postgresql_where=sa.text("maintenance_since IS NOT NULL"),
    )
    op.create_index("ix_nodes_updated_at_id", "nodes", ["updated_at", "id"])
    op.drop_index("ix_role_assignments_role", table_name="role_assignments")
    op.create_index("ix_role_assignments_role_node_id", "role_assignments", ["role", "node_id"])
    op.create_table(
        "node_counts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO node_counts(status, delta) SELECT status, COUNT(*) FROM nodes GROUP BY status"
    )
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_nodes_hostname_trgm",
            "nodes",
            ["hostname"],
            postgresql_using="gin",
            postgresql_ops={"hostname": "gin_trgm_ops"},
        )
        op.create_index(
            "ix_nodes_private_ip_pattern",
            "nodes",
            ["private_ip"],
            postgresql_ops={"private_ip": "varchar_pattern_ops"},
        )
        op.create_index(
            "ix_nodes_public_ip_pattern",
            "nodes",
            ["public_ip"],
            postgresql_ops={"public_ip": "varchar_pattern_ops"},
        )
        for statement in POSTGRES_COUNTS:
            op.execute(statement)
    else:
        op.create_index("ix_nodes_last_seen_id", "nodes", ["last_seen", "id"])
        for statement in SQLITE_SEARCH + SQLITE_COUNTS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER node_counts_change ON nodes")
        op.execute("DROP FUNCTION voipcloud_node_counts()")
        op.drop_index("ix_nodes_public_ip_pattern", table_name="nodes")
        op.drop_index("ix_nodes_private_ip_pattern", table_name="nodes")
        op.drop_index("ix_nodes_hostname_trgm", table_name="nodes")
    else:
        for trigger in (
            "node_counts_fold",
            "node_counts_update",
            "node_counts_delete",
            "node_counts_insert",
            "nodes_search_update",
            "nodes_search_delete",
            "nodes_search_insert",
        ):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE nodes_search")
        op.drop_index("ix_nodes_last_seen_id", table_name="nodes")
    op.drop_table("node_counts")
    op.drop_index("ix_role_assignments_role_node_id", table_name="role_assignments")
    op.create_index("ix_role_assignments_role", "role_assignments", ["role"])
    for name in (
        "ix_nodes_updated_at_id",
        "ix_nodes_created_at_id",
        "ix_nodes_maintenance",
        "ix_nodes_public_ip_status",
        "ix_nodes_private_ip_status",
        "ix_nodes_search_cover",
        "ix_nodes_status_id",
    ):
        op.drop_index(name, table_name="nodes")
    op.create_index("ix_nodes_hostname", "nodes", ["hostname"])
    op.create_index("ix_nodes_status", "nodes", ["status"])
