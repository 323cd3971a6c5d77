"""Operation outcomes under faults, on the services and a real SQLite database: a failed
deactivation attempt is recorded once and shown; an operation inherited by a restarted
controller gets time for its agent to come back before it times out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.test_lifecycle_table import ADMIN, Env, add_node, bring_to, open_env
from voipcloud import protocol
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.controller import Controller
from voipcloud.store import nodes as node_rows


@pytest.fixture
def fresh(tmp_path: Path, sqlite_template: Path) -> Iterator[Env]:
    with open_env(sqlite_template, tmp_path) as opened:
        yield opened


def attempts_recorded(env: Env, node_id: int) -> list[str | None]:
    items = env.c.nodes.events(node_id, limit=100).items
    return [e.reason for e in reversed(items) if e.operation == "deactivation-attempt-failed"]


def test_a_failed_deactivation_attempt_is_recorded_once_and_shown(fresh: Env) -> None:
    env = fresh
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    bring_to(env, node_id, NodeStatus.DEACTIVATE_PENDING)
    op_id = env.c.nodes.get(node_id).node.operation_id
    assert op_id is not None

    def fail(attempt: int, retry_in: float, reason: str = "sip: stop command exited with 1"):  # type: ignore[no-untyped-def]
        return env.c.operations.report(
            node_id,
            operation_id=op_id,
            success=False,
            reason=reason,
            attempt=attempt,
            retry_in=retry_in,
        )

    first = fail(1, 2)
    assert first.recorded
    shown = (
        "stopping the roles failed (attempt 1): sip: stop command exited with 1; "
        "the agent retries in 2 s"
    )
    assert first.node.status is NodeStatus.DEACTIVATE_PENDING
    assert first.node.pending_operation == "deactivate"
    assert first.node.status_reason == shown
    # the same attempt reported again (re-sent on a new channel, a retried report): nothing
    again = fail(1, 2)
    assert not again.recorded
    assert attempts_recorded(env, node_id) == [shown]
    second = fail(2, 4)
    assert second.recorded
    assert second.node.status_reason.startswith("stopping the roles failed (attempt 2)")
    assert len(attempts_recorded(env, node_id)) == 2
    done = env.c.operations.report(node_id, operation_id=op_id, success=True)
    assert done.recorded
    assert done.node.status is NodeStatus.DEACTIVATED
    assert done.node.status_reason is None
    # a late copy of a failed attempt after completion records nothing
    assert not fail(2, 4).recorded
    assert len(attempts_recorded(env, node_id)) == 2


def test_an_inherited_activation_waits_for_its_agent_to_come_back(fresh: Env) -> None:
    env = fresh
    timeout = env.c.ctx.activation_timeout
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    pending = env.c.nodes.action(node_id, "activate", actor=ADMIN)
    assert pending.operation_id is not None
    # the controller is down for twice the activation timeout, then starts again
    env.clock.advance(2 * timeout)
    restarted = Controller.build(env.c.ctx)
    assert restarted.operations.expire() == []  # no report could reach a stopped controller
    deadline = restarted.operations.deadline(restarted.nodes.get(node_id).node)
    assert deadline == env.clock.now + timedelta(seconds=protocol.RECONNECT_CAP + timeout)
    env.clock.advance(protocol.RECONNECT_CAP + timeout - 1)
    assert restarted.operations.expire() == []
    # the agent finished during the outage and reports it now: recorded
    late = restarted.operations.report(node_id, operation_id=pending.operation_id, success=True)
    assert late.recorded
    assert late.node.status is NodeStatus.ONLINE


def test_an_inherited_activation_whose_agent_never_comes_back_still_times_out(
    fresh: Env,
) -> None:
    env = fresh
    node_id = add_node(env)
    env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
    env.c.nodes.action(node_id, "activate", actor=ADMIN)
    env.clock.advance(5)
    restarted = Controller.build(env.c.ctx)
    env.clock.advance(protocol.RECONNECT_CAP + env.c.ctx.activation_timeout)
    (expired,) = restarted.operations.expire()
    assert expired.status is NodeStatus.ACTIVATE_FAILED
    assert expired.status_reason.startswith("no report from the agent within")
    # one started after this controller did keeps the plain deadline
    other = add_node(env, "edge-02")
    env.c.roles.assign(other, actor=ADMIN, role="sip", parameters={})
    restarted.nodes.action(other, "activate", actor=ADMIN)
    env.clock.advance(env.c.ctx.activation_timeout)
    assert [n.id for n in restarted.operations.expire()] == [other]


def seen_now(env: Env, node_id: int) -> None:
    """The node's agent was connected (its last beat recorded now)."""
    with env.db.write() as conn:
        node_rows.touch_last_seen(conn, {node_id: env.clock.now})


def test_a_fix_sent_while_the_agents_come_back_waits_for_them(fresh: Env) -> None:
    """The issue seen in CI: a rollout's next batch, started right after a restart, timed out
    on an agent still waiting out its reconnect backoff. Started in the reconnect window on a
    node whose agent joined before and is not back yet, the time counts from the window's end,
    then from when the agent is seen back; a node whose agent is back already, or never
    joined, or an operation started after the window, has the plain deadline."""
    env = fresh
    env.c.ctx.activation_timeout = 6.0  # shorter than the window (30 s)
    timeout = timedelta(seconds=env.c.ctx.activation_timeout)
    hostnames = {"late": "edge-01", "back": "edge-02", "never": "edge-03", "after": "edge-04"}
    ids = {name: add_node(env, hostname) for name, hostname in hostnames.items()}
    for name, node_id in ids.items():
        env.c.roles.assign(node_id, actor=ADMIN, role="sip", parameters={})
        if name != "never":
            bring_to(env, node_id, NodeStatus.DAMAGED)
            seen_now(env, node_id)
    env.clock.advance(5)  # the controller stops; it starts again, and its start ends here
    restarted = Controller.build(env.c.ctx)
    restarted.operations.took_over()
    agents_back = env.clock.now + timedelta(seconds=protocol.RECONNECT_CAP)
    env.clock.advance(2)
    seen_now(env, ids["back"])  # this agent reconnected at once
    env.clock.advance(1)
    started = env.clock.now
    fix = restarted.nodes.action(ids["late"], "fix", actor=ADMIN)
    fix_back = restarted.nodes.action(ids["back"], "fix", actor=ADMIN)
    activation = restarted.nodes.action(ids["never"], "activate", actor=ADMIN)
    deadline = restarted.operations.deadline
    assert deadline(fix) == agents_back + timeout
    assert deadline(fix_back) == started + timeout
    assert deadline(activation) == started + timeout
    env.clock.advance(timeout.total_seconds())
    expired = {n.id for n in restarted.operations.expire()}
    assert expired == {ids["back"], ids["never"]}
    # the late agent is seen back 15 s after the start: it has the whole timeout from then
    env.clock.advance(15 - 3 - timeout.total_seconds())
    seen_now(env, ids["late"])
    back_at = env.clock.now
    assert deadline(restarted.nodes.get(ids["late"]).node) == back_at + timeout
    env.clock.advance(timeout.total_seconds() - 1)
    assert deadline(restarted.nodes.get(ids["late"]).node) == back_at + timeout
    assert restarted.operations.expire() == []
    assert fix.operation_id is not None
    late = restarted.operations.report(ids["late"], operation_id=fix.operation_id, success=True)
    assert late.recorded
    assert late.node.status is NodeStatus.ONLINE
    # after the window, a Fix has the plain deadline again, whether the agent is back or not
    env.clock.advance((agents_back - env.clock.now).total_seconds() + 1)
    plain = restarted.nodes.action(ids["after"], "fix", actor=ADMIN)
    assert deadline(plain) == env.clock.now + timeout
    env.clock.advance(timeout.total_seconds())
    (timed_out,) = restarted.operations.expire()
    assert timed_out.id == ids["after"]
    assert timed_out.status is NodeStatus.DAMAGED
    assert "no report from the agent" in (timed_out.status_reason or "")
