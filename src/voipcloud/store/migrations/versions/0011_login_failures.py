"""wrong-password counts shared by every controller on the database

Revision ID: 0011
Revises: 0010

`login_failures`: the login throttle's counts per (account, source address) and per source
address (services/auth.py). On PostgreSQL every controller and every `serve --workers` process
counts in this table, so an attacker's guesses spread over N processes are throttled as one;
on SQLite (one process) the throttle stays in memory and the table stays empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_login_failures")),
    )
    op.create_index(
        "ix_login_failures_scope_last_failed_at",
        "login_failures",
        ["scope", "last_failed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_login_failures_scope_last_failed_at", table_name="login_failures")
    op.drop_table("login_failures")
