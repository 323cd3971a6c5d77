"""the digest of each node's reported inventory, stored with it

Revision ID: 0012
Revises: 0011

`nodes.inventory_digest`: the SHA-256 (hex) of the inventory the agent reported, written in the
same statement as the inventory. An agent's hello carries that digest; after a controller
restart each hello was checked by reading the node's components (about 8 KiB of JSON) and
hashing them again, 7 % of the cost of opening a channel in a mass reconnect. Rows written
before this revision keep NULL until their agent next reports a change or joins again, and
are checked from their components as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A plain ALTER TABLE on both databases (SQLite adds and, since 3.35, drops a column in place):
# a batch operation would copy `nodes` into a new table, which the listing's triggers on it
# (0009) do not survive.


def upgrade() -> None:
    op.add_column("nodes", sa.Column("inventory_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "inventory_digest")
