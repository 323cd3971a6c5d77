"""A deactivation is never stuck: its agent retries a failed or interrupted attempt with
backoff until the roles are stopped, and the node shows the last failure meanwhile."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_agent_lifecycle import add_node_with_roles, connected, events
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def online_node(
    controller: Controller, start_agent: Callable[..., AgentProcess], name: str, config: str
) -> tuple[int, AgentProcess]:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, f"{name}-e2e", ["wk"])
    agent = start_agent(controller, key, name=name, config=config)
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    return node_id, agent


def test_a_stop_command_that_fails_twice_ends_deactivated_without_an_administrator(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    tries = controller.data_dir / "tries.log"
    # fails on its first two runs ("disk busy"), then succeeds
    stop = f"echo try >> {tries}; test $(wc -l < {tries}) -gt 2 || (echo disk busy >&2; exit 5)"
    node_id, _ = online_node(controller, start_agent, "retry", f'[roles.wk]\nstop = "{stop}"\n')
    admin = controller.admin()
    admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()
    seen: dict[int, tuple[str, str]] = {}

    def watch() -> bool:
        current = node(admin, node_id)
        reason = current["status_reason"] or ""
        found = re.search(r"\(attempt (\d)\)", reason)
        if current["status"] == "DeactivatePending" and found:
            seen[int(found.group(1))] = (current["status"], reason)
        return current["status"] == "Deactivated"

    wait_for(watch, timeout=30, interval=0.05, what="the node to be Deactivated")
    assert sorted(seen) == [1, 2], seen  # each failed attempt was visible while pending
    assert re.fullmatch(
        r"stopping the roles failed \(attempt 1\): wk: stop command exited with status 5: "
        r"disk busy; the agent retries in 2 s",
        seen[1][1],
    ), seen[1][1]
    assert re.search(r"; the agent retries in [34] s$", seen[2][1]), seen[2][1]
    assert lines(tries) == ["try"] * 3
    done = node(admin, node_id)
    assert done["status_reason"] is None
    assert done["pending_operation"] is None
    history = events(admin, node_id)
    failed = [e["reason"] for e in history if e["operation"] == "deactivation-attempt-failed"]
    assert len(failed) == 2  # each attempt recorded once
    assert len(set(failed)) == 2
    assert [e["operation"] for e in history].count("deactivation-completed") == 1


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_an_agent_restarted_mid_deactivation_completes_it(
    controller: Controller, start_agent: Callable[..., AgentProcess], signal_name: str
) -> None:
    stops = controller.data_dir / "stops.log"
    config = f'[roles.wk]\nstop = "echo start >> {stops}; sleep 2; echo end >> {stops}"\n'
    node_id, agent = online_node(controller, start_agent, "restart", config)
    admin = controller.admin()
    admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()
    wait_for(lambda: lines(stops) == ["start"], what="the stop command to start")
    assert agent.process is not None
    agent.process.send_signal(getattr(signal, signal_name))
    agent.process.wait(timeout=15)
    agent.start()
    done = wait_status(admin, node_id, "Deactivated", timeout=30)
    assert done["status_reason"] is None
    ops = [e["operation"] for e in events(admin, node_id)]
    assert ops.count("deactivation-completed") == 1
    assert "deactivation-attempt-failed" not in ops  # a restart is no failure
    time.sleep(2.2)  # a stop command orphaned by SIGKILL ends too
    if signal_name == "SIGTERM":
        # a graceful stop lets the stop command finish; its success is reported after
        assert lines(stops) == ["start", "end"]
    else:
        # killed: the restarted agent stops the roles again (stop commands are idempotent)
        assert lines(stops).count("start") == 2
    assert not (agent.state_dir / "roles" / "wk.json").exists()
