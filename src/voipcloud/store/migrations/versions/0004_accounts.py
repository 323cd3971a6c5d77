"""accounts: roles, disabled flag, named API tokens

Revision ID: 0004
Revises: 0003

The existing accounts (only `admin` before this release) become role `admin`, enabled.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN (not a batch copy): on SQLite, copying the table would drop the old
    # one, and the foreign key's ON DELETE CASCADE would end every session with it
    op.add_column(
        "administrators",
        sa.Column("role", sa.String(length=16), nullable=False, server_default="admin"),
    )
    op.add_column(
        "administrators",
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column(
        "administrators", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("administrator_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["administrator_id"],
            ["administrators.id"],
            name=op.f("fk_account_tokens_administrator_id_administrators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_account_tokens_digest")),
    )
    op.create_index(
        "uq_account_tokens_account_name",
        "account_tokens",
        ["administrator_id", "name"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_account_tokens_account_name", table_name="account_tokens")
    op.drop_table("account_tokens")
    # an older controller knows administrators only: the other accounts cannot stay
    gone = "SELECT id FROM administrators WHERE role != 'admin' OR disabled"
    op.execute(f"DELETE FROM api_tokens WHERE administrator_id IN ({gone})")  # noqa: S608
    op.execute("DELETE FROM administrators WHERE role != 'admin' OR disabled")
    with op.batch_alter_table("administrators", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("disabled")
        batch_op.drop_column("role")
