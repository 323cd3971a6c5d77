"""PostgreSQL: the kept counts fold whichever row of a change is the 1,024th

Revision ID: 0017
Revises: 0016

`node_counts` (0008) and `node_role_counts` (0009) are folded into one row per key when a
trigger appends the 1,024th row. A status change appends two rows to `node_counts` (-1 under
the old status, +1 under the new), and the trigger checked only the second. Once the table's
last NodeCount id was odd, every change wrote an (even, odd) pair, the odd one was checked,
and no status change folded the table until a node was added or deleted (one row: the parity
turns): on a fleet whose nodes only change status, it grew by two rows a change, and every poll
of the listing summed all of them (a fleet's millionth status change: two million rows). The
same held for an assignment moved to another role (two rows into `node_role_counts`). Now
either row of a change folds when it is the 1,024th. Both tables are also folded once here,
so that a table the old check let grow is small again (the controller compacts both from now
on: store/kept_counts.py). SQLite's triggers fold on each row appended: unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# {check}: when the change's rows fold the table. first_id is the row under the old status (or
# role), last_id the row under the new one; either may be NULL (an insert, a delete).
_NODE_COUNTS = """CREATE OR REPLACE FUNCTION voipcloud_node_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
    last_id bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO node_counts(status, delta) VALUES (NEW.status, 1) RETURNING id INTO last_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO node_counts(status, delta) VALUES (OLD.status, -1) RETURNING id INTO last_id;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO node_counts(status, delta) VALUES (OLD.status, -1) RETURNING id INTO first_id;
        INSERT INTO node_counts(status, delta) VALUES (NEW.status, 1) RETURNING id INTO last_id;
    END IF;
    IF {check} AND pg_try_advisory_xact_lock(715008) THEN
        -- rows of transactions still open are invisible here and stay for a later fold
        WITH folded AS (DELETE FROM node_counts WHERE id <= last_id RETURNING status, delta)
        INSERT INTO node_counts(status, delta)
        SELECT status, SUM(delta) FROM folded GROUP BY status;
    END IF;
    RETURN NULL;
END
$$"""

_ROLE_COUNTS_OF_ROLE = """CREATE OR REPLACE FUNCTION voipcloud_node_role_counts_of_role()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_id bigint;
    last_id bigint;
    node_status text;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT status INTO node_status FROM nodes WHERE id = OLD.node_id FOR NO KEY UPDATE;
        IF FOUND THEN
            INSERT INTO node_role_counts(role, status, delta)
            VALUES (OLD.role, node_status, -1) RETURNING id INTO first_id;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT status INTO node_status FROM nodes WHERE id = NEW.node_id FOR NO KEY UPDATE;
        IF FOUND THEN
            INSERT INTO node_role_counts(role, status, delta)
            VALUES (NEW.role, node_status, 1) RETURNING id INTO last_id;
        END IF;
    END IF;
    last_id := greatest(first_id, last_id);
    IF {check} AND pg_try_advisory_xact_lock(715009) THEN
        -- rows of transactions still open are invisible here and stay for a later fold
        WITH folded AS (DELETE FROM node_role_counts WHERE id <= last_id
                        RETURNING role, status, delta)
        INSERT INTO node_role_counts(role, status, delta)
        SELECT role, status, SUM(delta) FROM folded GROUP BY role, status;
    END IF;
    RETURN NULL;
END
$$"""

_EITHER_ROW = "(first_id % 1024 = 0 OR last_id % 1024 = 0)"
_LAST_ROW_ONLY = "last_id % 1024 = 0"  # before: the row under the old status never folded

_FOLD_NOW = [
    "SELECT pg_advisory_xact_lock(715008)",  # the triggers' fold lock: they skip meanwhile
    "WITH folded AS (DELETE FROM node_counts RETURNING status, delta) "
    "INSERT INTO node_counts(status, delta) "
    "SELECT status, SUM(delta) FROM folded GROUP BY status",
    "SELECT pg_advisory_xact_lock(715009)",
    "WITH folded AS (DELETE FROM node_role_counts RETURNING role, status, delta) "
    "INSERT INTO node_role_counts(role, status, delta) "
    "SELECT role, status, SUM(delta) FROM folded GROUP BY role, status",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_NODE_COUNTS.format(check=_EITHER_ROW))
    op.execute(_ROLE_COUNTS_OF_ROLE.format(check=_EITHER_ROW))
    for statement in _FOLD_NOW:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # the same behaviour as before (first_id is then only written, never checked)
    op.execute(_NODE_COUNTS.format(check=_LAST_ROW_ONLY))
    op.execute(_ROLE_COUNTS_OF_ROLE.format(check=_LAST_ROW_ONLY))
