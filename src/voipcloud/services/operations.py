"""Outcomes of the operations pending for node agents, and their deadlines.

Activate, Deactivate and Fix leave an operation pending (with an id) for the node's agent.
The agent reports the outcome with that id; a report for an operation that is no longer
pending is answered as already recorded, so a retried report never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context, node_actor
from voipcloud.store import events
from voipcloud.store import nodes as node_rows

_CLEARED = {"pending_operation": None, "operation_id": None, "operation_started_at": None}
MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class Outcome:
    node: Node
    recorded: bool  # False: this operation's outcome had been recorded already


class OperationService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def report(
        self, node_id: int, *, operation_id: str, success: bool, reason: str | None = None
    ) -> Outcome:
        reason = (reason or "")[-MAX_REASON:] or None
        now = self._ctx.clock()
        actor = node_actor(node_id)
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            if node.operation_id != operation_id or node.pending_operation is None:
                return Outcome(node, recorded=False)
            kind = node.pending_operation
            if kind == "activate":
                op = Operation.ACTIVATION_SUCCEEDED if success else Operation.ACTIVATION_FAILED
            elif kind == "fix":
                op = Operation.FIX_SUCCEEDED if success else Operation.FIX_FAILED
            elif kind == "deactivate" and success:
                op = Operation.DEACTIVATION_COMPLETED
            elif kind == "deactivate":
                # the agent keeps trying to stop the roles; the node stays DeactivatePending
                events.append(
                    conn,
                    at=now,
                    actor=actor,
                    node_id=node.id,
                    operation="deactivation-attempt-failed",
                    status_before=node.status.value,
                    status_after=node.status.value,
                    reason=reason,
                )
                return Outcome(node, recorded=True)
            else:  # pragma: no cover - the table has no other pending operations
                raise RuleViolation("unknown-operation", f"Unknown pending operation {kind}.")
            failure = None if success else (reason or "failed without a reason")
            node = transitions.apply(
                conn,
                node,
                op,
                actor=actor,
                now=now,
                reason=failure,
                check_busy=False,
                # a failed Fix keeps the status, but the reason must say why
                status_reason=failure,
                **_CLEARED,
            )
            return Outcome(node, recorded=True)

    def expire(self) -> list[Node]:
        """Move activations and fixes past their deadline to their failure status."""
        now = self._ctx.clock()
        deadline = now - timedelta(seconds=self._ctx.activation_timeout)
        with self._ctx.db.read() as conn:
            due = [n.id for n in node_rows.with_pending_operation(conn) if _overdue(n, deadline)]
        if not due:  # the usual case: no write transaction, no lock taken
            return []
        expired: list[Node] = []
        with self._ctx.db.write() as conn:
            for node_id in due:
                node = transitions.load(conn, node_id)
                if not _overdue(node, deadline):  # reported meanwhile
                    continue
                op = (
                    Operation.ACTIVATION_TIMED_OUT
                    if node.pending_operation == "activate"
                    else Operation.FIX_FAILED
                )
                expired.append(
                    transitions.apply(
                        conn,
                        node,
                        op,
                        actor=CONTROLLER_ACTOR,
                        now=now,
                        reason="timeout",
                        check_busy=False,
                        status_reason="timeout",
                        **_CLEARED,
                    )
                )
        return expired


def _overdue(node: Node, deadline: datetime) -> bool:
    started = node.operation_started_at
    return (
        node.pending_operation in ("activate", "fix")
        and started is not None
        and started <= deadline
    )
