"""fleet operations: maintenance mode on nodes; rollouts and their nodes

Revision ID: 0007
Revises: 0006

Maintenance is a flag orthogonal to the status: a reason, who set it and since when (all
NULL when the node is not in maintenance). A rollout runs one action (fix, activate,
deactivate) over chosen nodes in batches; `rollout_nodes` keeps each node's place and outcome
so a rollout survives a restart of the controller.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("maintenance_reason", sa.Text(), nullable=True))
    op.add_column("nodes", sa.Column("maintenance_by", sa.String(64), nullable=True))
    op.add_column(
        "nodes", sa.Column("maintenance_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("pause_seconds", sa.Float(), nullable=False),
        sa.Column("failure_tolerance", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_batch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])
    op.create_table(
        "rollout_nodes",
        sa.Column(
            "rollout_id",
            sa.Integer(),
            sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("node_id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rollout_nodes_rollout_batch", "rollout_nodes", ["rollout_id", "batch"])


def downgrade() -> None:
    op.drop_index("ix_rollout_nodes_rollout_batch", table_name="rollout_nodes")
    op.drop_table("rollout_nodes")
    op.drop_index("ix_rollouts_state", table_name="rollouts")
    op.drop_table("rollouts")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("maintenance_since")
        batch.drop_column("maintenance_by")
        batch.drop_column("maintenance_reason")
