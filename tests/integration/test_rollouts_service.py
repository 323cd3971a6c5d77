"""Rollouts through the services and the runner, on SQLite and PostgreSQL, with a test clock.

The agents' reports go through the same service the agent channel calls
(`OperationService.report`), so every outcome the runner watches is a real node transition;
the end-to-end tests with real agent processes are in tests/e2e/test_rollouts.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.rollouts import Command, NodeOutcome, RolloutState
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import webhooks
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.rollout_runner import RolloutRunner
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store import events as event_rows
from voipcloud.store.database import Database
from voipcloud.store.tables import nodes as nodes_table

ADMIN = "operator:bob"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    c: Controller
    clock: Clock
    db: Database

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.c.rollout_runner.advance_all()

    def damaged(self, hostname: str) -> int:
        c = self.c
        node = c.nodes.add(actor=ADMIN, hostname=hostname, private_ip="10.0.0.5")
        c.roles.assign(node.id, actor=ADMIN, role="wk", parameters={})
        c.nodes.action(node.id, "activate", actor=ADMIN)
        self.report(node.id, success=True)
        c.nodes.action(node.id, "mark-damaged", actor=ADMIN, reason="disk errors")
        return node.id

    def report(self, node_id: int, *, success: bool, reason: str | None = None) -> None:
        node = self.c.nodes.get(node_id).node
        assert node.operation_id is not None, node
        self.c.operations.report(
            node_id, operation_id=node.operation_id, success=success, reason=reason
        )

    def status(self, node_id: int) -> NodeStatus:
        return self.c.nodes.get(node_id).node.status

    def outcomes(self, rollout_id: int) -> dict[int, NodeOutcome]:
        view = self.c.rollouts.get(rollout_id)
        assert view.members is not None
        return {m.member.node_id: m.member.outcome for m in view.members}


def build(database_url: str, data_dir: Path, clock: Clock) -> Controller:
    db = Database(database_url)
    return Controller.build(Context(db=db, box=SecretBox.in_data_dir(data_dir), clock=clock))


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    clock = Clock()
    c = build(database_url, tmp_path, clock)
    ensure_controller_node(c.ctx, c.nodes)
    try:
        yield Env(c=c, clock=clock, db=c.ctx.db)
    finally:
        c.ctx.db.dispose()


def start(env: Env, node_ids: list[int], **kw: object) -> int:
    args: dict[str, object] = {
        "actor": ADMIN,
        "action": "fix",
        "batch_size": 2,
        "pause_seconds": 0,
        "failure_tolerance": 0,
    }
    args.update(kw)
    return env.c.rollouts.create(node_ids=node_ids, **args).rollout.id  # type: ignore[arg-type]


def test_one_failure_over_tolerance_stops_and_leaves_the_rest_untouched(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(5)]
    rollout_id = start(env, ids)
    env.tick()  # batch 1 starts
    assert env.outcomes(rollout_id)[ids[0]] is NodeOutcome.RUNNING
    env.report(ids[0], success=True)
    env.report(ids[1], success=False, reason="kamailio did not start")
    env.tick()
    view = env.c.rollouts.get(rollout_id)
    assert view.rollout.state is RolloutState.STOPPED
    assert "more than the failure tolerance of 0" in (view.rollout.state_reason or "")
    assert env.outcomes(rollout_id) == {
        ids[0]: NodeOutcome.DONE,
        ids[1]: NodeOutcome.FAILED,
        ids[2]: NodeOutcome.SKIPPED,
        ids[3]: NodeOutcome.SKIPPED,
        ids[4]: NodeOutcome.SKIPPED,
    }
    failed = next(m for m in view.members or [] if m.member.node_id == ids[1])
    assert "kamailio did not start" in (failed.member.reason or "")
    assert [env.status(i) for i in ids] == [NodeStatus.ONLINE] + [NodeStatus.DAMAGED] * 4
    for untouched in ids[2:]:  # never asked to fix
        assert env.c.nodes.get(untouched).node.pending_operation is None
        assert env.c.nodes.events(untouched).items[0].operation == "mark-damaged"
    # the history: started, batch 1, stopped; the node operations name the rollout
    with env.db.read() as conn:
        log = event_rows.page(conn, node_id=None, limit=50, offset=0).items
    rollout_events = [e.operation for e in reversed(log) if e.node_id is None]
    assert rollout_events[-3:] == ["rollout-started", "rollout-batch-started", "rollout-stopped"]
    fix = next(e for e in log if e.node_id == ids[0] and e.operation == "fix")
    assert fix.actor == f"rollout {rollout_id} (by bob)"
    # the webhook event rollout.stopped, naming the rollout
    stopped = next(e for e in log if e.operation == "rollout-stopped")
    name = webhooks.event_name(stopped.operation, None, None, None)
    assert name == webhooks.ROLLOUT_STOPPED
    body = webhooks.payload(stopped, name, None)
    assert body["node"] is None
    assert body["data"]["rollout_id"] == rollout_id
    assert "1 failed" in body["data"]["reason"]


def test_within_tolerance_runs_every_batch_with_the_pause(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(5)]
    rollout_id = start(env, ids, failure_tolerance=1, pause_seconds=30)
    env.tick()
    env.report(ids[0], success=False, reason="bad")
    env.report(ids[1], success=True)
    env.tick()  # batch 1 complete: batch 2 waits for the pause
    assert env.outcomes(rollout_id)[ids[2]] is NodeOutcome.PENDING
    env.tick(10)
    assert env.outcomes(rollout_id)[ids[2]] is NodeOutcome.PENDING
    env.tick(25)
    assert env.outcomes(rollout_id)[ids[2]] is NodeOutcome.RUNNING
    env.report(ids[2], success=True)
    env.report(ids[3], success=True)
    env.tick()
    env.tick(31)
    env.report(ids[4], success=True)
    env.tick()
    view = env.c.rollouts.get(rollout_id)
    assert view.rollout.state is RolloutState.FINISHED
    assert (view.counts.done, view.counts.failed, view.counts.progress) == (4, 1, 100.0)


def test_timeout_counts_as_failure(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(3)]
    rollout_id = start(env, ids, batch_size=1)
    env.tick()
    env.clock.advance(env.c.ctx.activation_timeout + 1)
    env.c.operations.expire()
    env.tick()
    view = env.c.rollouts.get(rollout_id)
    assert view.rollout.state is RolloutState.STOPPED
    assert env.outcomes(rollout_id)[ids[0]] is NodeOutcome.FAILED
    assert "no report from the agent" in (view.members or [])[0].member.reason  # type: ignore[operator]


def test_refused_by_the_rules_is_a_failure_with_the_rule(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(2)]
    env.c.nodes.action(ids[0], "fix", actor=ADMIN)
    env.report(ids[0], success=True)  # Online now: Fix is refused
    rollout_id = start(env, ids, batch_size=1, failure_tolerance=1)
    env.tick()
    view = env.c.rollouts.get(rollout_id)
    first = (view.members or [])[0]
    assert first.member.outcome is NodeOutcome.REFUSED
    assert first.rule == "fix-status"
    assert env.outcomes(rollout_id)[ids[1]] is NodeOutcome.RUNNING  # within tolerance 1


def test_pause_lets_the_batch_finish_then_resume_continues(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(4)]
    rollout_id = start(env, ids)
    env.tick()
    env.c.rollouts.command(rollout_id, Command.PAUSE, actor=ADMIN)
    env.report(ids[0], success=True)
    env.report(ids[1], success=True)
    env.tick()
    env.tick()
    assert env.outcomes(rollout_id) == {
        ids[0]: NodeOutcome.DONE,  # the batch under way ran to its end
        ids[1]: NodeOutcome.DONE,
        ids[2]: NodeOutcome.PENDING,  # nothing new started
        ids[3]: NodeOutcome.PENDING,
    }
    assert env.c.rollouts.get(rollout_id).rollout.state is RolloutState.PAUSED
    with pytest.raises(RuleViolation) as refused:
        env.c.rollouts.command(rollout_id, Command.PAUSE, actor=ADMIN)
    assert refused.value.rule == "rollout-pause-state"
    env.c.rollouts.command(rollout_id, Command.RESUME, actor=ADMIN)
    env.tick()
    assert env.outcomes(rollout_id)[ids[2]] is NodeOutcome.RUNNING


def test_cancel_skips_the_rest_and_keeps_watching_what_started(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(4)]
    rollout_id = start(env, ids)
    env.tick()
    view = env.c.rollouts.command(rollout_id, Command.CANCEL, actor=ADMIN)
    assert view.rollout.state is RolloutState.CANCELLED
    assert view.rollout.state_reason == "cancelled by bob"
    env.report(ids[0], success=True)
    env.tick()
    assert env.outcomes(rollout_id) == {
        ids[0]: NodeOutcome.DONE,
        ids[1]: NodeOutcome.RUNNING,
        ids[2]: NodeOutcome.SKIPPED,
        ids[3]: NodeOutcome.SKIPPED,
    }
    assert env.status(ids[2]) is NodeStatus.DAMAGED
    with pytest.raises(RuleViolation) as refused:
        env.c.rollouts.command(rollout_id, Command.RESUME, actor=ADMIN)
    assert refused.value.rule == "rollout-resume-state"


def _maintenance(env: Env, node_id: int) -> None:
    from sqlalchemy import update

    with env.db.write() as conn:
        conn.execute(
            update(nodes_table)
            .where(nodes_table.c.id == node_id)
            .values(
                maintenance_reason="disk swap",
                maintenance_by="alice",
                maintenance_since=env.clock(),
            )
        )


def test_maintenance_left_out_unless_included(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(3)]
    _maintenance(env, ids[1])
    left = start(env, ids, batch_size=5)
    view = env.c.rollouts.get(left)
    skipped = next(m for m in view.members or [] if m.member.node_id == ids[1])
    assert (skipped.member.outcome, skipped.member.batch) == (NodeOutcome.SKIPPED, 0)
    assert "in maintenance (disk swap)" in (skipped.member.reason or "")
    env.tick()
    assert env.c.nodes.get(ids[1]).node.pending_operation is None
    env.c.rollouts.command(left, Command.CANCEL, actor=ADMIN)
    for node_id in (ids[0], ids[2]):
        env.report(node_id, success=True)
    env.tick()
    # the sibling case: chosen explicitly
    included = start(env, [ids[1]], include_maintenance=True, batch_size=1)
    env.tick()
    assert env.outcomes(included)[ids[1]] is NodeOutcome.RUNNING
    # every chosen node in maintenance and not included: nothing to do
    with pytest.raises(InvalidInput) as bad:
        start(env, [ids[1]])
    assert bad.value.errors[0].loc == ("body", "include_maintenance")


def test_a_node_entering_maintenance_after_the_start_is_left_out(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(2)]
    rollout_id = start(env, ids, batch_size=1)
    env.tick()
    env.clock.advance(1)
    _maintenance(env, ids[1])
    env.report(ids[0], success=True)
    env.tick()
    env.tick()
    assert env.outcomes(rollout_id)[ids[1]] is NodeOutcome.SKIPPED
    assert env.c.rollouts.get(rollout_id).rollout.state is RolloutState.FINISHED


def test_filter_resolves_to_ids_at_creation(env: Env) -> None:
    ids = [env.damaged(f"edge{i}") for i in range(3)]
    env.c.nodes.add(actor=ADMIN, hostname="edge-offline", private_ip="10.0.0.9")
    view = env.c.rollouts.create(
        actor=ADMIN,
        action="fix",
        filter={"status": "Damaged", "q": "edge"},
        batch_size=10,
        pause_seconds=0,
        failure_tolerance=0,
    )
    assert sorted(m.member.node_id for m in view.members or []) == ids
    env.damaged("edge-later")  # matches the filter now, but the selection is fixed
    env.tick()
    assert len(env.outcomes(view.rollout.id)) == 3
    with pytest.raises(InvalidInput) as bad:
        env.c.rollouts.create(
            actor=ADMIN,
            action="fix",
            filter={"status": "Broken"},
            batch_size=1,
            pause_seconds=0,
            failure_tolerance=0,
        )
    assert bad.value.errors[0].loc == ("body", "filter", "status")


def test_only_one_runner_claims_a_round(env: Env, database_url: str, tmp_path: Path) -> None:
    """Two controllers on one database: the one that read an older version loses its claim,
    and no node is started twice."""
    ids = [env.damaged(f"n{i}") for i in range(2)]
    rollout_id = start(env, ids)
    other = RolloutRunner(env.c.ctx)
    from voipcloud.store import rollouts as rows

    with env.db.read() as conn:
        stale = rows.get(conn, rollout_id)
    assert stale is not None
    assert env.c.rollout_runner.advance(rollout_id)  # the first wins, starts batch 1
    with env.db.write() as conn:
        assert not rows.claim(conn, stale, now=env.clock())  # the second read too early
    other.advance(rollout_id)  # reads again: the batch runs, nothing to do
    with env.db.read() as conn:
        log = event_rows.page(conn, node_id=ids[0], limit=50, offset=0).items
    assert [e.operation for e in log].count("fix") == 1


def test_a_restarted_controller_resumes(env: Env, database_url: str, tmp_path: Path) -> None:
    ids = [env.damaged(f"n{i}") for i in range(4)]
    rollout_id = start(env, ids)
    env.tick()
    env.c.ctx.db.dispose()
    # a new controller process on the same database: operations inherited, runner fresh
    again = build(database_url, tmp_path, env.clock)
    env2 = Env(c=again, clock=env.clock, db=again.ctx.db)
    env2.report(ids[0], success=True)
    env2.report(ids[1], success=True)
    env2.tick()
    assert env2.outcomes(rollout_id)[ids[2]] is NodeOutcome.RUNNING
    env2.report(ids[2], success=True)
    env2.report(ids[3], success=True)
    env2.tick()
    assert again.rollouts.get(rollout_id).rollout.state is RolloutState.FINISHED
    again.ctx.db.dispose()


def test_a_failed_deactivation_attempt_counts_as_failed(env: Env) -> None:
    ids = [env.damaged(f"n{i}") for i in range(2)]
    for node_id in ids:  # Online again
        env.c.nodes.action(node_id, "fix", actor=ADMIN)
        env.report(node_id, success=True)
    rollout_id = start(env, ids, action="deactivate", batch_size=1)
    env.tick()
    env.clock.advance(1)
    env.c.operations.report(
        ids[0],
        operation_id=env.c.nodes.get(ids[0]).node.operation_id or "",
        success=False,
        reason="systemctl stop failed",
        attempt=1,
        retry_in=5,
    )
    env.tick()
    view = env.c.rollouts.get(rollout_id)
    assert view.rollout.state is RolloutState.STOPPED
    first = (view.members or [])[0]
    assert first.member.outcome is NodeOutcome.FAILED
    assert "systemctl stop failed" in (first.member.reason or "")
    assert env.status(ids[0]) is NodeStatus.DEACTIVATE_PENDING  # its agent keeps trying
    assert env.status(ids[1]) is NodeStatus.ONLINE  # never started
