"""Outcomes of the operations pending for node agents, and their deadlines.

Activate, Deactivate and Fix leave an operation pending (with an id) for the node's agent.
The agent reports the outcome with that id; a report for an operation that is no longer
pending is answered as already recorded, so a retried report never counts twice.

A failed deactivation keeps the node DeactivatePending: the agent retries it with backoff.
Each failed attempt is recorded once (event `deactivation-attempt-failed`) and shown as the
node's status reason until the next one; a repeated report of the same attempt changes nothing.

Deadlines (activations and fixes only): `activation_timeout` seconds after the operation
started. The agents of an earlier controller process come back within the longest reconnect
delay (protocol.RECONNECT_CAP) of this process's start, so until then the time counts from
the end of that window for
- an operation started before this process did (its agent may have finished while the
  controller was down, and can still report), and
- one this process started in that window on a node whose agent joined before and has not
  been seen since this process started (a rollout's next batch, an administrator's Fix sent
  right after a restart: the agent may still be waiting out its backoff). Once the agent is
  seen back, the time counts from then. A node whose agent never joined has no agent to
  wait for, and one whose agent is back already has the plain deadline.
docs/protocol.md, "Deadlines".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from voipcloud import protocol
from voipcloud.domain import lifecycle
from voipcloud.domain.errors import ConcurrentChange
from voipcloud.domain.lifecycle import Operation, PendingOperation
from voipcloud.domain.model import Node
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import CONTROLLER_ACTOR, Context, node_actor
from voipcloud.services.transitions import Change
from voipcloud.store import events
from voipcloud.store import nodes as node_rows

MAX_REASON = 2000
_DAMAGED_BECAUSE = " — Damaged because: "


def fix_failed_reason(previous: str | None, failure: str) -> str:
    """A failed Fix keeps the node Damaged: say why the Fix failed, and keep why it was
    Damaged (the administrator's own reason, or the configuration change) beside it."""
    if previous and _DAMAGED_BECAUSE in previous and previous.startswith("Fix failed: "):
        previous = previous.split(_DAMAGED_BECAUSE, 1)[1]  # an earlier Fix's failure
    text = f"Fix failed: {failure}"
    return f"{text}{_DAMAGED_BECAUSE}{previous}" if previous else text


def timeout_reason(seconds: float, last_seen: datetime | None) -> str:
    """A silent agent's failure, as a sentence."""
    if last_seen is None:
        seen = "the agent has never joined"
    else:
        seen = f"the agent has not been seen since {last_seen:%H:%M:%S} UTC"
    return f"no report from the agent within {seconds:g} s — {seen}"


@dataclass(frozen=True, slots=True)
class Outcome:
    node: Node
    recorded: bool  # False: this operation's outcome had been recorded already


class OperationService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # operations pending from before this moment were inherited from an earlier process
        self.started_at = ctx.clock()
        # (node, operation) started in the reconnect window -> when its agent was seen back
        self._back: dict[tuple[int, str | None], datetime] = {}

    def took_over(self) -> None:
        """This process keeps the deadlines from now on: at the end of its start (agents can
        reach it now), and when it takes the duty from another controller of the cluster.
        Operations pending since before now count as inherited, so agents coming back (or
        moving over from a lost controller) have time to reconnect and report."""
        self.started_at = max(self.started_at, self._ctx.clock())
        self._back.clear()

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
            ending = lifecycle.ending(
                node.pending_operation,
                lifecycle.Outcome.SUCCESS if success else lifecycle.Outcome.FAILURE,
            )
            if ending.fires is None:  # a deactivation attempt failed: the agent retries
                return self._deactivation_attempt_failed(
                    conn, node, now=now, reason=reason, attempt=attempt, retry_in=retry_in
                )
            failure = None if success else (reason or "failed without a reason")
            node = transitions.apply(
                conn, node, self._ended(node, ending.fires, actor, failure), now=now
            )
            return Outcome(node, recorded=True)

    @staticmethod
    def _ended(node: Node, operation: Operation, actor: str, failure: str | None) -> Change:
        """The change that ends the node's pending operation with `operation`."""
        shown: str | None = failure
        if failure is not None and node.status is NodeStatus.DAMAGED:
            # a failed Fix keeps the status; the reason says why, beside why it was Damaged
            shown = fix_failed_reason(node.status_reason, failure)
        return Change(
            operation,
            actor,
            reason=failure,
            status_reason=shown,
            end_pending=True,
            check_busy=False,
        )

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
        if not lifecycle.has_deadline(node.pending_operation) or started is None:
            return None
        agents_back = self.started_at + timedelta(seconds=protocol.RECONNECT_CAP)
        if started < self.started_at:  # inherited: its agent may still be reconnecting
            started = agents_back
        elif started < agents_back and node.last_seen is not None:
            started = self._since_back(node, started, agents_back)
        return started + timedelta(seconds=self._ctx.activation_timeout)

    def _since_back(self, node: Node, started: datetime, agents_back: datetime) -> datetime:
        """Where the time of an operation started in the reconnect window counts from: the
        window's end while the node's agent has not been seen since this process started;
        once it has, the moment this process first saw that (the operation's start, if it
        was back already), so an agent that returns late still has the whole timeout."""
        assert node.last_seen is not None
        if node.last_seen < self.started_at:
            return agents_back
        seen = self._back.setdefault((node.id, node.operation_id), self._ctx.clock())
        return max(started, min(seen, agents_back))

    def _overdue(self, node: Node, now: datetime) -> bool:
        deadline = self.deadline(node)
        return deadline is not None and deadline <= now

    def expire(self) -> list[Node]:
        """Move activations and fixes past their deadline to their failure status."""
        now = self._ctx.clock()
        with self._ctx.db.read() as conn:
            pending = node_rows.with_pending_operation(conn)
        due = [n.id for n in pending if self._overdue(n, now)]
        if self._back:  # forget the operations that ended
            for key in self._back.keys() - {(n.id, n.operation_id) for n in pending}:
                del self._back[key]
        if not due:  # the usual case: no write transaction, no lock taken
            return []
        expired: list[Node] = []
        with self._ctx.db.write() as conn:
            for node_id in due:
                node = transitions.load(conn, node_id)
                if not self._overdue(node, now):  # reported meanwhile
                    continue
                assert node.pending_operation is not None
                ending = lifecycle.ending(node.pending_operation, lifecycle.Outcome.TIMEOUT)
                assert ending.fires is not None
                change = self._ended(node, ending.fires, CONTROLLER_ACTOR, "timeout")
                # the history keeps the word "timeout" (metrics count it); the node says why
                sentence = timeout_reason(self._ctx.activation_timeout, node.last_seen)
                if node.pending_operation is PendingOperation.FIX:
                    sentence = fix_failed_reason(node.status_reason, sentence)
                change = replace(change, status_reason=sentence)
                expired.append(transitions.apply(conn, node, change, now=now))
        return expired
