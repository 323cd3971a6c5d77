"""The pure rules of rollouts (domain/rollouts.py): commands, batches, tolerance, next step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voipcloud.domain import rollouts as r
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.rollouts import Command, Member, NodeOutcome, RolloutState, StepKind
from voipcloud.domain.rules import RULES
from voipcloud.domain.statuses import NodeStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
P, RUN, DONE, FAIL, REF, SKIP = (
    NodeOutcome.PENDING,
    NodeOutcome.RUNNING,
    NodeOutcome.DONE,
    NodeOutcome.FAILED,
    NodeOutcome.REFUSED,
    NodeOutcome.SKIPPED,
)

ALLOWED = {
    (Command.PAUSE, RolloutState.RUNNING): RolloutState.PAUSED,
    (Command.RESUME, RolloutState.PAUSED): RolloutState.RUNNING,
    (Command.CANCEL, RolloutState.RUNNING): RolloutState.CANCELLED,
    (Command.CANCEL, RolloutState.PAUSED): RolloutState.CANCELLED,
}


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("state", list(RolloutState))
def test_every_command_in_every_state(command: Command, state: RolloutState) -> None:
    expected = ALLOWED.get((command, state))
    if expected is not None:
        assert r.command_target(command, state, rollout_id=7) is expected
        assert command in r.allowed_commands(state)
        return
    with pytest.raises(RuleViolation) as refused:
        r.command_target(command, state, rollout_id=7)
    assert refused.value.rule == f"rollout-{command.value}-state"
    assert RULES[refused.value.rule].status == 409
    assert f"Rollout 7 is {state.value}" in refused.value.message
    assert command not in r.allowed_commands(state)


def test_terminal_states_allow_no_command() -> None:
    for state in r.TERMINAL:
        assert r.allowed_commands(state) == []


def members(*outcomes_by_batch: tuple[int, NodeOutcome]) -> list[Member]:
    return [
        Member(node_id=i + 1, position=i + 1, batch=batch, outcome=outcome)
        for i, (batch, outcome) in enumerate(outcomes_by_batch)
    ]


def test_batches_cut_in_order_and_maintenance_left_out() -> None:
    planned = r.plan_members(
        [5, 3, 9, 3, 11, 2], batch_size=2, in_maintenance={9: "node n9 is in maintenance"}
    )
    assert [(m.node_id, m.position, m.batch, m.outcome) for m in planned] == [
        (5, 1, 1, P),
        (3, 2, 1, P),
        (9, 3, 0, SKIP),  # left out: in no batch
        (11, 4, 2, P),  # the duplicate 3 is dropped
        (2, 5, 2, P),
    ]
    assert planned[2].reason == "node n9 is in maintenance"
    assert r.batches(planned) == 2
    assert r.batches(r.plan_members([1, 2, 3], batch_size=1, in_maintenance={})) == 3
    assert r.batches(r.plan_members([1, 2, 3], batch_size=1000, in_maintenance={})) == 1


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("action", {"action": "delete"}),
        ("batch_size", {"batch_size": 0}),
        ("batch_size", {"batch_size": 1001}),
        ("pause_seconds", {"pause_seconds": -0.5}),
        ("pause_seconds", {"pause_seconds": 3600.5}),
        ("failure_tolerance", {"failure_tolerance": -1}),
    ],
)
def test_settings_out_of_bounds_name_the_field(field: str, kwargs: dict[str, object]) -> None:
    good: dict[str, object] = {
        "action": "fix",
        "batch_size": 2,
        "pause_seconds": 0,
        "failure_tolerance": 0,
    }
    r.check_settings(**good)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as bad:
        r.check_settings(**{**good, **kwargs})  # type: ignore[arg-type]
    assert [e.loc for e in bad.value.errors] == [("body", field)]


def test_bounds_themselves_are_accepted_and_tolerance_is_at_most_the_nodes() -> None:
    r.check_settings(action="deactivate", batch_size=1000, pause_seconds=3600, failure_tolerance=0)
    r.check_settings(action="activate", batch_size=1, pause_seconds=0, failure_tolerance=5)
    r.check_tolerance(5, 5)
    with pytest.raises(InvalidInput) as bad:
        r.check_tolerance(6, 5)
    assert bad.value.errors[0].loc == ("body", "failure_tolerance")
    assert "between 0 and 5" in bad.value.errors[0].message


def test_tolerance_is_more_than_n() -> None:
    assert not r.tolerance_exceeded(0, 0)
    assert r.tolerance_exceeded(1, 0)
    assert not r.tolerance_exceeded(2, 2)
    assert r.tolerance_exceeded(3, 2)


def test_counts_and_progress() -> None:
    counts = r.count([DONE, FAIL, REF, SKIP, P, RUN, DONE, P])
    assert (counts.total, counts.done, counts.failed, counts.skipped) == (8, 2, 2, 1)
    assert (counts.pending, counts.running) == (2, 1)
    assert counts.progress == 62.5
    assert r.count([]).progress == 100.0


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("fix", NodeStatus.ONLINE, DONE),
        ("fix", NodeStatus.DAMAGED, FAIL),  # a failed or timed-out Fix keeps it Damaged
        ("activate", NodeStatus.ONLINE, DONE),
        ("activate", NodeStatus.ACTIVATE_FAILED, FAIL),
        ("deactivate", NodeStatus.DEACTIVATED, DONE),
        ("deactivate", NodeStatus.DELETED, FAIL),
    ],
)
def test_node_outcome_once_the_operation_is_over(
    action: str, status: NodeStatus, expected: NodeOutcome
) -> None:
    assert r.node_outcome(action, status, still_pending=False) is expected
    assert r.node_outcome(action, status, still_pending=True) is RUN


def step(state: RolloutState, ms: list[Member], **kw: object) -> r.Step:
    args: dict[str, object] = {
        "failure_tolerance": 0,
        "pause_seconds": 0.0,
        "next_batch_at": None,
        "now": NOW,
    }
    args.update(kw)
    return r.next_step(state, ms, **args)  # type: ignore[arg-type]


def test_first_batch_starts_at_once() -> None:
    s = step(RolloutState.RUNNING, members((1, P), (1, P), (2, P)), pause_seconds=30)
    assert (s.kind, s.batch) == (StepKind.START, 1)


def test_waits_while_the_current_batch_runs() -> None:
    s = step(RolloutState.RUNNING, members((1, DONE), (1, RUN), (2, P)))
    assert (s.kind, s.batch) == (StepKind.WAIT, 1)


def test_next_batch_after_the_pause() -> None:
    ms = members((1, DONE), (1, DONE), (2, P))
    scheduled = step(RolloutState.RUNNING, ms, pause_seconds=30)
    assert scheduled.kind is StepKind.SCHEDULE
    assert scheduled.at == NOW + timedelta(seconds=30)
    early = step(RolloutState.RUNNING, ms, pause_seconds=30, next_batch_at=scheduled.at)
    assert early.kind is StepKind.WAIT
    due = step(
        RolloutState.RUNNING,
        ms,
        pause_seconds=30,
        next_batch_at=scheduled.at,
        now=NOW + timedelta(seconds=30),
    )
    assert (due.kind, due.batch) == (StepKind.START, 2)
    # no pause: the next batch starts as soon as the previous one completed
    assert step(RolloutState.RUNNING, ms).kind is StepKind.START


def test_stops_when_more_than_the_tolerance_failed() -> None:
    ms = members((1, DONE), (1, FAIL), (2, P), (2, P))
    assert step(RolloutState.RUNNING, ms).kind is StepKind.STOP
    assert step(RolloutState.RUNNING, ms, failure_tolerance=1).kind is StepKind.START
    refused = members((1, REF), (1, RUN), (2, P))
    assert step(RolloutState.RUNNING, refused).kind is StepKind.STOP  # a refusal is a failure
    # a failure while paused stops it too
    assert step(RolloutState.PAUSED, ms).kind is StepKind.STOP


def test_paused_starts_nothing_but_finishes() -> None:
    assert step(RolloutState.PAUSED, members((1, DONE), (2, P))).kind is StepKind.WAIT
    assert step(RolloutState.PAUSED, members((1, RUN), (2, P))).kind is StepKind.WAIT
    assert step(RolloutState.PAUSED, members((1, DONE), (2, DONE))).kind is StepKind.FINISH


def test_finishes_when_every_node_has_its_outcome() -> None:
    ms = members((1, DONE), (0, SKIP), (2, FAIL))
    assert step(RolloutState.RUNNING, ms, failure_tolerance=1).kind is StepKind.FINISH
    assert step(RolloutState.RUNNING, members((0, SKIP))).kind is StepKind.FINISH
