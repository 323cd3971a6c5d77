"""versions of role assignments and storage configuration; an index for exact hostname lookups

Revision ID: 0006
Revises: 0005

Nodes and the infrastructure row already carry `row_version`. Role assignments and the
storage configuration rows get one too (existing rows start at 1): `GET` answers it as an
`ETag`, and `If-Match` makes a write a compare-and-set against it. `ix_nodes_hostname` makes a
node's exact hostname one indexed query whatever its status (Deleted ones too).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN with a server default: no batch copy of the tables on SQLite
    op.add_column(
        "role_assignments",
        sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column(
        "storage_config",
        sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_nodes_hostname", "nodes", ["hostname"])


def downgrade() -> None:
    op.drop_index("ix_nodes_hostname", table_name="nodes")
    with op.batch_alter_table("storage_config") as batch:
        batch.drop_column("row_version")
    with op.batch_alter_table("role_assignments") as batch:
        batch.drop_column("row_version")
