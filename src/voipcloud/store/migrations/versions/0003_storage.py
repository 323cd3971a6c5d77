"""storage configuration, stored resources and migrations

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_config",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=8), nullable=False),
        sa.Column("local_path", sa.Text(), nullable=False),
        sa.Column("s3", sa.JSON(), nullable=False),
        sa.Column("s3_access_key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("s3_secret_key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_storage_config")),
    )
    op.create_table(
        "storage_resources",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("backend", sa.String(length=8), nullable=False),
        sa.Column("stale_backend", sa.String(length=8), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_storage_resources")),
    )
    op.create_index("ix_storage_resources_kind_backend", "storage_resources", ["kind", "backend"])
    op.create_index(
        "ix_storage_resources_kind_stale_backend", "storage_resources", ["kind", "stale_backend"]
    )
    op.create_table(
        "storage_migrations",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_storage_migrations")),
    )


def downgrade() -> None:
    op.drop_table("storage_migrations")
    op.drop_index("ix_storage_resources_kind_stale_backend", table_name="storage_resources")
    op.drop_index("ix_storage_resources_kind_backend", table_name="storage_resources")
    op.drop_table("storage_resources")
    op.drop_table("storage_config")
