"""PostgreSQL: the last-seen index on `node_presence` that SQLite has had since 0015

Revision ID: 0016
Revises: 0015

Migration 0015 left `node_presence` without an index on the time on PostgreSQL, so that each
flush's update stayed HOT (no index entry written). The listing's last-seen sort then read
every presence row and sorted them for each page (a top-N sort of 50,000 rows: 6.3 ms, and
10-18 ms for the whole page at 50,000 nodes beside 5,000 beats/s), as did the agent watch's
scan for stale agents. With `(last_seen, node_id)` indexed, a page walks the first entries in
either direction, as on SQLite. Each update then writes an index entry: the dead ones are
vacuumed by the controller every PRESENCE_VACUUM_SECONDS (services/agents.py), whether or not
the server runs autovacuum (docs/operations.md). The table's pages stay half filled
(fillfactor 50): a row's new version still lands on its own page.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.create_index("ix_node_presence_last_seen", "node_presence", ["last_seen", "node_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_index("ix_node_presence_last_seen", table_name="node_presence")
