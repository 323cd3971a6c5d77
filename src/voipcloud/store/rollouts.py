"""Rollout rows: the rollout, its nodes (members) and the compare-and-set that claims it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from voipcloud.domain.model import Page
from voipcloud.domain.rollouts import ACTIVE, Member, NodeOutcome, RolloutState
from voipcloud.store.tables import events, nodes, rollout_nodes, rollouts


@dataclass(frozen=True, slots=True)
class RolloutRow:
    id: int
    action: str
    state: RolloutState
    batch_size: int
    pause_seconds: float
    failure_tolerance: int
    reason: str | None
    state_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    next_batch_at: datetime | None
    row_version: int


@dataclass(frozen=True, slots=True)
class MemberRow:
    member: Member
    hostname: str | None  # None: the node no longer exists
    status: str | None
    rule: str | None
    started_at: datetime | None
    finished_at: datetime | None


def _rollout(m: Any) -> RolloutRow:
    return RolloutRow(
        id=m["id"],
        action=m["action"],
        state=RolloutState(m["state"]),
        batch_size=m["batch_size"],
        pause_seconds=float(m["pause_seconds"]),
        failure_tolerance=m["failure_tolerance"],
        reason=m["reason"],
        state_reason=m["state_reason"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
        next_batch_at=m["next_batch_at"],
        row_version=m["row_version"],
    )


def insert_rollout(
    conn: Connection,
    *,
    action: str,
    batch_size: int,
    pause_seconds: float,
    failure_tolerance: int,
    reason: str | None,
    created_by: str,
    members: Sequence[Member],
    now: datetime,
) -> int:
    rollout_id = int(
        conn.execute(
            insert(rollouts)
            .values(
                action=action,
                state=RolloutState.RUNNING.value,
                batch_size=batch_size,
                pause_seconds=pause_seconds,
                failure_tolerance=failure_tolerance,
                reason=reason,
                created_by=created_by,
                created_at=now,
                updated_at=now,
                row_version=1,
            )
            .returning(rollouts.c.id)
        ).scalar_one()
    )
    if members:
        conn.execute(
            insert(rollout_nodes),
            [
                {
                    "rollout_id": rollout_id,
                    "node_id": m.node_id,
                    "position": m.position,
                    "batch": m.batch,
                    "outcome": m.outcome.value,
                    "reason": m.reason,
                    "finished_at": now if m.outcome is NodeOutcome.SKIPPED else None,
                }
                for m in members
            ],
        )
    return rollout_id


def get(conn: Connection, rollout_id: int) -> RolloutRow | None:
    row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
    return None if row is None else _rollout(row._mapping)


def page(conn: Connection, *, limit: int, offset: int) -> Page[RolloutRow]:
    total = conn.execute(select(func.count()).select_from(rollouts)).scalar_one()
    rows = conn.execute(select(rollouts).order_by(rollouts.c.id.desc()).limit(limit).offset(offset))
    return Page(items=[_rollout(r._mapping) for r in rows], total=total)


def outcome_counts(conn: Connection, rollout_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Rollout id -> {outcome: count}."""
    ids = list(rollout_ids)
    found: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return found
    rows = conn.execute(
        select(rollout_nodes.c.rollout_id, rollout_nodes.c.outcome, func.count())
        .where(rollout_nodes.c.rollout_id.in_(ids))
        .group_by(rollout_nodes.c.rollout_id, rollout_nodes.c.outcome)
    )
    for rollout_id, outcome, n in rows:
        found[rollout_id][outcome] = n
    return found


def members(conn: Connection, rollout_id: int) -> list[MemberRow]:
    rows = conn.execute(
        select(rollout_nodes, nodes.c.hostname, nodes.c.status)
        .select_from(rollout_nodes.outerjoin(nodes, nodes.c.id == rollout_nodes.c.node_id))
        .where(rollout_nodes.c.rollout_id == rollout_id)
        .order_by(rollout_nodes.c.position)
    )
    return [
        MemberRow(
            member=Member(
                node_id=r.node_id,
                position=r.position,
                batch=r.batch,
                outcome=NodeOutcome(r.outcome),
                reason=r.reason,
            ),
            hostname=r.hostname,
            status=r.status,
            rule=r.rule,
            started_at=r.started_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]


def to_advance(conn: Connection) -> list[int]:
    """Rollouts the runner looks at: running or paused, or with operations still running
    (a cancelled or stopped rollout keeps watching what it started)."""
    active = select(rollouts.c.id).where(rollouts.c.state.in_([s.value for s in ACTIVE]))
    watching = select(rollout_nodes.c.rollout_id).where(
        rollout_nodes.c.outcome == NodeOutcome.RUNNING.value
    )
    return sorted(set(conn.execute(active).scalars()) | set(conn.execute(watching).scalars()))


def claim(conn: Connection, rollout: RolloutRow, *, now: datetime, **values: Any) -> bool:
    """Compare-and-set on `row_version`: only the writer that read this version wins; every
    other controller (or request) that read it loses and reads again."""
    result = conn.execute(
        update(rollouts)
        .where(rollouts.c.id == rollout.id, rollouts.c.row_version == rollout.row_version)
        .values(row_version=rollout.row_version + 1, updated_at=now, **values)
    )
    return result.rowcount == 1


def set_fields(conn: Connection, rollout_id: int, **values: Any) -> None:
    """Write fields of a rollout this transaction has claimed already."""
    conn.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(**values))


def set_member(conn: Connection, rollout_id: int, node_id: int, **values: Any) -> None:
    if "outcome" in values and isinstance(values["outcome"], NodeOutcome):
        values["outcome"] = values["outcome"].value
    conn.execute(
        update(rollout_nodes)
        .where(rollout_nodes.c.rollout_id == rollout_id, rollout_nodes.c.node_id == node_id)
        .values(**values)
    )


def skip_pending(conn: Connection, rollout_id: int, *, reason: str, now: datetime) -> int:
    result = conn.execute(
        update(rollout_nodes)
        .where(
            rollout_nodes.c.rollout_id == rollout_id,
            rollout_nodes.c.outcome == NodeOutcome.PENDING.value,
        )
        .values(outcome=NodeOutcome.SKIPPED.value, reason=reason, finished_at=now)
    )
    return int(result.rowcount)


def failed_attempts_since(conn: Connection, node_ids: Iterable[int], since: datetime) -> set[int]:
    """Nodes with a failed deactivation attempt recorded at or after `since`."""
    ids = list(node_ids)
    if not ids:
        return set()
    rows = conn.execute(
        select(events.c.node_id).where(
            events.c.node_id.in_(ids),
            events.c.operation == "deactivation-attempt-failed",
            events.c.at >= since,
        )
    ).scalars()
    return set(rows)


def by_state(conn: Connection) -> dict[str, int]:
    return dict(
        list(conn.execute(select(rollouts.c.state, func.count()).group_by(rollouts.c.state)))
    )


def batch_position(conn: Connection, rollout_id: int) -> tuple[int, int | None]:
    """(batches in all, the first batch with nodes not finished, or None)."""
    where = rollout_nodes.c.rollout_id == rollout_id
    total = conn.execute(select(func.max(rollout_nodes.c.batch)).where(where)).scalar()
    current = conn.execute(
        select(func.min(rollout_nodes.c.batch)).where(
            where,
            rollout_nodes.c.outcome.in_([NodeOutcome.PENDING.value, NodeOutcome.RUNNING.value]),
        )
    ).scalar()
    return int(total or 0), None if current is None else int(current)


def active_counts(conn: Connection) -> dict[tuple[int, str], dict[str, int]]:
    """(rollout id, action) -> {outcome: nodes}, for the running and paused rollouts."""
    rows = conn.execute(
        select(rollouts.c.id, rollouts.c.action, rollout_nodes.c.outcome, func.count())
        .select_from(rollouts.join(rollout_nodes, rollout_nodes.c.rollout_id == rollouts.c.id))
        .where(rollouts.c.state.in_([s.value for s in ACTIVE]))
        .group_by(rollouts.c.id, rollouts.c.action, rollout_nodes.c.outcome)
    )
    found: dict[tuple[int, str], dict[str, int]] = {}
    for rollout_id, action, outcome, n in rows:
        found.setdefault((rollout_id, action), {})[outcome] = n
    return found


@dataclass(frozen=True, slots=True)
class Watched:
    """What the runner reads of a started node: is its operation over, and how it ended."""

    node_id: int
    hostname: str
    status: str
    status_reason: str | None
    pending_operation: str | None
    operation_started_at: datetime | None


def watched(conn: Connection, node_ids: Iterable[int]) -> dict[int, Watched]:
    """The started nodes in one query (not one per node: a batch may hold 1,000)."""
    ids = list(node_ids)
    if not ids:
        return {}
    rows = conn.execute(
        select(
            nodes.c.id,
            nodes.c.hostname,
            nodes.c.status,
            nodes.c.status_reason,
            nodes.c.pending_operation,
            nodes.c.operation_started_at,
        ).where(nodes.c.id.in_(ids))
    )
    return {
        r.id: Watched(
            r.id, r.hostname, r.status, r.status_reason, r.pending_operation, r.operation_started_at
        )
        for r in rows
    }
