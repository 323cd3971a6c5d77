"""Exactly once under faults, with real `voipcloud serve` and `voipcloud agent` processes.

The role's apply command logs `start` and `end` lines to a file on the node side, so the file
says how many times the agent carried out an operation, and whether two runs overlapped.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_agent_lifecycle import (
    RECONNECT_WAIT,
    add_node_with_roles,
    connected,
    events,
    reconnected,
)
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def slow_apply(runs: Path, seconds: float) -> str:
    return f'[roles.wk]\napply = "echo start >> {runs}; sleep {seconds}; echo end >> {runs}"\n'


def held_apply(runs: Path, release: Path) -> str:
    """An apply that runs until the test creates `release` (60 s at most)."""
    wait = f"for i in $(seq 600); do test -e {release} && break; sleep 0.1; done"
    return f'[roles.wk]\napply = "echo start >> {runs}; {wait}; echo end >> {runs}"\n'


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def count(path: Path, word: str) -> int:
    return lines(path).count(word)


def operations(admin, node_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["operation"] for e in events(admin, node_id)]


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_controller_restart_during_a_slow_apply_applies_each_operation_once(
    tmp_path: Path, start_agent: Callable[..., AgentProcess], signal_name: str
) -> None:
    cycles = 2  # a repeat on a restarted controller; each cycle ~20 s
    controller = Controller(data_dir=tmp_path / "controller").start()
    runs, release = tmp_path / "runs.log", tmp_path / "release"
    try:
        admin = controller.admin()
        node_id, key = add_node_with_roles(admin, "once-e2e", ["wk"])
        start_agent(controller, key, name="once", config=held_apply(runs, release))
        connected(admin, node_id)
        for cycle in range(1, cycles + 1):
            admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
            wait_for(lambda c=cycle: count(runs, "start") >= c, what="the apply to start")
            if signal_name == "SIGKILL":
                controller.kill()
            else:
                controller.stop()
            controller.start()
            admin = controller.admin()
            # the agent is back on a new channel, which offers the same pending operation,
            # while the apply still runs: the case of the issue
            reconnected(admin, node_id)
            time.sleep(1.0)
            assert count(runs, "start") == cycle
            assert count(runs, "end") == cycle - 1
            release.touch()
            wait_status(admin, node_id, "Online", timeout=40)
            release.unlink()
            admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()
            wait_status(admin, node_id, "Deactivated")
        # one apply per operation, never two at once
        assert lines(runs) == ["start", "end"] * cycles
        ops = operations(admin, node_id)
        assert ops.count("activate") == cycles
        assert ops.count("activation-succeeded") == cycles
        assert "activation-failed" not in ops
        assert "activation-timed-out" not in ops
    finally:
        controller.stop()


def test_a_success_finished_while_the_controller_was_down_past_the_timeout_is_recorded(
    tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    controller = Controller(
        data_dir=tmp_path / "controller", env={"VOIPCLOUD_ACTIVATION_TIMEOUT": "3"}
    ).start()
    runs = tmp_path / "runs.log"
    try:
        admin = controller.admin()
        node_id, key = add_node_with_roles(admin, "outage-e2e", ["wk"])
        start_agent(controller, key, name="outage", config=slow_apply(runs, 2))
        connected(admin, node_id)
        admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
        wait_for(lambda: count(runs, "start") == 1, what="the apply to start")
        controller.kill()
        down_since = time.monotonic()
        wait_for(lambda: count(runs, "end") == 1, what="the apply to finish")
        time.sleep(max(0.0, 5 - (time.monotonic() - down_since)))  # down 5 s: past 3 s
        controller.start()
        admin = controller.admin()
        online = wait_status(admin, node_id, "Online", timeout=RECONNECT_WAIT)
        assert online["status_reason"] is None
        ops = operations(admin, node_id)
        assert ops.count("activation-succeeded") == 1
        assert "activation-timed-out" not in ops
        assert lines(runs) == ["start", "end"]
    finally:
        controller.stop()


def test_an_agent_killed_mid_apply_reports_it_interrupted_once_and_never_redoes_it(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    """The defined outcome of an activation whose agent died while applying: it fails once,
    reason "interrupted", and is not carried out again; a new Activate is a new operation."""
    runs = controller.data_dir / "runs.log"
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "agentkill-e2e", ["wk"])
    agent = start_agent(controller, key, name="agentkill", config=slow_apply(runs, 2))
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_for(lambda: count(runs, "start") == 1, what="the apply to start")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(timeout=10)
    agent.start()
    failed = wait_status(admin, node_id, "ActivateFailed")
    assert "interrupted" in failed["status_reason"]
    time.sleep(2.5)  # the orphaned command ends; the agent must not have started it again
    assert count(runs, "start") == 1
    assert operations(admin, node_id).count("activation-failed") == 1
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    assert count(runs, "start") == 2
    assert node(admin, node_id)["status_reason"] is None
