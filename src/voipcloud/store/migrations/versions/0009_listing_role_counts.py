"""the Node Listing at 50,000 nodes: node counts per role and status; narrow rows on PostgreSQL

Revision ID: 0009
Revises: 0008

`ix_nodes_live_id` (id, only live nodes): the listing's default order (live nodes by NodeID)
from an index alone, so that a deep page (offset 24,975) skips index entries instead of rows
(SQLite: 22 ms to 1 ms; PostgreSQL: 10 ms to 2 ms, at 50,000 nodes). Neither column changes
with a heartbeat: PostgreSQL's HOT updates are unaffected.

Counts per role: `node_role_counts` holds signed changes of the number of nodes per (role,
status), appended in the writing transaction, like `node_counts` (migration 0008): the listing's
role-only and status+role totals are `SUM(delta)` over its few rows instead of a visit to every
node with the role. Appended by triggers:
- a role assigned / unassigned: +1 / -1 for (role, the node's status). On PostgreSQL the node's
  row is read `FOR NO KEY UPDATE`, the lock the assignment's compare-and-set on the node takes a
  moment later anyway (same order: no new deadlock): a concurrent status change of that node
  waits, or is waited for and its new status read, so the count never keeps a stale status.
- a node's status changed: -1 for each of its roles under the old status, +1 under the new (a
  fresh snapshot reads the roles: an assignment committed meanwhile is moved too).
- a node row deleted (never by the services; a restore or a purge): -1 for each of its roles,
  BEFORE the delete, while its assignments are still there; their cascaded deletes then find no
  node and append nothing.
Every 1,024th row folds the table into one row per (role, status) (on PostgreSQL only when no
other transaction is folding: advisory lock 715009).

PostgreSQL storage of `nodes`: `toast_tuple_target = 128` moves a row's reported components
(~8 KiB of JSON, ~1.8 KiB compressed, which stayed inside the row: about 4 rows per 8 KiB page)
out of line, so that the rows every listing, sort and count reads are ~250 bytes; `fillfactor =
80` leaves room on each page for heartbeats' HOT updates (the heartbeat flush wrote a new row
version elsewhere, and every index entry, for nearly every beat: pages were full). Both apply to
rows written from now on: an existing row becomes narrow when its agent next reports its
inventory (`VACUUM FULL nodes` packs the table at once, holding it locked while it runs).

The trigram index's pending list (GIN `fastupdate`) is kept under 256 kB instead of 4 MB: every
update that is not HOT (a heartbeat on a full page) appends the hostname's trigrams there, and
every search reads the whole list (measured: 7.5 ms instead of 0.6 ms for one search at 50,000
nodes after 100,000 heartbeats, until the next vacuum).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE = [
    "CREATE TRIGGER node_role_counts_status AFTER UPDATE OF status ON nodes "
    "WHEN old.status IS NOT new.status BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT role, old.status, -1 FROM role_assignments WHERE node_id = new.id; "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT role, new.status, 1 FROM role_assignments WHERE node_id = new.id; END",
    "CREATE TRIGGER node_role_counts_node_delete BEFORE DELETE ON nodes BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT role, old.status, -1 FROM role_assignments WHERE node_id = old.id; END",
    # a cascaded delete finds no node (it is gone before its children): nothing appended
    "CREATE TRIGGER node_role_counts_unassign AFTER DELETE ON role_assignments BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT old.role, status, -1 FROM nodes WHERE id = old.node_id; END",
    "CREATE TRIGGER node_role_counts_assign AFTER INSERT ON role_assignments BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT new.role, status, 1 FROM nodes WHERE id = new.node_id; END",
    "CREATE TRIGGER node_role_counts_reassign AFTER UPDATE OF node_id, role ON role_assignments "
    "BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT old.role, status, -1 FROM nodes WHERE id = old.node_id; "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT new.role, status, 1 FROM nodes WHERE id = new.node_id; END",
    "CREATE TRIGGER node_role_counts_fold AFTER INSERT ON node_role_counts "
    "WHEN new.id % 1024 = 0 BEGIN "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT role, status, SUM(delta) FROM node_role_counts WHERE id <= new.id "
    "GROUP BY role, status; "
    "DELETE FROM node_role_counts WHERE id <= new.id; END",
]
SQLITE_TRIGGERS = (
    "node_role_counts_fold",
    "node_role_counts_reassign",
    "node_role_counts_assign",
    "node_role_counts_unassign",
    "node_role_counts_node_delete",
    "node_role_counts_status",
)

# the fold: every 1,024th row, under pg_try_advisory_xact_lock(715009) (an arbitrary key)
POSTGRES = [
    """CREATE FUNCTION voipcloud_node_role_counts_of_node() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO node_role_counts(role, status, delta)
        SELECT role, OLD.status, -1 FROM role_assignments WHERE node_id = OLD.id;
        RETURN OLD;
    END IF;
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        WITH moved AS (
            INSERT INTO node_role_counts(role, status, delta)
            SELECT role, s.status, s.delta FROM role_assignments,
                (VALUES (OLD.status, -1), (NEW.status, 1)) AS s(status, delta)
            WHERE node_id = NEW.id
            RETURNING id)
        SELECT max(id) INTO last_id FROM moved WHERE id % 1024 = 0;
    IF last_id % 1024 = 0 AND pg_try_advisory_xact_lock(715009) THEN
        -- rows of transactions still open are invisible here and stay for a later fold
        WITH folded AS (DELETE FROM node_role_counts WHERE id <= last_id
                        RETURNING role, status, delta)
        INSERT INTO node_role_counts(role, status, delta)
        SELECT role, status, SUM(delta) FROM folded GROUP BY role, status;
    END IF;
    END IF;
    RETURN NULL;
END
$$""",
    """CREATE FUNCTION voipcloud_node_role_counts_of_role() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
    node_status text;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT status INTO node_status FROM nodes WHERE id = OLD.node_id FOR NO KEY UPDATE;
        IF FOUND THEN
            INSERT INTO node_role_counts(role, status, delta)
            VALUES (OLD.role, node_status, -1) RETURNING id INTO last_id;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT status INTO node_status FROM nodes WHERE id = NEW.node_id FOR NO KEY UPDATE;
        IF FOUND THEN
            INSERT INTO node_role_counts(role, status, delta)
            VALUES (NEW.role, node_status, 1) RETURNING id INTO last_id;
        END IF;
    END IF;
    IF last_id % 1024 = 0 AND pg_try_advisory_xact_lock(715009) THEN
        -- rows of transactions still open are invisible here and stay for a later fold
        WITH folded AS (DELETE FROM node_role_counts WHERE id <= last_id
                        RETURNING role, status, delta)
        INSERT INTO node_role_counts(role, status, delta)
        SELECT role, status, SUM(delta) FROM folded GROUP BY role, status;
    END IF;
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER node_role_counts_status AFTER UPDATE OF status ON nodes "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_node_role_counts_of_node()",
    "CREATE TRIGGER node_role_counts_node_delete BEFORE DELETE ON nodes "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_node_role_counts_of_node()",
    "CREATE TRIGGER node_role_counts_change "
    "AFTER INSERT OR DELETE OR UPDATE OF node_id, role ON role_assignments "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_node_role_counts_of_role()",
]


def upgrade() -> None:
    op.create_table(
        "node_role_counts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_nodes_live_id",
        "nodes",
        ["id"],
        sqlite_where=sa.text("status != 'Deleted'"),
        postgresql_where=sa.text("status != 'Deleted'"),
    )
    op.execute(
        "INSERT INTO node_role_counts(role, status, delta) "
        "SELECT r.role, n.status, COUNT(*) FROM role_assignments r "
        "JOIN nodes n ON n.id = r.node_id GROUP BY r.role, n.status"
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES:
            op.execute(statement)
        op.execute("ALTER TABLE nodes SET (toast_tuple_target = 128, fillfactor = 80)")
        op.execute("ALTER INDEX ix_nodes_hostname_trgm SET (gin_pending_list_limit = 256)")
    else:
        for statement in SQLITE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_nodes_hostname_trgm RESET (gin_pending_list_limit)")
        op.execute("ALTER TABLE nodes RESET (toast_tuple_target, fillfactor)")
        op.execute("DROP TRIGGER node_role_counts_change ON role_assignments")
        op.execute("DROP TRIGGER node_role_counts_node_delete ON nodes")
        op.execute("DROP TRIGGER node_role_counts_status ON nodes")
        op.execute("DROP FUNCTION voipcloud_node_role_counts_of_role()")
        op.execute("DROP FUNCTION voipcloud_node_role_counts_of_node()")
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table("node_role_counts")
    op.drop_index("ix_nodes_live_id", table_name="nodes")
