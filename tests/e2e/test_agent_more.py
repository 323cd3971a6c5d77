"""More of the agent lifecycle with real processes: missed beats on an open channel, and
Administrative Remove carried out by the IC node's own agent inside `voipcloud serve`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.test_agent_lifecycle import add_node_with_roles, connected, events
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status

pytestmark = pytest.mark.e2e


def test_lost_after_missed_beats_while_the_channel_stays_open_status_unchanged(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    """The controller runs with beats every 0.5 s and 3 missed beats allowed (see
    tests/support/processes.py). A frozen agent keeps its TCP connection open but stops
    beating: it is seen lost after the missed beats, its last-seen time stops, and the
    node's status does not move; thawed, it is connected again."""
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "frozen-e2e", ["wk"])
    agent = start_agent(controller, key, name="frozen")
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    assert agent.process is not None
    pid = agent.process.pid

    os.kill(pid, signal.SIGSTOP)
    try:
        lost = wait_for(
            lambda: (n := node(admin, node_id))["connectivity"] == "lost" and n,
            timeout=10,
            what="the frozen agent to be seen lost",
        )
        assert agent.process.poll() is None  # alive, its socket open: only the beats stopped
        assert lost["status"] == "Online"  # connectivity never changes the status
        assert lost["status_reason"] is None
        frozen_at = datetime.fromisoformat(lost["last_seen"])
        time.sleep(1.0)  # two more beat intervals: still nothing heard
        again = node(admin, node_id)
        assert datetime.fromisoformat(again["last_seen"]) == frozen_at
        assert again["connectivity"] == "lost"
    finally:
        os.kill(pid, signal.SIGCONT)

    back = connected(admin, node_id)
    assert datetime.fromisoformat(back["last_seen"]) > frozen_at
    assert back["status"] == "Online"
    operations = [e["operation"] for e in events(admin, node_id)]
    assert operations.count("agent-joined") == 1  # the same channel resumed: no new join


def test_administrative_remove_is_carried_out_by_the_ic_agent(tmp_path: Path) -> None:
    controller_dir = tmp_path / "controller"
    marker = tmp_path / "sip-stopped.txt"
    ic_agent_dir = controller_dir / "ic-agent"
    ic_agent_dir.mkdir(parents=True)
    (ic_agent_dir / "agent.toml").write_text(f'[roles.sip]\nstop = "echo stopped > {marker}"\n')
    controller = Controller(data_dir=controller_dir, ic_agent=True).start()
    try:
        admin = controller.admin()
        ic = admin.get("/api/v1/nodes").json()["items"][0]
        ic_id = ic["node_id"]
        assert ic["is_controller"]
        patched = admin.patch(f"/api/v1/nodes/{ic_id}", json={"public_ip": "203.0.113.9"})
        assert patched.status_code == 200, patched.text
        assigned = admin.post(f"/api/v1/nodes/{ic_id}/roles", json={"role": "sip"})
        assert assigned.status_code == 201, assigned.text
        connected(admin, ic_id)
        admin.post(f"/api/v1/nodes/{ic_id}/actions/activate").raise_for_status()
        wait_status(admin, ic_id, "Online")
        sip_config = ic_agent_dir / "roles" / "sip.json"
        assert sip_config.exists()
        assert not marker.exists()

        removed = admin.post(f"/api/v1/nodes/{ic_id}/roles/sip/remove", json={"confirm": True})
        assert removed.status_code == 200, removed.text
        # the shell creates the file before it writes to it: wait for the whole line
        wait_for(
            lambda: marker.exists() and marker.read_text().endswith("\n"),
            what="the IC agent to run the sip role's stop command",
        )
        assert marker.read_text().strip() == "stopped"
        wait_for(lambda: not sip_config.exists(), what="the sip configuration to be removed")
        after = node(admin, ic_id)
        assert after["status"] == "Online"
        assert "sip" not in after["roles"]
        assert (ic_agent_dir / "roles" / "ic.json").exists()  # the other role stays applied
        problems = [e for e in events(admin, ic_id) if e["operation"] == "agent-problem"]
        assert problems == []
    finally:
        controller.stop()
