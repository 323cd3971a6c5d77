"""PostgreSQL: the columns that searches scan and lookups return stay inside the node's row

Revision ID: 0013
Revises: 0012

0009 set `toast_tuple_target = 128` on `nodes`, so that the reported components (~8 KiB of
JSON) leave the row. PostgreSQL then moves attributes out of line, largest first, until the
row fits in 128 bytes: after the components, every text of more than 24 bytes went too, the
host name (`sip-04217.fra1.voip.example`) and the 64-character digests included. A search of
1 or 2 characters (no trigram) scans the host names: each was then a lookup in the TOAST
table's index and a read of its heap, about 4 pages per node (201,515 buffers for 50,000
nodes against 1,540 pages of heap; 222 ms for `hostname LIKE '%zq%'` against 15 ms inline).
The digests and the reported OS, kernel and agent version are read at each agent's hello
(credentials, inventory) and the credentials by each sweep of the channels (every node's).

`STORAGE MAIN` keeps these short columns in the row (PostgreSQL moves a MAIN attribute out of
line only when the row would not fit in a page otherwise); the components still leave it. Existing
values already out of line are written back into their rows: one `UPDATE` of every node
(4 s for 50,000 nodes on a 2-core machine), which changes no value and fires no trigger (those
on `nodes` fire on `status`). SQLite has no TOAST: nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INLINE = (
    "hostname",
    "private_ip",
    "public_ip",
    "session_key_digest",
    "agent_token_digest",
    "inventory_digest",
    "os",
    "kernel",
    "agent_version",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INLINE:
        op.execute(f"ALTER TABLE nodes ALTER COLUMN {name} SET STORAGE MAIN")
    # `x || ''` is a new value (a plain `x` keeps its TOAST pointer): stored by the new rule
    assignments = ", ".join(f"{name} = {name} || ''" for name in INLINE)
    op.execute(f"UPDATE nodes SET {assignments}")  # noqa: S608 (the column names above)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INLINE:
        op.execute(f"ALTER TABLE nodes ALTER COLUMN {name} SET STORAGE EXTENDED")
