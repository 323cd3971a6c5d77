"""Each node's last-seen time in a narrow row of its own (`node_presence`)

Revision ID: 0015
Revises: 0014

A heartbeat changes one value of a node: when its agent was last heard. That value lived in the
node's row (~270 bytes on PostgreSQL, with its reported components out of line), so at 50,000
agents every presence flush rewrote 5,000 node rows a second, and on PostgreSQL each rewritten
page lost its all-visible mark: the listing's index-only reads (a deep page through
`ix_nodes_live_id`, a role's page through `uq_nodes_live_hostname`, a search's count through
`ix_nodes_search_cover`) then visited the rows as well: a deep page of the API took 19.9 ms
at p50 at 50,000 nodes beside 5,000 beats/s against 8.5 ms on a quiet fleet, and a flush of
5,000 times 183 ms (315 ms on SQLite, which rewrote each row's components too).
Kubernetes moved its node heartbeats out of the Node object into Lease objects for the same
reason. Now the time is in `node_presence` (node_id, last_seen): ~40 bytes a node, written by
the flushes; the nodes' rows change only when an administrator's operation or an agent's report
changes them. Every node has its row from its insert on (a trigger); a NULL time: never
heard. Existing times are copied; SQLite's (last_seen, id) index moves with them. Downgrade
puts the column back with its values.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# every node has its presence row from its insert on, whichever way it was inserted: the
# listing joins the two one to one, and a flush is an UPDATE of rows that exist
SQLITE_INSERT = (
    "CREATE TRIGGER node_presence_insert AFTER INSERT ON nodes BEGIN "
    "INSERT INTO node_presence(node_id, last_seen) VALUES (new.id, NULL); END"
)
POSTGRES_INSERT = [
    """CREATE FUNCTION voipcloud_node_presence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO node_presence(node_id, last_seen) VALUES (NEW.id, NULL);
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER node_presence_insert AFTER INSERT ON nodes "
    "FOR EACH ROW EXECUTE FUNCTION voipcloud_node_presence()",
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "node_presence",
        sa.Column(
            "node_id",
            sa.Integer(),
            sa.ForeignKey("nodes.id", name="fk_node_presence_node_id_nodes", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name="pk_node_presence"),
    )
    if not sqlite:
        # half of each page left free: a flush's update of a row finds room on its own page
        # (HOT: no index entry written), from the first flush after the copy on
        op.execute("ALTER TABLE node_presence SET (fillfactor = 50)")
    op.execute("INSERT INTO node_presence (node_id, last_seen) SELECT id, last_seen FROM nodes")
    if sqlite:
        op.create_index("ix_node_presence_last_seen", "node_presence", ["last_seen", "node_id"])
        op.drop_index("ix_nodes_last_seen_id", table_name="nodes")
        op.execute(SQLITE_INSERT)
    else:
        for statement in POSTGRES_INSERT:
            op.execute(statement)
    # SQLite 3.35+ drops a column in place (no index, trigger or view names it any more)
    op.execute("ALTER TABLE nodes DROP COLUMN last_seen")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("nodes", sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE nodes SET last_seen = "
        "(SELECT p.last_seen FROM node_presence p WHERE p.node_id = nodes.id)"
    )
    if sqlite:
        op.execute("DROP TRIGGER node_presence_insert")
        op.create_index("ix_nodes_last_seen_id", "nodes", ["last_seen", "id"])
        op.drop_index("ix_node_presence_last_seen", table_name="node_presence")
    else:
        op.execute("DROP TRIGGER node_presence_insert ON nodes")
        op.execute("DROP FUNCTION voipcloud_node_presence()")
    op.drop_table("node_presence")
