"""The agent's worker on its own (no controller): an operation is carried out once whatever
the channel does, and a failed deactivation is retried later, never given up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from voipcloud import protocol
from voipcloud.agent.handlers import AgentConfig
from voipcloud.agent.runner import Agent
from voipcloud.agent.state import SavedOutcome


def make_agent(tmp_path: Path, toml: str) -> Agent:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(toml)
    return Agent(
        controller_url="http://127.0.0.1:9",
        session_key="k",
        state_dir=tmp_path / "state",
        config=AgentConfig.load(config_file),
        collect_inventory=protocol.Inventory,
    )


def desired(op_id: str | None, kind: str = "activate", status: str = "Offline") -> protocol.Desired:
    return protocol.Desired(
        node_id=5,
        hostname="edge",
        status=status,
        generation=3,
        operation=protocol.PendingOperation(id=op_id, kind=kind) if op_id else None,  # type: ignore[arg-type]
        roles=[protocol.DesiredRole(code="wk", name="Worker", parameters={})],
    )


def deliver(agent: Agent, state: protocol.Desired) -> None:
    """What the channel does when a desired state arrives (on any channel, old or new)."""
    agent._desired = state
    agent._desired_changed.set()


async def wait_until(check, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_same_operation_delivered_again_while_it_runs_is_not_started_again(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        runs = tmp_path / "runs"
        agent = make_agent(tmp_path, f'[roles.wk]\napply = "echo start >> {runs}; sleep 1"\n')
        worker = asyncio.create_task(agent._work())
        try:
            deliver(agent, desired("op-1"))
            await wait_until(runs.exists)
            # the channel drops and a new one delivers the same pending operation, twice
            deliver(agent, desired("op-1"))
            await asyncio.sleep(0.1)
            deliver(agent, desired("op-1"))
            await wait_until(lambda: "op-1" in agent.state.outcomes)
            await asyncio.sleep(0.3)
            assert runs.read_text().splitlines() == ["start"]
            saved = agent.store.load().outcomes["op-1"]
            assert saved.success
            assert not saved.acked
            assert agent.store.load().started is None
            # its outcome waits for a channel: it is in the next hello
            assert [o.operation_id for o in agent._unacked()] == ["op-1"]
        finally:
            await agent._stop_worker(worker)

    asyncio.run(scenario())


def test_stopping_the_agent_lets_the_operation_under_way_finish_and_save(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path, '[roles.wk]\napply = "sleep 0.5"\n')
        worker = asyncio.create_task(agent._work())
        deliver(agent, desired("op-2"))
        await asyncio.sleep(0.2)
        await agent._stop_worker(worker)  # what SIGTERM does
        assert agent.store.load().outcomes["op-2"].success

    asyncio.run(scenario())


def test_a_failed_deactivation_is_retried_after_its_delay_and_never_saved_failed(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        runs, flag = tmp_path / "runs", tmp_path / "failed-once"
        stop = f"echo stop >> {runs}; test -e {flag} || (touch {flag}; echo disk busy; exit 4)"
        agent = make_agent(tmp_path, f'[roles.wk]\nstop = "{stop}"\n')
        agent.state.applied["wk"] = "digest"
        worker = asyncio.create_task(agent._work())
        try:
            deliver(agent, desired("op-3", "deactivate", "DeactivatePending"))
            await wait_until(lambda: agent.state.retries.get("op-3") == 1)
            assert "op-3" not in agent.state.outcomes  # a failure is not final
            assert agent._retry_at is not None
            retry_in = agent._retry_at - time.monotonic()
            assert 0.5 < retry_in <= 2
            # delivered again before its time (a reconnect): not tried again yet
            deliver(agent, desired("op-3", "deactivate", "DeactivatePending"))
            await asyncio.sleep(0.2)
            assert runs.read_text().splitlines() == ["stop"]
            # its time comes: tried again, succeeds, saved
            await wait_until(lambda: "op-3" in agent.state.outcomes, timeout=5)
            assert agent.state.outcomes["op-3"].success
            assert runs.read_text().splitlines() == ["stop", "stop"]
            assert agent.state.retries == {}
            assert agent.state.applied == {}
        finally:
            await agent._stop_worker(worker)

    asyncio.run(scenario())


def test_a_forced_deactivation_drops_the_operation_but_keeps_stopping_the_roles(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        runs = tmp_path / "runs"
        agent = make_agent(tmp_path, f'[roles.wk]\nstop = "echo stop >> {runs}; exit 1"\n')
        agent.state.applied["wk"] = "digest"
        worker = asyncio.create_task(agent._work())
        try:
            deliver(agent, desired("op-4", "deactivate", "DeactivatePending"))
            await wait_until(lambda: agent.state.retries.get("op-4") == 1)
            # the administrator forced it: Deactivated, nothing pending
            deliver(agent, desired(None, status="Deactivated"))
            # the operation's retries are forgotten...
            await wait_until(lambda: agent.state.retries == {})
            # ...but a Deactivated node must not keep running its roles: stopped again at
            # once, then again after the backoff while the stop fails
            # (the third stop has failed once the next try is scheduled: the line is written
            # before the command exits, so the line alone does not say the agent saw it fail)
            await wait_until(
                lambda: len(runs.read_text().splitlines()) >= 3 and agent._retry_at is not None,
                timeout=6,
            )
            assert agent.state.applied == {"wk": "digest"}
        finally:
            await agent._stop_worker(worker)

    asyncio.run(scenario())


def test_an_agent_restarted_mid_deactivation_tries_again_instead_of_failing(
    tmp_path: Path,
) -> None:
    """A deactivation is never marked started; an old state that marked one (before this
    rule) is recovered as interrupted, but a failed deactivation outcome is not final."""
    agent = make_agent(tmp_path, "")
    agent.state.retries["op-5"] = 2
    agent.store.save(agent.state)
    again = make_agent(tmp_path, "")
    assert again.state.outcomes == {}
    assert again.state.retries == {"op-5": 2}  # the count (and the backoff) goes on

    # an outcome saved failed for it by an older agent ("interrupted") is not final either
    again.state.outcomes["op-5"] = SavedOutcome(success=False, reason="interrupted")
    asyncio.run(again._carry_out(desired("op-5", "deactivate", "DeactivatePending")))
    assert again.state.outcomes["op-5"].success  # tried again (no roles: nothing to stop)
