"""Outcomes of the operations pending for node agents, and their deadlines.

Activate, Deactivate and Fix leave an operation pending (with an id) for the node's agent.
The agent reports the outcome with that id; a report for an operation that is no longer
pending is answered as already recorded, so a retried report never counts twice.

A failed deactivation keeps the node DeactivatePending: the agent retries it with backoff.
Each failed attempt is recorded once (event `deactivation-attempt-failed`) and shown as the
node's status reason until the next one; a repeated report of the same attempt changes nothing.

Deadlines (activations and fixes only): `activation_timeout` seconds after the operation
started; for an operation started before this controller process did, the time counts from
this process's start plus the agents' longest reconnect delay (protocol.RECONNECT_CAP), so an
agent that finished while the controller was down can still report (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from voipcloud import protocol
from voipcloud.domain.errors import ConcurrentChange, RuleViolation
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
        # operations pending from before this moment were inherited from an earlier process
        self.started_at = ctx.clock()

    def report(
        self,
        node_id: int,
        *,
        operation_id: str,
        success: bool,
        reason: str | None = None,
        attempt: int | None = None,
        retry_in: float | None = None,
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
                return self._deactivation_attempt_failed(
                    conn, node, now=now, reason=reason, attempt=attempt, retry_in=retry_in
                )
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

    @staticmethod
    def _deactivation_attempt_failed(
        conn: Connection,
        node: Node,
        *,
        now: datetime,
        reason: str | None,
        attempt: int | None,
        retry_in: float | None,
    ) -> Outcome:
        """The agent keeps trying to stop the roles; the node stays DeactivatePending and
        shows the last failed attempt. The same attempt reported again records nothing."""
        counted = f" (attempt {attempt})" if attempt is not None else ""
        text = f"stopping the roles failed{counted}: {reason or 'no reason given'}"
        if retry_in is not None:
            text += f"; the agent retries in {retry_in:g} s"
        if attempt is not None and node.status_reason == text:
            return Outcome(node, recorded=False)
        if not node_rows.compare_and_set(conn, node, now=now, status_reason=text):
            raise ConcurrentChange(node.hostname)
        # no Database.mark_changed: the desired state (what the channel sends) is unchanged
        events.append(
            conn,
            at=now,
            actor=node_actor(node.id),
            node_id=node.id,
            operation="deactivation-attempt-failed",
            status_before=node.status.value,
            status_after=node.status.value,
            reason=text,
        )
        return Outcome(transitions.load(conn, node.id), recorded=True)

    def deadline(self, node: Node) -> datetime | None:
        """When this pending activation or fix times out (None: it has no deadline)."""
        started = node.operation_started_at
        if node.pending_operation not in ("activate", "fix") or started is None:
            return None
        if started < self.started_at:  # inherited: its agent may still be reconnecting
            started = self.started_at + timedelta(seconds=protocol.RECONNECT_CAP)
        return started + timedelta(seconds=self._ctx.activation_timeout)

    def _overdue(self, node: Node, now: datetime) -> bool:
        deadline = self.deadline(node)
        return deadline is not None and deadline <= now

    def expire(self) -> list[Node]:
        """Move activations and fixes past their deadline to their failure status."""
        now = self._ctx.clock()
        with self._ctx.db.read() as conn:
            due = [n.id for n in node_rows.with_pending_operation(conn) if self._overdue(n, now)]
        if not due:  # the usual case: no write transaction, no lock taken
            return []
        expired: list[Node] = []
        with self._ctx.db.write() as conn:
            for node_id in due:
                node = transitions.load(conn, node_id)
                if not self._overdue(node, now):  # reported meanwhile
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
