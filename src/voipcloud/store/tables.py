"""SQLAlchemy Core tables. The schema itself is created by the Alembic migrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from voipcloud.store.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hostname", String(253), nullable=False),
    Column("private_ip", String(45), nullable=False),
    Column("public_ip", String(45), nullable=True),
    Column("container_id", String(128), nullable=True),
    Column("status", String(32), nullable=False),
    Column("status_reason", Text, nullable=True),
    Column("is_controller", Boolean, nullable=False, default=False),
    # the session key, encrypted at rest; its keyed hash finds the node when an agent joins
    Column("session_key_encrypted", LargeBinary, nullable=True),
    Column("session_key_digest", String(64), nullable=True, unique=True),
    # the credential the node's agent got when it joined (kept after Delete to answer 410)
    Column("agent_token_digest", String(64), nullable=True, unique=True),
    # the operation pending for the node's agent (activate, deactivate, fix)
    Column("pending_operation", String(32), nullable=True),
    Column("operation_id", String(36), nullable=True),
    Column("operation_started_at", UTCDateTime(), nullable=True),
    # bumped whenever the desired configuration of the node changes
    Column("config_generation", Integer, nullable=False, default=1),
    # what the agent reported
    Column("agent_version", String(64), nullable=True),
    Column("os", String(255), nullable=True),
    Column("kernel", String(255), nullable=True),
    Column("components", JSON, nullable=True),
    # the SHA-256 (hex) of the inventory as the agent reported it, written with it: a hello's
    # digest is compared with this, not with the components (NULL: written before 0012)
    Column("inventory_digest", String(64), nullable=True),
    # (when the agent was last heard: `node_presence`, a row of its own since migration 0015)
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # optimistic lock: every write is UPDATE ... WHERE id = ? AND row_version = ?
    Column("row_version", Integer, nullable=False, default=1),
    # maintenance mode (orthogonal to the status): all NULL when not in maintenance
    Column("maintenance_reason", Text, nullable=True),
    Column("maintenance_by", String(64), nullable=True),
    Column("maintenance_since", UTCDateTime(), nullable=True),
    Index(
        "uq_nodes_live_hostname",
        "hostname",
        unique=True,
        sqlite_where=text("status != 'Deleted'"),
        postgresql_where=text("status != 'Deleted'"),
        # the NodeID read from the index alone (migration 0014; SQLite's carry the rowid)
        postgresql_include=["id"],
    ),
    Index(
        "uq_nodes_single_controller",
        "is_controller",
        unique=True,
        sqlite_where=text("is_controller"),
        postgresql_where=text("is_controller"),
    ),
    # the Node Listing's filters and sorts (migration 0008): each sort key walks an index in
    # order; the status beside a key lets SQLite check it without reading the (wide) row
    Index("ix_nodes_status_id", "status", "id"),
    # exact lookups by hostname (any status); and everything a search or a role filter looks
    # at, so that their totals read this index alone and never the wide rows (node_search.py)
    Index("ix_nodes_search_cover", "hostname", "status", "private_ip", "public_ip"),
    Index("ix_nodes_private_ip_status", "private_ip", "status"),
    Index("ix_nodes_public_ip_status", "public_ip", "status"),
    Index("ix_nodes_created_at_id", "created_at", "id"),
    Index("ix_nodes_updated_at_id", "updated_at", "id"),
    # the nodes in maintenance (few): the status counters count them without a scan
    Index(
        "ix_nodes_maintenance",
        "status",
        sqlite_where=text("maintenance_since IS NOT NULL"),
        postgresql_where=text("maintenance_since IS NOT NULL"),
    ),
    # the live nodes in NodeID order (migration 0009): the listing's default order, and a deep
    # page skips index entries, not rows (neither column changes with a heartbeat: HOT stays)
    Index(
        "ix_nodes_live_id",
        "id",
        sqlite_where=text("status != 'Deleted'"),
        postgresql_where=text("status != 'Deleted'"),
    ),
    # the expiry duty's question every second: which nodes have an operation under way
    Index(
        "ix_nodes_pending_operation",
        "id",
        sqlite_where=text("pending_operation IS NOT NULL"),
        postgresql_where=text("pending_operation IS NOT NULL"),
    ),
    # substring search on PostgreSQL (pg_trgm) and IP prefixes whatever the collation; on
    # SQLite the FTS5 table `nodes_search` (not in this metadata: see SQLITE_ONLY_TABLES)
    Index(
        "ix_nodes_hostname_trgm",
        "hostname",
        postgresql_using="gin",
        postgresql_ops={"hostname": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql"),
    Index(
        "ix_nodes_private_ip_pattern",
        "private_ip",
        postgresql_ops={"private_ip": "varchar_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
    Index(
        "ix_nodes_public_ip_pattern",
        "public_ip",
        postgresql_ops={"public_ip": "varchar_pattern_ops"},
    ).ddl_if(dialect="postgresql"),
)

# When each node's agent was last heard (migration 0015): the one value a heartbeat changes, in
# a narrow row of its own rather than in the node's wide one, as Kubernetes moved its node
# heartbeats into Lease objects. At 50,000 agents (5,000 beats a second) a flush rewrites ~40
# bytes a node instead of the node's ~270, and the node rows change only when an administrator
# or an agent's report changes them: their pages stay all-visible to PostgreSQL, so the
# listing's index-only reads stay index-only under the beats. Each node has one, made by a
# trigger when the node is inserted (NULL: never heard); a Deleted node keeps its time. On
# PostgreSQL its pages are half filled (fillfactor 50, set by the migration): a row's new
# version lands on its own page.
node_presence = Table(
    "node_presence",
    metadata,
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("last_seen", UTCDateTime(), nullable=True),
    # the listing's last-seen sort and the agent watch's stale scan (on PostgreSQL since
    # migration 0016: each flush's update then writes it, the controller vacuums the table)
    Index("ix_node_presence_last_seen", "last_seen", "node_id"),
)
# each node beside its presence row (one each): read a node's last-seen time through this
nodes_with_presence = nodes.join(node_presence, node_presence.c.node_id == nodes.c.id)

# Signed changes of the number of nodes per status, appended by triggers on `nodes` in the
# writing transaction and folded now and then (migration 0008): the listing's unfiltered and
# status-only totals are SUM(delta) over a few rows instead of a count over every node.
node_counts = Table(
    "node_counts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(32), nullable=False),
    Column("delta", Integer, nullable=False),
)

# The same, per role and status (migration 0009): the listing's role-only and status+role totals
# are SUM(delta) over a few rows, appended by triggers on `nodes` (a status change, a delete) and
# on `role_assignments` (an assignment made or deleted) in the writing transaction.
node_role_counts = Table(
    "node_role_counts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("role", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("delta", Integer, nullable=False),
)

# SQLite's full-text index of host names (FTS5, trigram tokenizer) and its shadow tables, made
# by migration 0008, and the host names' pairs of adjacent characters (0018): raw DDL, kept in
# step by triggers, never in this metadata.
SQLITE_ONLY_TABLES = frozenset(
    {
        "node_pairs",
        "nodes_search",
        "nodes_search_data",
        "nodes_search_idx",
        "nodes_search_docsize",
        "nodes_search_config",
    }
)

# PostgreSQL's pairs of adjacent characters of each host name (migration 0018), generated by
# the database from `hostname` and indexed (GIN) for 2-character searches (pg_trgm needs 3):
# an array SQLite has no type for, so not in this metadata; store/node_search.py names it.
POSTGRESQL_ONLY = {
    "column": frozenset({"hostname_pairs"}),
    "index": frozenset({"ix_nodes_hostname_pairs"}),
}

role_assignments = Table(
    "role_assignments",
    metadata,
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("parameters", JSON, nullable=False),  # explicit values only
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # bumped by every change of the parameters: the assignment's ETag (If-Match)
    Column("row_version", Integer, nullable=False, default=1, server_default="1"),
    # a copy of the node's host name, kept by the database's triggers (migration 0019; never
    # written by the application): a role's nodes in host-name order from the index below
    Column("hostname", String(253), nullable=False, server_default=""),
    Index("ix_role_assignments_role_node_id", "role", "node_id"),
    Index("ix_role_assignments_role_hostname", "role", "hostname", "node_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), nullable=True),
    Column("operation", String(64), nullable=False),
    Column("status_before", String(32), nullable=True),
    Column("status_after", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_events_node_id_id", "node_id", "id"),
    # the audit filters (GET /events?actor=&operation=&since=&until=)
    Index("ix_events_actor_id", "actor", "id"),
    Index("ix_events_operation_id", "operation", "id"),
    Index("ix_events_at", "at"),
)

extensions = Table(
    "extensions",
    metadata,
    Column("number", String(32), primary_key=True),
    Column("label", String(255), nullable=False, default=""),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Every account (the name is historic: the first release had only administrators). `role` is
# admin, operator or viewer (domain/access.py); a disabled account cannot sign in and its
# sessions and tokens are refused.
administrators = Table(
    "administrators",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("role", String(16), nullable=False, server_default="admin"),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", UTCDateTime(), nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column(
        "administrator_id",
        Integer,
        ForeignKey("administrators.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# Named API tokens for automation (the sessions of `voipcloud login` and the web are
# `api_tokens`): shown once, stored as a keyed digest, scoped read or write, expiring.
account_tokens = Table(
    "account_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "administrator_id",
        Integer,
        ForeignKey("administrators.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(64), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Index("uq_account_tokens_account_name", "administrator_id", "name", unique=True),
)

# One row (id = 1): the infrastructure properties, and the row that serializes the rules
# that depend on the number of extensions.
infrastructure = Table(
    "infrastructure",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("properties", JSON, nullable=False),
    Column("row_version", Integer, nullable=False, default=1),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# --- Storage Configuration and the resource store (SPEC.md section 7) ---------------------

# One row per resource kind: the active backend and the settings of both backends; the S3
# keys are encrypted with the secret box.
storage_config = Table(
    "storage_config",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("backend", String(8), nullable=False),
    Column("local_path", Text, nullable=False),
    Column("s3", JSON, nullable=False),  # bucket, region, endpoint_url, prefix, sse
    Column("s3_access_key_encrypted", LargeBinary, nullable=True),
    Column("s3_secret_key_encrypted", LargeBinary, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    # bumped by every save of the kind: part of the configuration's ETag (If-Match)
    Column("row_version", Integer, nullable=False, default=1, server_default="1"),
)

# Every stored resource, with the backend that holds its authoritative copy. A migration
# moves the copy, then sets `backend` to the new one and `stale_backend` to the old one until
# the old copy is deleted: that is the per-object state a resumed migration starts from.
storage_resources = Table(
    "storage_resources",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("backend", String(8), nullable=False),
    Column("stale_backend", String(8), nullable=True),
    Column("content_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_storage_resources_kind_backend", "kind", "backend"),
    Index("ix_storage_resources_kind_stale_backend", "kind", "stale_backend"),
)

# The latest migration of each kind and its progress.
storage_migrations = Table(
    "storage_migrations",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("source", String(8), nullable=False),
    Column("target", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("bytes_total", BigInteger, nullable=False),
    Column("bytes_done", BigInteger, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
)


# --- Notifications: webhooks and their deliveries (docs/operations.md, "Webhooks") --------

# A receiver of chosen events. The secret signs every delivery; it is sealed with the data
# dir's key and never shown again. Events up to `after_event_id` predate the webhook.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),  # event names, e.g. ["node.status_changed"]
    Column("secret_encrypted", LargeBinary, nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("after_event_id", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# One event (or test) for one webhook: the JSON body is fixed when the delivery is created;
# `queue` orders deliveries ("node:5": one node's events go out one after the other).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", Integer, nullable=True),  # None: a test delivery
    Column("event", String(64), nullable=False),
    Column("queue", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, failed
    Column("retry", Boolean, nullable=False, default=True),  # False: one attempt (tests)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_response", Text, nullable=True),  # the first KiB of the last answer
    Column("last_error", Text, nullable=True),
    Index("uq_webhook_deliveries_webhook_event", "webhook_id", "event_id", unique=True),
    Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    Index("ix_webhook_deliveries_state_queue", "state", "webhook_id", "queue", "id"),
)

# Every attempt of a delivery: when, the answer's status and first KiB, or the error.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        Integer,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

# One row (id = 1): how far the dispatcher has read the event log, and the ids it passed
# over that a transaction still open might yet commit (PostgreSQL), with when first missed.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_event_id", Integer, nullable=False),
    Column("gaps", JSON, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)


# --- Fleet operations: rollouts (docs/operations.md, "Rollouts") -------------------------

# One action (fix, activate, deactivate) over chosen nodes in batches of `batch_size`, with
# `pause_seconds` between batches; stops when more than `failure_tolerance` nodes failed.
# `state`: running, paused, cancelled, stopped (tolerance exceeded or refused), finished.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("action", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("pause_seconds", Float, nullable=False),
    Column("failure_tolerance", Integer, nullable=False),
    Column("reason", Text, nullable=True),  # the administrator's, recorded on each node
    Column("state_reason", Text, nullable=True),  # why it stopped or was cancelled
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("next_batch_at", UTCDateTime(), nullable=True),
    Column("row_version", Integer, nullable=False, default=1),
    Index("ix_rollouts_state", "state"),
)

# Each node of a rollout: its place, its batch and its outcome (pending, running, done,
# failed, refused, skipped), kept so that a restarted controller knows where it was.
rollout_nodes = Table(
    "rollout_nodes",
    metadata,
    Column("rollout_id", Integer, ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", Integer, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("batch", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("rule", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index("ix_rollout_nodes_rollout_batch", "rollout_id", "batch"),
)


# Wrong-password counts shared by every controller on the database (services/auth.py,
# store/login_failures.py): scope `pair` (key: source, newline, username) or `address`.
login_failures = Table(
    "login_failures",
    metadata,
    Column("scope", String(8), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failed_at", UTCDateTime(), nullable=False),
    Index("ix_login_failures_scope_last_failed_at", "scope", "last_failed_at"),
)

# --- What Alembic's comparison of this metadata with a database leaves out -----------------


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic `include_name`: SQLite's FTS5 table and its shadow tables, and PostgreSQL's
    host name pairs and their index, are not declared here."""
    if type_ == "table":
        return name not in SQLITE_ONLY_TABLES
    return name not in POSTGRESQL_ONLY.get(type_, frozenset())


def include_object_for(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic `include_object`: an index declared for another database (`ddl_if`) is left out."""

    def include_object(
        obj: Any, _name: str | None, type_: str, reflected: bool, _other: Any
    ) -> bool:
        if type_ == "index" and not reflected:
            only = getattr(obj, "_ddl_if", None)
            if only is not None and only.dialect is not None and only.dialect != dialect:
                return False
        return True

    return include_object
