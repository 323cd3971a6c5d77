"""Node agents: joining with the session key, their credential, desired state, reports.

A node's agent only ever reads and reports for the node its credential belongs to: every
call here takes the node id from the authenticated credential, never from the agent's words.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from voipcloud import protocol
from voipcloud.domain.errors import (
    NodeGone,
    NotAuthenticated,
    RuleViolation,
    VoipcloudError,
)
from voipcloud.domain.statuses import NodeStatus
from voipcloud.domain.validation import sanitize_text
from voipcloud.services import transitions
from voipcloud.services.context import Context, node_actor
from voipcloud.services.group_commit import GroupCommit
from voipcloud.services.operations import OperationService, Outcome
from voipcloud.services.presence import Presence
from voipcloud.services.role_health import RoleHealthState
from voipcloud.services.roles import RoleService
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import channels as channel_rows
from voipcloud.store import enrolment, events
from voipcloud.store import nodes as node_rows

REFUSAL_EVENTS_PER_MINUTE = 30
UNKNOWN_KEY = "The session key is not valid (wrong, revoked or deleted)."
JOIN_BATCH = 256  # joins written in one transaction at most (group commit)


def _line(text: str) -> str:
    return sanitize_text(text).strip()


def _reason(text: str | None) -> str | None:
    return sanitize_text(text, multiline=True) if text is not None else None


def sanitized(inventory: protocol.Inventory) -> protocol.Inventory:
    """What an agent reports, made storable: NUL (which PostgreSQL cannot hold) and other
    control characters are dropped, line breaks become spaces. A report is never lost to them."""
    return inventory.model_copy(
        update={
            "os": _line(inventory.os),
            "kernel": _line(inventory.kernel),
            "container_id": _line(inventory.container_id),
            "version": _line(inventory.version),
            "components": [
                c.model_copy(update={"name": _line(c.name), "version": _line(c.version)})
                for c in inventory.components
            ],
        }
    )


def stored_inventory(inventory: protocol.Inventory) -> dict[str, Any]:
    """`sanitized`'s values as the node's columns (os, kernel, container_id, agent_version,
    components), without copying the models: what a join writes, many at a time."""
    return {
        "os": _line(inventory.os),
        "kernel": _line(inventory.kernel),
        "container_id": _line(inventory.container_id) or None,
        "agent_version": _line(inventory.version),
        "components": [
            {"name": _line(c.name), "version": _line(c.version)} for c in inventory.components
        ],
    }


@dataclass(frozen=True, slots=True)
class Joined:
    node_id: int
    agent_token: str


class _RefusalBudget:
    """Refused joins are logged as events, but a flood of garbage must not fill the table."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._window = 0
        self._count = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            window = int(time.monotonic() // 60)
            if window != self._window:
                self._window, self._count = window, 0
            self._count += 1
            return self._count <= self._per_minute


log = logging.getLogger("voipcloud.agents")


class AgentService:
    def __init__(
        self,
        ctx: Context,
        *,
        roles: RoleService,
        operations: OperationService,
        presence: Presence,
    ) -> None:
        self._ctx = ctx
        self._roles = roles
        self._operations = operations
        self.presence = presence
        self._refusals = _RefusalBudget(REFUSAL_EVENTS_PER_MINUTE)
        self._vacuum_refused_said = False
        # node id -> SHA-256 of the inventory its agent last sent this process, once stored:
        # a hello whose digest matches writes nothing (docs/protocol.md, "Cheap hello")
        self._inventory_digests: dict[int, bytes] = {}
        self._join_group: GroupCommit[tuple[protocol.JoinRequest, str], Joined] = GroupCommit(
            self.join_many, max_batch=JOIN_BATCH, name="join"
        )

    def join(self, request: protocol.JoinRequest, *, peer: str) -> Joined:
        """One agent's join, in its own transaction (NotAuthenticated when refused)."""
        outcome = self.join_many([(request, peer)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def join_grouped(self, request: protocol.JoinRequest, *, peer: str) -> Joined:
        """`join`, written with the other joins arriving meanwhile in one transaction (group
        commit, services/group_commit.py): each caller still gets its own answer or refusal."""
        return await self._join_group.submit((request, peer))

    def join_groups(self) -> tuple[int, int, int]:
        """(transactions, joins, the most joins in one) this process's grouped joins wrote."""
        group = self._join_group
        return group.batches, group.items, group.largest

    def join_many(
        self, requests: Sequence[tuple[protocol.JoinRequest, str]]
    ) -> list[Joined | VoipcloudError]:
        """Several agents' joins (each: the request and the peer's address) in one write
        transaction; one outcome per join, in order: its credential, or its refusal.

        Each join is checked alone, as ever: the session key must be a node's current key
        (a wrong, revoked or deleted node's key finds none) and, when the agent names the node
        it joined as before, that node's. A refusal is recorded as an event (at most
        REFUSAL_EVENTS_PER_MINUTE a minute) and refuses that join only. When the transaction
        itself fails on a unique index (a new credential colliding: practically never), the
        joins are written again one by one, so that only the one at fault fails."""
        try:
            return self._join_together(requests)
        except RuleViolation:
            if len(requests) == 1:
                raise
            outcomes: list[Joined | VoipcloudError] = []
            for one in requests:
                try:
                    outcomes.extend(self._join_together([one]))
                except RuleViolation as exc:
                    outcomes.append(exc)
            return outcomes

    def _join_together(
        self, requests: Sequence[tuple[protocol.JoinRequest, str]]
    ) -> list[Joined | VoipcloudError]:
        digests = [self._ctx.box.digest(request.session_key) for request, _peer in requests]
        now = self._ctx.clock()
        outcomes: list[Joined | VoipcloudError] = []
        joined: list[tuple[int, bytes]] = []  # (node id, inventory digest), once committed
        with self._ctx.db.write() as conn:
            owners = enrolment.key_owners(conn, digests)
            writes: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            for (request, peer), digest in zip(requests, digests, strict=True):
                found = owners.get(digest)
                if found is None:
                    self._refusal(history, None, f"unknown or revoked session key from {peer}", now)
                    outcomes.append(NotAuthenticated(UNKNOWN_KEY))
                    continue
                if request.node_id is not None and request.node_id != found.node_id:
                    self._refusal(
                        history,
                        found.node_id,
                        f"agent of node {request.node_id} presented the session key of node "
                        f"{found.node_id} from {peer}",
                        now,
                    )
                    outcomes.append(
                        NotAuthenticated(
                            f"This session key belongs to another node, not node {request.node_id}."
                        )
                    )
                    continue
                stored = stored_inventory(request.inventory)
                inventory_digest = protocol.inventory_digest(request.inventory)
                token = secrets.token_urlsafe(32)
                writes.append(
                    {
                        "node_id": found.node_id,
                        "token_digest": token_digest(token),
                        **stored,
                        "inventory_digest": inventory_digest,
                    }
                )
                history.append(
                    {
                        "at": now,
                        "actor": node_actor(found.node_id),
                        "node_id": found.node_id,
                        "operation": "agent-joined",
                        "status_before": found.status.value,
                        "status_after": found.status.value,
                        "reason": f"agent {stored['agent_version'] or '?'} joined from "
                        f"{_line(peer)}",
                    }
                )
                joined.append((found.node_id, bytes.fromhex(inventory_digest)))
                outcomes.append(Joined(node_id=found.node_id, agent_token=token))
            enrolment.record_joins(conn, writes, now=now)
            enrolment.insert_events(conn, history)
        for node_id, raw in joined:  # committed
            self._inventory_digests[node_id] = raw
            self.presence.beat(node_id, now)
        return outcomes

    def _refusal(
        self, history: list[dict[str, Any]], node_id: int | None, reason: str, now: datetime
    ) -> None:
        """A refused join's event, unless this minute's budget of them is spent."""
        if self._refusals.take():
            history.append(
                {
                    "at": now,
                    "actor": "agent",
                    "node_id": node_id,
                    "operation": "agent-join-refused",
                    "status_before": None,
                    "status_after": None,
                    "reason": reason,
                }
            )

    def authenticate(self, agent_token: str) -> int:
        with self._ctx.db.read() as conn:
            found = node_rows.find_by_agent_token(conn, token_digest(agent_token))
        if found is None:
            raise NotAuthenticated("The agent credential is not valid; join again.")
        node_id, status = found
        if status is NodeStatus.DELETED:
            raise NodeGone(f"Node {node_id} was deleted.")
        return node_id

    def channel_stamps(self) -> dict[int, channel_rows.Stamp]:
        """Every node's (row_version, credential digest): what the channels' sweep compares."""
        with self._ctx.db.read() as conn:
            return channel_rows.stamps(conn)

    def record_inventory(self, node_id: int, inventory: protocol.Inventory) -> bool:
        """Store what the agent reported, unless it is what is stored already (no write)."""
        digest = protocol.inventory_digest(inventory)
        if self.inventory_known(node_id, digest):
            return False
        with self._ctx.db.write() as conn:
            self._store_inventory(conn, node_id, sanitized(inventory), digest)
        self._inventory_digests[node_id] = bytes.fromhex(digest)
        return True

    def inventory_known(self, node_id: int, digest: str) -> bool:
        """Whether the stored inventory is the one with this digest (a read, never a write)."""
        raw = bytes.fromhex(digest)
        if self._inventory_digests.get(node_id) == raw:
            return True
        with self._ctx.db.read() as conn:
            row = channel_rows.reported_inventory(conn, node_id)
        return self.stored_inventory_matches(node_id, digest, row)

    def stored_inventory_matches(
        self, node_id: int, digest: str, row: dict[str, Any] | None
    ) -> bool:
        """Whether a stored inventory row (`channel_rows.reported_inventory`) is the one with
        this digest; remembered when it is. The row's stored digest decides; a row written
        before it was stored (NULL) is hashed from its components."""
        if row is None:
            return False
        if row.get("inventory_digest") is not None:
            if row["inventory_digest"] != digest:
                return False
            self._inventory_digests[node_id] = bytes.fromhex(digest)
            return True
        try:
            stored = protocol.Inventory(
                os=row["os"] or "",
                kernel=row["kernel"] or "",
                container_id=row["container_id"] or "",
                version=row["agent_version"] or "",
                components=[protocol.ComponentInfo(**c) for c in row["components"] or []],
            )
        except (TypeError, ValueError):  # not what an agent reports: ask for it again
            return False
        if protocol.inventory_digest(stored) != digest:
            return False
        self._inventory_digests[node_id] = bytes.fromhex(digest)
        return True

    def _store_inventory(
        self, conn: Connection, node_id: int, inventory: protocol.Inventory, digest: str
    ) -> None:
        """`digest`: of the inventory as reported (before `sanitized`), which hellos carry."""
        node_rows.set_inventory(
            conn,
            node_id,
            now=self._ctx.clock(),
            os=inventory.os,
            kernel=inventory.kernel,
            container_id=inventory.container_id or None,
            agent_version=inventory.version,
            components=[{"name": c.name, "version": c.version} for c in inventory.components],
            inventory_digest=digest,
        )

    def report(self, node_id: int, outcome: protocol.OutcomeReport) -> Outcome:
        return self._operations.report(
            node_id,
            operation_id=outcome.operation_id,
            success=outcome.success,
            reason=_reason(outcome.reason),
            attempt=outcome.attempt,
            retry_in=outcome.retry_in,
        )

    def problem(self, node_id: int, reason: str) -> None:
        reason = sanitize_text(reason, multiline=True)
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            events.append(
                conn,
                at=self._ctx.clock(),
                actor=node_actor(node_id),
                node_id=node_id,
                operation="agent-problem",
                status_before=node.status.value,
                status_after=node.status.value,
                reason=reason,
            )

    def health(self, node_id: int, report: protocol.HealthReport) -> None:
        """Keep the agent's latest role health; record each change of state as an event."""
        states = {
            sanitize_text(code).strip(): RoleHealthState(
                h.state, _reason(h.message) if h.message else None
            )
            for code, h in report.roles.items()
        }
        changes = self.presence.role_health.update(node_id, states)
        if not changes:
            return
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            for code, old, new in changes:
                events.append(
                    conn,
                    at=self._ctx.clock(),
                    actor=node_actor(node_id),
                    node_id=node_id,
                    operation="role-health",
                    status_before=node.status.value,
                    status_after=node.status.value,
                    reason=f"{code}: {old.state if old else 'unknown'} → {new.describe()}",
                )

    def flush_presence(self) -> int:
        seen = self.presence.drain()
        if seen:
            with self._ctx.db.write() as conn:
                node_rows.touch_last_seen(conn, seen)
        return len(seen)

    def vacuum_presence(self) -> bool:
        """The dead versions the flushes left in the presence rows and their last-seen index
        reclaimed (PostgreSQL; every PRESENCE_VACUUM_SECONDS by one controller of a cluster).
        A role that does not own the table cannot: said once in the controller's log."""
        done = node_rows.vacuum_presence(self._ctx.db.engine)
        if not done and self._ctx.db.dialect == "postgresql" and not self._vacuum_refused_said:
            self._vacuum_refused_said = True
            log.warning(
                "cannot vacuum node_presence: the database role voipcloud connects as does not "
                "own it; every heartbeat flush leaves dead rows behind until a vacuum by its "
                "owner (docs/operations.md, PostgreSQL)"
            )
        return done
