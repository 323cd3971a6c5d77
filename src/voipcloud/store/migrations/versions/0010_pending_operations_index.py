"""the nodes with an operation under way, from an index

Revision ID: 0010
Revises: 0009

`ix_nodes_pending_operation` (id, only nodes with a pending operation): the controller's
expiry duty asks every second which nodes have an activation, fix or deactivation under way
(services/operations.py `expire`); without an index that was a visit to every node: 20-40 ms
of a core each second at 50,000 nodes, most of an idle controller's upkeep after the agent
watch. The column never changes with a heartbeat: PostgreSQL's HOT updates are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_nodes_pending_operation",
        "nodes",
        ["id"],
        sqlite_where=sa.text("pending_operation IS NOT NULL"),
        postgresql_where=sa.text("pending_operation IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_nodes_pending_operation", table_name="nodes")
