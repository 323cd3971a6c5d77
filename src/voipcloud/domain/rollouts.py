"""Rollouts: one node action over many nodes, in batches, stopping at a failure tolerance.

Declared as data, as the node lifecycle is (pure, no I/O):

- a rollout's states and the administrator's commands between them (`COMMANDS`): pause,
  resume, cancel; the runner's own moves are `finish` and `stop`;
- how the chosen nodes are cut into batches (`plan_members`), who is left out (nodes in
  maintenance, unless included), how the outcome of one node's operation is read from the
  node (`node_outcome`), and what the runner does next (`next_step`).

A node fails when its operation is refused by the rules (`refused`), its agent reports
failure or its deadline expires (`failed`). The rollout stops when more than
`failure_tolerance` nodes failed. docs/operations.md, "Rollouts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from voipcloud.domain.errors import FieldError, InvalidInput, RuleViolation
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.statuses import NodeStatus

MAX_BATCH_SIZE = 1000
MAX_PAUSE_SECONDS = 3600
MAX_NODES = 10_000  # nodes in one rollout
MAX_REASON = 1000


class RolloutState(StrEnum):
    RUNNING = "running"  # batches are started as the previous ones complete
    PAUSED = "paused"  # no new batch starts; operations already started run to their end
    CANCELLED = "cancelled"  # by an administrator; the nodes not started are skipped
    STOPPED = "stopped"  # more nodes failed than the tolerance allows; the rest are skipped
    FINISHED = "finished"  # every node has its outcome


TERMINAL = frozenset({RolloutState.CANCELLED, RolloutState.STOPPED, RolloutState.FINISHED})
ACTIVE = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})


class NodeOutcome(StrEnum):
    PENDING = "pending"  # its batch has not started
    RUNNING = "running"  # its operation was started; waiting for the outcome
    DONE = "done"  # the operation succeeded (Online; Deactivated for deactivate)
    FAILED = "failed"  # the agent reported failure, or the deadline expired
    REFUSED = "refused"  # the rules refused the operation when its batch started
    SKIPPED = "skipped"  # left out: in maintenance, or the rollout was cancelled or stopped


FAILURES = frozenset({NodeOutcome.FAILED, NodeOutcome.REFUSED})
OPEN = frozenset({NodeOutcome.PENDING, NodeOutcome.RUNNING})

# the actions a rollout may run, and the status that means the node's operation succeeded
ACTIONS: dict[str, Operation] = {
    "fix": Operation.FIX,
    "activate": Operation.ACTIVATE,
    "deactivate": Operation.DEACTIVATE,
}
SUCCESS_STATUS: dict[str, NodeStatus] = {
    "fix": NodeStatus.ONLINE,
    "activate": NodeStatus.ONLINE,
    "deactivate": NodeStatus.DEACTIVATED,
}


class Command(StrEnum):
    """The administrator's commands (API, web, CLI)."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class CommandRule:
    sources: frozenset[RolloutState]
    target: RolloutState
    rule: str
    needs: str  # the sentence's end: when the command is available


COMMANDS: dict[Command, CommandRule] = {
    # an administrator pauses a running rollout; the batch under way runs to its end
    Command.PAUSE: CommandRule(
        frozenset({RolloutState.RUNNING}),
        RolloutState.PAUSED,
        "rollout-pause-state",
        "only a running rollout can be paused",
    ),
    # an administrator resumes a paused rollout
    Command.RESUME: CommandRule(
        frozenset({RolloutState.PAUSED}),
        RolloutState.RUNNING,
        "rollout-resume-state",
        "only a paused rollout can be resumed",
    ),
    # an administrator cancels a running or paused rollout
    Command.CANCEL: CommandRule(
        frozenset(ACTIVE),
        RolloutState.CANCELLED,
        "rollout-cancel-state",
        "only a running or paused rollout can be cancelled",
    ),
}
# the runner's moves: stop (tolerance exceeded) and finish, from running or paused
RUNNER_SOURCES = ACTIVE


def command_target(command: Command, state: RolloutState, *, rollout_id: int) -> RolloutState:
    """The state after `command`, or the refusal (409 naming the rule)."""
    rule = COMMANDS[command]
    if state not in rule.sources:
        raise RuleViolation(
            rule.rule,
            f"Rollout {rollout_id} is {state.value}: {rule.needs}.",
        )
    return rule.target


def allowed_commands(state: RolloutState) -> list[Command]:
    return [c for c, rule in COMMANDS.items() if state in rule.sources]


# --- creating one ----------------------------------------------------------------------------


def check_settings(
    *,
    action: str,
    batch_size: int,
    pause_seconds: float,
    failure_tolerance: int,
) -> None:
    """The bounds that do not depend on the selection; one 422 naming every field at fault."""
    errors: list[FieldError] = []
    if action not in ACTIONS:
        errors.append(FieldError(("body", "action"), f"must be one of {', '.join(ACTIONS)}"))
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        errors.append(FieldError(("body", "batch_size"), f"must be between 1 and {MAX_BATCH_SIZE}"))
    if not 0 <= pause_seconds <= MAX_PAUSE_SECONDS:
        errors.append(
            FieldError(("body", "pause_seconds"), f"must be between 0 and {MAX_PAUSE_SECONDS}")
        )
    if failure_tolerance < 0:
        errors.append(FieldError(("body", "failure_tolerance"), "must be 0 or more"))
    if errors:
        raise InvalidInput(errors)


def check_tolerance(failure_tolerance: int, included: int) -> None:
    """0..n, n the nodes the rollout will act on (a larger tolerance could never stop it)."""
    if failure_tolerance > included:
        raise InvalidInput.one(
            ("body", "failure_tolerance"),
            f"must be between 0 and {included}, the number of nodes the rollout acts on",
        )


@dataclass(frozen=True, slots=True)
class Member:
    """One node of a rollout: its place, its batch (0: left out) and its outcome."""

    node_id: int
    position: int
    batch: int
    outcome: NodeOutcome
    reason: str | None = None


def maintenance_skip_reason(hostname: str, reason: str | None) -> str:
    why = f" ({reason})" if reason else ""
    return f"node {hostname} is in maintenance{why}: left out (include_maintenance to act on it)"


def plan_members(
    node_ids: Sequence[int],
    *,
    batch_size: int,
    in_maintenance: Mapping[int, str],
) -> list[Member]:
    """The chosen nodes in order, cut into batches of `batch_size` (1, 2, ...); a node in
    `in_maintenance` (node id -> why it is left out) is skipped and in no batch (0)."""
    members: list[Member] = []
    acted = 0
    for position, node_id in enumerate(dict.fromkeys(node_ids), start=1):
        left_out = in_maintenance.get(node_id)
        if left_out is not None:
            members.append(Member(node_id, position, 0, NodeOutcome.SKIPPED, left_out))
            continue
        members.append(Member(node_id, position, acted // batch_size + 1, NodeOutcome.PENDING))
        acted += 1
    return members


# --- progress ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    done: int
    failed: int  # failed and refused
    skipped: int
    pending: int  # not started yet
    running: int  # started, outcome not known yet

    @property
    def progress(self) -> float:
        """Percent of the nodes with their outcome (done, failed or skipped)."""
        if self.total == 0:
            return 100.0
        return round(100.0 * (self.done + self.failed + self.skipped) / self.total, 1)


def count(outcomes: Iterable[NodeOutcome]) -> Counts:
    seen = list(outcomes)
    return Counts(
        total=len(seen),
        done=sum(o is NodeOutcome.DONE for o in seen),
        failed=sum(o in FAILURES for o in seen),
        skipped=sum(o is NodeOutcome.SKIPPED for o in seen),
        pending=sum(o is NodeOutcome.PENDING for o in seen),
        running=sum(o is NodeOutcome.RUNNING for o in seen),
    )


def tolerance_exceeded(failed: int, failure_tolerance: int) -> bool:
    """Stop when more than `failure_tolerance` nodes failed (0: at the first failure)."""
    return failed > failure_tolerance


def batches(members: Iterable[Member]) -> int:
    return max((m.batch for m in members), default=0)


# --- the runner --------------------------------------------------------------------------


def node_outcome(action: str, status: NodeStatus, *, still_pending: bool) -> NodeOutcome:
    """A started node's outcome, read from the node: RUNNING while the operation the rollout
    started is still pending, then DONE in the action's success status, else FAILED (a
    failed Fix keeps the node Damaged; a failed or timed-out activation is ActivateFailed)."""
    if still_pending:
        return NodeOutcome.RUNNING
    return NodeOutcome.DONE if status is SUCCESS_STATUS[action] else NodeOutcome.FAILED


class StepKind(StrEnum):
    WAIT = "wait"  # operations of the current batch are running, or the pause runs
    SCHEDULE = "schedule"  # the previous batch completed: the next one starts after the pause
    START = "start"  # start the batch `batch`
    FINISH = "finish"  # every node has its outcome
    STOP = "stop"  # more nodes failed than the tolerance allows


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    batch: int | None = None
    at: datetime | None = None  # SCHEDULE: when the next batch starts


def next_step(
    state: RolloutState,
    members: Sequence[Member],
    *,
    failure_tolerance: int,
    pause_seconds: float,
    next_batch_at: datetime | None,
    now: datetime,
) -> Step:
    """What the runner does now with a rollout in `state` (running or paused)."""
    counts = count(m.outcome for m in members)
    if tolerance_exceeded(counts.failed, failure_tolerance):
        return Step(StepKind.STOP)
    open_members = [m for m in members if m.outcome in OPEN]
    if not open_members:
        return Step(StepKind.FINISH)
    current = min(m.batch for m in open_members)
    in_batch = [m for m in open_members if m.batch == current]
    if any(m.outcome is NodeOutcome.RUNNING for m in in_batch):
        return Step(StepKind.WAIT, current)
    if state is not RolloutState.RUNNING:  # paused: nothing new starts
        return Step(StepKind.WAIT, current)
    started_before = any(0 < m.batch < current for m in members)
    if started_before and pause_seconds > 0:
        if next_batch_at is None:
            return Step(StepKind.SCHEDULE, current, now + timedelta(seconds=pause_seconds))
        if now < next_batch_at:
            return Step(StepKind.WAIT, current, next_batch_at)
    return Step(StepKind.START, current)


def stop_reason(failed: int, failure_tolerance: int) -> str:
    return (
        f"{failed} node(s) failed, more than the failure tolerance of {failure_tolerance}; "
        "the nodes not started were left untouched"
    )
