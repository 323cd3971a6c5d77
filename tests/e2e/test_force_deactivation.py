"""Force deactivation (issue 11) end to end: a real agent whose role will not stop, a real
controller, and the operator's real `voipcloud` executable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status

pytestmark = pytest.mark.e2e


def steady(detail: dict[str, Any]) -> dict[str, Any]:
    """The node without what its agent's heartbeats change."""
    return {k: v for k, v in detail.items() if k not in ("last_seen", "connectivity")}


def stuck_node(
    controller: Controller,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    hostname: str,
) -> tuple[int, Path, Path]:
    """A node whose agent is connected but cannot stop its role: DeactivatePending.

    The role's stop command fails while the returned "jammed" file exists, and appends to the
    returned log when it succeeds."""
    admin = controller.admin()
    created = admin.post(
        "/api/v1/nodes", json={"hostname": hostname, "private_ip": "10.1.0.30"}
    ).json()
    node_id = created["node_id"]
    key = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "que"}).json()["session_key"]
    jammed = tmp_path / f"{hostname}.jammed"
    jammed.touch()
    stopped = tmp_path / f"{hostname}.stopped"
    config = (
        "[roles.que]\n"
        f'stop = "test ! -e {jammed} || {{ echo service jammed >&2; exit 1; }}; '
        f'echo stopped >> {stopped}"\n'
    )
    start_agent(controller, key, name=hostname, config=config)
    wait_for(
        lambda: node(admin, node_id)["connectivity"] == "connected",
        what="the agent to connect",
    )
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()

    def failed_attempt() -> bool:
        items = admin.get(f"/api/v1/nodes/{node_id}/events").json()["items"]
        return any(e["operation"] == "deactivation-attempt-failed" for e in items)

    wait_for(failed_attempt, timeout=30, what="the agent to report its failed stop")
    stuck = node(admin, node_id)
    assert stuck["status"] == "DeactivatePending"
    assert stuck["connectivity"] == "connected"  # the agent is there, and cannot finish
    assert not stopped.exists()
    return node_id, jammed, stopped


def test_cli_forces_a_deactivation_its_agent_cannot_complete(
    controller: Controller, start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    admin = controller.admin()
    node_id, jammed, _stopped = stuck_node(controller, start_agent, tmp_path, "stuck-que")

    cli = Cli(config_dir=tmp_path / "operator")
    cli.login(controller)
    # --force needs a reason: a usage error, before anything is asked or sent
    error = one_line_error(cli.fails(2, "node", "deactivate", "stuck-que", "--force"))
    assert "--reason" in error
    # a destructive command asks first; without a terminal a script must say --yes
    error = one_line_error(
        cli.fails(2, "node", "deactivate", "stuck-que", "--force", "--reason", "disk failed")
    )
    assert "--yes" in error
    assert "roles may still be running" in error
    assert node(admin, node_id)["status"] == "DeactivatePending"

    done = cli.ok("node", "deactivate", "stuck-que", "--force", "--reason", "disk failed", "--yes")
    assert f"node {node_id} (stuck-que) is Deactivated" in done.stderr
    forced = node(admin, node_id)
    assert forced["status"] == "Deactivated"
    assert forced["pending_operation"] is None
    assert forced["status_reason"] == "forced by administrator: disk failed"
    history = json.loads(cli.ok("node", "events", str(node_id), "--output", "json").stdout)
    # newest first; the agent may already have reported that it still cannot stop the role
    forced_events = [e for e in history["items"] if e["operation"] == "force-deactivate"]
    assert len(forced_events) == 1
    assert forced_events[0]["actor"] == "admin:admin"
    assert forced_events[0]["reason"] == "forced by administrator: disk failed"
    later = history["items"][: history["items"].index(forced_events[0])]
    assert all(e["operation"] == "agent-problem" for e in later), later
    table = cli.ok("node", "events", str(node_id)).stdout
    assert "force-deactivate" in table

    # forcing a Deactivated node is refused, naming the rule; nothing changes
    error = one_line_error(
        cli.fails(1, "node", "deactivate", "stuck-que", "--force", "--reason", "x", "--yes")
    )
    assert "Force deactivation is not available" in error
    assert "DeactivatePending" in error
    assert steady(node(admin, node_id)) == steady(forced)

    # the agent stays connected and serves the node's next operation: activate again
    jammed.unlink()
    activated = cli.run("node", "activate", "stuck-que", "--wait", "--timeout", "30")
    assert activated.returncode == 0, activated.stderr
    assert node(admin, node_id)["status"] == "Online"


def test_agent_stops_the_roles_of_a_force_deactivated_node(
    controller: Controller, start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    admin = controller.admin()
    node_id, jammed, stopped = stuck_node(controller, start_agent, tmp_path, "forced-que")
    answer = admin.post(
        f"/api/v1/nodes/{node_id}/actions/deactivate",
        json={"force": True, "reason": "the service is jammed"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "Deactivated"
    jammed.unlink()  # the machine can stop the role now: its agent should, by itself
    wait_for(stopped.exists, timeout=30, what="the agent to stop the forced node's role")
    assert node(admin, node_id)["status"] == "Deactivated"
