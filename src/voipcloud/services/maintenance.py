"""Maintenance mode: a per-node flag with a reason, who set it and since when, orthogonal to
the status. A node in maintenance is left out of bulk actions and rollouts unless chosen
explicitly (policy.decide's `leave_out_maintenance`), and webhook deliveries about it are not
created while it is in maintenance (services/webhooks.py). docs/operations.md, "Bulk actions
and maintenance".
"""

from __future__ import annotations

from voipcloud.domain import policy, validation
from voipcloud.domain.errors import ConcurrentChange, InvalidInput
from voipcloud.domain.model import Node
from voipcloud.services import transitions
from voipcloud.services.context import Context
from voipcloud.services.nodes import node_facts
from voipcloud.store import events
from voipcloud.store import maintenance as rows
from voipcloud.store.maintenance import ENTER, LEAVE, Summary

__all__ = ["MaintenanceService", "Summary"]

MAX_BY = 64  # the column's size (migration 0007)


def clean_reason(reason: object) -> str:
    """The reason to enter maintenance: required, one line, at most MAX_MAINTENANCE_REASON."""
    limit = policy.MAX_MAINTENANCE_REASON
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput.one(("body", "reason"), "is required: say why the node is kept apart")
    if len(reason) > limit:
        raise InvalidInput.one(("body", "reason"), f"must be at most {limit} characters")
    try:
        validation.check_text(reason)
    except ValueError as exc:
        raise InvalidInput.one(("body", "reason"), str(exc)) from exc
    return reason.strip()


def _by(actor: str) -> str:
    """Who set it, as stored: the actor ("operator:alice"), or its account name alone when
    the actor is longer than the column."""
    return actor if len(actor) <= MAX_BY else actor.split(":", 1)[-1][:MAX_BY]


class MaintenanceService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def enter(self, node_id: int, *, actor: str, reason: object) -> Node:
        """Enter Maintenance (any live node not in it yet), recorded as an event."""
        text = clean_reason(reason)
        return self._change(node_id, actor=actor, reason=text)

    def leave(self, node_id: int, *, actor: str) -> Node:
        """Leave Maintenance, recorded as an event."""
        return self._change(node_id, actor=actor, reason=None)

    def _change(self, node_id: int, *, actor: str, reason: str | None) -> Node:
        entering = reason is not None
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            before = node.maintenance
            policy.maintenance_change(node_facts(conn, node), entering=entering).check()
            written = rows.set_flag(
                conn,
                node,
                reason=reason,
                by=_by(actor) if entering else None,
                since=now if entering else None,
                now=now,
            )
            if not written:
                raise ConcurrentChange(node.hostname)
            if entering:
                said = f"entered maintenance: {reason}"
            else:
                kept = f" (since {before.since:%Y-%m-%d %H:%M} UTC, " if before else " ("
                said = f"left maintenance{kept}was: {before.reason if before else ''})"
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=node.id,
                operation=ENTER if entering else LEAVE,
                status_before=node.status.value,
                status_after=node.status.value,
                reason=said,
            )
            return transitions.load(conn, node.id)

    def summary(self) -> Summary:
        with self._ctx.db.read() as conn:
            return rows.summary(conn)
