"""The rollout runner: a background worker of the controller that advances the rollouts.

Each round, for each rollout that is running or paused (or still watching operations it
started), the runner:
1. reads where it is, without a write: which started nodes have left their pending operation
   (Online: done; Damaged, ActivateFailed, a failed deactivation attempt: failed), and the
   next step (`domain.rollouts.next_step`: wait, schedule the next batch after the pause,
   start a batch, stop at the tolerance, finish);
2. when there is something to do, claims the rollout with a compare-and-set on the
   `row_version` it read, and does it in that one transaction: the node operations of a batch
   are started (each checked against its own rules, recorded as their own events with the
   actor "rollout N (by NAME)") together with the batch's record, so a crash leaves either
   the batch started and recorded, or neither.
A controller that lost the claim (another one advanced it) reads again in its next round.

Everything is in the database, so a restarted controller resumes: nodes whose operation was
started are watched again (their deadlines count as for any operation inherited from an
earlier process, services/operations.py), pending nodes continue with the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import anyio
from sqlalchemy import Connection

from voipcloud.domain import lifecycle, policy
from voipcloud.domain import rollouts as rules
from voipcloud.domain.errors import ConcurrentChange, DatabaseUnavailable, RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Node
from voipcloud.domain.rollouts import Member, NodeOutcome, RolloutState, Step, StepKind
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import Context
from voipcloud.services.nodes import node_facts
from voipcloud.services.rollouts import rollout_actor
from voipcloud.services.transitions import Change
from voipcloud.store import events
from voipcloud.store import nodes as node_rows
from voipcloud.store import rollouts as rows
from voipcloud.store.rollouts import MemberRow, RolloutRow, Watched

log = logging.getLogger("voipcloud.rollouts")
SAME_MOMENT = timedelta(milliseconds=1)  # a stored time read back (PostgreSQL: microseconds)
START_ATTEMPTS = 3  # a node changed by a request while its batch starts: read it again


@dataclass(frozen=True, slots=True)
class Settled:
    node_id: int
    outcome: NodeOutcome
    reason: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    settled: list[Settled]
    members: list[Member]  # with the settled outcomes
    step: Step

    @property
    def idle(self) -> bool:
        return not self.settled and self.step.kind is StepKind.WAIT


def _same_moment(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= SAME_MOMENT


class RolloutRunner:
    def __init__(self, ctx: Context, *, interval: float = 0.5) -> None:
        self._ctx = ctx
        self.interval = interval
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- one round (in a worker thread) --------------------------------------------------

    def advance_all(self) -> int:
        """One round over every rollout to advance; returns how many moved."""
        with self._ctx.db.read() as conn:
            found = rows.to_advance(conn)
        moved = 0
        for rollout_id in found:
            try:
                moved += self.advance(rollout_id)
            except DatabaseUnavailable:
                raise
            except Exception:  # one rollout's bug must not stop the others
                log.exception("advancing rollout %s failed", rollout_id)
        return moved

    def advance(self, rollout_id: int) -> bool:
        """Advance one rollout if there is something to do; False when idle or claimed by
        another controller meanwhile."""
        now = self._ctx.clock()
        with self._ctx.db.read() as conn:
            rollout = rows.get(conn, rollout_id)
            if rollout is None:
                return False
            plan = self._plan(conn, rollout, now)
        if plan.idle:
            return False
        with self._ctx.db.write() as conn:
            if not rows.claim(conn, rollout, now=now):
                return False  # another controller (or a command) moved it: next round
            current = rows.get(conn, rollout_id)
            assert current is not None
            self._carry_out(conn, current, now)
        return True

    def _plan(self, conn: Connection, rollout: RolloutRow, now: datetime) -> Plan:
        members = rows.members(conn, rollout.id)
        running = [m for m in members if m.member.outcome is NodeOutcome.RUNNING]
        found = rows.watched(conn, [m.member.node_id for m in running])
        attempts: set[int] = set()
        if rollout.action == "deactivate" and running:
            since = min((m.started_at for m in running if m.started_at), default=now)
            attempts = rows.failed_attempts_since(conn, found, since)
        settled = [
            s
            for m in running
            if (s := _settle(rollout, m, found.get(m.member.node_id), attempts)) is not None
        ]
        outcome = {s.node_id: s.outcome for s in settled}
        updated = [
            replace(m.member, outcome=outcome.get(m.member.node_id, m.member.outcome))
            for m in members
        ]
        if rollout.state in rules.ACTIVE:
            step = rules.next_step(
                rollout.state,
                updated,
                failure_tolerance=rollout.failure_tolerance,
                pause_seconds=rollout.pause_seconds,
                next_batch_at=rollout.next_batch_at,
                now=now,
            )
        else:  # cancelled or stopped: only watching what it started
            step = Step(StepKind.WAIT)
        return Plan(settled, updated, step)

    def _carry_out(self, conn: Connection, rollout: RolloutRow, now: datetime) -> None:
        """Under the claim: record the settled nodes, then take steps until one waits."""
        plan = self._plan(conn, rollout, now)
        for s in plan.settled:
            rows.set_member(
                conn, rollout.id, s.node_id, outcome=s.outcome, reason=s.reason, finished_at=now
            )
        members = plan.members
        step = plan.step
        # a batch may complete at once (every node refused or skipped, a StandBy node
        # deactivated without its agent): go on, at most once per batch
        for _ in range(rules.batches(members) + 2):
            if step.kind is StepKind.WAIT:
                return
            if step.kind is StepKind.SCHEDULE:
                rows.set_fields(conn, rollout.id, next_batch_at=step.at)
                return
            if step.kind is StepKind.STOP:
                self._stop(conn, rollout, members, now)
                return
            if step.kind is StepKind.FINISH:
                self._finish(conn, rollout, members, now)
                return
            assert step.batch is not None
            members = self._start_batch(conn, rollout, members, step.batch, now)
            rollout = replace(rollout, next_batch_at=None)
            step = rules.next_step(
                rollout.state,
                members,
                failure_tolerance=rollout.failure_tolerance,
                pause_seconds=rollout.pause_seconds,
                next_batch_at=None,
                now=now,
            )

    def _start_batch(
        self,
        conn: Connection,
        rollout: RolloutRow,
        members: list[Member],
        batch: int,
        now: datetime,
    ) -> list[Member]:
        operation = rules.ACTIONS[rollout.action]
        actor = rollout_actor(rollout.id, rollout.created_by)
        started: dict[int, Member] = {}
        names: list[str] = []
        for m in members:
            if m.batch != batch or m.outcome is not NodeOutcome.PENDING:
                continue
            outcome, rule, reason, hostname = self._start_node(
                conn, rollout, m.node_id, operation, actor, now
            )
            names.append(hostname)
            rows.set_member(
                conn,
                rollout.id,
                m.node_id,
                outcome=outcome,
                rule=rule,
                reason=reason,
                started_at=now,
                finished_at=None if outcome is NodeOutcome.RUNNING else now,
            )
            started[m.node_id] = replace(m, outcome=outcome, reason=reason)
        rows.set_fields(conn, rollout.id, next_batch_at=None)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        events.append(
            conn,
            at=now,
            actor=actor,
            node_id=None,
            operation="rollout-batch-started",
            reason=f"rollout {rollout.id}: batch {batch} of {rules.batches(members)} "
            f"started ({rollout.action}): {shown}",
        )
        return [started.get(m.node_id, m) for m in members]

    def _start_node(
        self,
        conn: Connection,
        rollout: RolloutRow,
        node_id: int,
        operation: Operation,
        actor: str,
        now: datetime,
    ) -> tuple[NodeOutcome, str | None, str | None, str]:
        """(outcome, rule, reason, hostname) of starting one node's operation.

        A node in maintenance when the rollout was created was left out then, or chosen
        explicitly (include_maintenance); one that entered maintenance since is left out now.
        """
        why = f"rollout {rollout.id}" + (f": {rollout.reason}" if rollout.reason else "")
        for _ in range(START_ATTEMPTS):
            node = node_rows.get(conn, node_id)
            if node is None:
                return NodeOutcome.REFUSED, None, "the node no longer exists", f"#{node_id}"
            if node.maintenance is not None and node.maintenance.since > rollout.created_at:
                reason = rules.maintenance_skip_reason(node.hostname, node.maintenance.reason)
                return NodeOutcome.SKIPPED, None, reason, node.hostname
            decision = policy.decide(operation, node_facts(conn, node))
            if not decision.allowed:
                return NodeOutcome.REFUSED, decision.rule, decision.reason, node.hostname
            try:
                after = transitions.apply(conn, node, _change(node, operation, actor, why), now=now)
            except ConcurrentChange:
                continue  # a request changed the node meanwhile: decide again
            except RuleViolation as refusal:
                return NodeOutcome.REFUSED, refusal.rule, refusal.message, node.hostname
            if after.pending_operation is not None:
                return NodeOutcome.RUNNING, None, None, node.hostname
            outcome = rules.node_outcome(rollout.action, after.status, still_pending=False)
            return outcome, None, None, node.hostname
        return (
            NodeOutcome.REFUSED,
            "concurrent-change",
            "the node kept changing while its batch started",
            f"#{node_id}",
        )

    def _stop(
        self, conn: Connection, rollout: RolloutRow, members: list[Member], now: datetime
    ) -> None:
        counts = rules.count(m.outcome for m in members)
        text = rules.stop_reason(counts.failed, rollout.failure_tolerance)
        skipped = rows.skip_pending(
            conn, rollout.id, reason="not started: the rollout stopped", now=now
        )
        self._end(
            conn,
            rollout,
            RolloutState.STOPPED,
            now,
            state_reason=text,
            said=f"stopped: {text}; {counts.done} done, {counts.failed} failed, "
            f"{skipped} not started",
        )

    def _finish(
        self, conn: Connection, rollout: RolloutRow, members: list[Member], now: datetime
    ) -> None:
        counts = rules.count(m.outcome for m in members)
        self._end(
            conn,
            rollout,
            RolloutState.FINISHED,
            now,
            said=f"finished: {counts.done} done, {counts.failed} failed, {counts.skipped} skipped",
        )

    def _end(
        self,
        conn: Connection,
        rollout: RolloutRow,
        state: RolloutState,
        now: datetime,
        *,
        said: str,
        state_reason: str | None = None,
    ) -> None:
        """The rollout's last state, and its event (`rollout-stopped`, `rollout-finished`)."""
        fields: dict[str, object] = {"state": state.value, "finished_at": now}
        if state_reason is not None:
            fields["state_reason"] = state_reason
        rows.set_fields(conn, rollout.id, next_batch_at=None, **fields)
        events.append(
            conn,
            at=now,
            actor=rollout_actor(rollout.id, rollout.created_by),
            node_id=None,
            operation=f"rollout-{state.value}",
            reason=f"rollout {rollout.id} ({rollout.action}) {said}",
        )

    # --- the worker (on the event loop) --------------------------------------------------

    def wake(self, *_: object) -> None:
        """Thread-safe: run a round now (a rollout was created or resumed)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    async def run(
        self, *, started: asyncio.Event, report: Callable[[str, DatabaseUnavailable], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await started.wait()
        while True:
            try:
                await anyio.to_thread.run_sync(self.advance_all)
            except DatabaseUnavailable as exc:
                report("rollouts", exc)
            except Exception:  # a bug: keep the worker alive; the next round retries
                log.exception("rollout round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)


def _change(node: Node, operation: Operation, actor: str, why: str) -> Change:
    """The same change an administrator's action makes (services/nodes.py `action`)."""
    starts = lifecycle.STARTS.get(operation)
    if operation is Operation.DEACTIVATE and node.status is not NodeStatus.ONLINE:
        starts = None  # StandBy -> Deactivated at once: no agent involved
    return Change(operation, actor, reason=why, start=starts)


def _settle(
    rollout: RolloutRow, m: MemberRow, node: Watched | None, failed_attempts: set[int]
) -> Settled | None:
    """A started node's outcome, once its operation is over (None: still running)."""
    if node is None:
        return Settled(m.member.node_id, NodeOutcome.FAILED, "the node no longer exists")
    still = node.pending_operation is not None and _same_moment(
        node.operation_started_at, m.started_at
    )
    if still and node.node_id in failed_attempts:
        # a deactivation attempt failed: the agent keeps retrying (the node stays
        # DeactivatePending); the rollout counts the failure now rather than wait for an
        # attempt that may never succeed
        return Settled(node.node_id, NodeOutcome.FAILED, node.status_reason)
    outcome = rules.node_outcome(rollout.action, NodeStatus(node.status), still_pending=still)
    if outcome is NodeOutcome.RUNNING:
        return None
    reason = node.status_reason if outcome is NodeOutcome.FAILED else None
    if outcome is NodeOutcome.FAILED and not reason:
        reason = f"node {node.hostname} is {node.status}"
    return Settled(node.node_id, outcome, reason)
