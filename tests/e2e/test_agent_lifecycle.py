"""The activation lifecycle with a real `voipcloud serve` and real `voipcloud agent` processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status
from voipcloud import protocol

pytestmark = pytest.mark.e2e


def add_node_with_roles(
    client: httpx.Client, hostname: str, roles: list[str], *, public_ip: str = "203.0.113.20"
) -> tuple[int, str]:
    created = client.post(
        "/api/v1/nodes",
        json={"hostname": hostname, "private_ip": "10.1.0.20", "public_ip": public_ip},
    )
    assert created.status_code == 201, created.text
    node_id = created.json()["node_id"]
    key = ""
    for role in roles:
        assigned = client.post(f"/api/v1/nodes/{node_id}/roles", json={"role": role})
        assert assigned.status_code == 201, assigned.text
        key = assigned.json()["session_key"]
    return node_id, key


def events(client: httpx.Client, node_id: int) -> list[dict]:
    return client.get(f"/api/v1/nodes/{node_id}/events", params={"limit": 500}).json()["items"]


def connected(client: httpx.Client, node_id: int, timeout: float = 15.0) -> dict:
    return wait_for(
        lambda: (n := node(client, node_id))["connectivity"] == "connected" and n,
        timeout=timeout,
        what=f"node {node_id}'s agent to connect",
    )


def inventoried(client: httpx.Client, node_id: int, timeout: float = 15.0) -> dict:
    """The node once its agent is connected and its inventory stored: a new agent's inventory
    follows the channel's opening (the hello's digest is unknown: the controller asks for it)."""
    return wait_for(
        lambda: (n := node(client, node_id))["connectivity"] == "connected" and n["os"] and n,
        timeout=timeout,
        what=f"node {node_id}'s agent to connect and report its inventory",
    )


# An agent that lost its controller tries again after a full-jitter backoff capped at
# protocol.RECONNECT_CAP, so the wait for it after a restart is that cap plus a margin for a
# loaded machine (its controller may take seconds to start, while the backoff grows).
RECONNECT_WAIT = protocol.RECONNECT_CAP + 15.0


def reconnected(client: httpx.Client, node_id: int) -> dict:
    """The node's agent back after its controller restarted (within the protocol's cap)."""
    return connected(client, node_id, timeout=RECONNECT_WAIT)


def test_join_activate_online_with_inventory_and_role_config(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "sip-e2e", ["sip", "jabber"])
    agent = start_agent(controller, key, name="sip")
    joined = inventoried(admin, node_id)
    assert joined["kernel"].startswith("Linux")
    assert joined["version"]
    names = {c["name"] for c in joined["components"]}
    assert any(name.startswith("fastapi") for name in names), sorted(names)[:20]

    started = time.monotonic()
    assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
    online = wait_status(admin, node_id, "Online")
    assert time.monotonic() - started < 5
    assert online["status_reason"] is None
    written = agent.state_dir / "roles" / "sip.json"
    assert written.exists()
    assert '"sip_port": 5060' in written.read_text()
    assert (agent.state_dir / "roles" / "jabber.json").exists()
    ops = [e["operation"] for e in events(admin, node_id)]
    assert ops.count("activation-succeeded") == 1


def test_failing_apply_command_is_activate_failed_with_its_reason(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "pbx-e2e", ["pbx"])
    config = '[roles.pbx]\napply = "echo cannot bind rtp ports >&2; exit 7"\n'
    start_agent(controller, key, name="pbx", config=config)
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    failed = wait_status(admin, node_id, "ActivateFailed")
    assert "exited with status 7" in failed["status_reason"]
    assert "cannot bind rtp ports" in failed["status_reason"]


def test_an_agent_that_never_answers_times_out(tmp_path: Path, start_agent) -> None:
    controller = Controller(
        data_dir=tmp_path / "controller", env={"VOIPCLOUD_ACTIVATION_TIMEOUT": "1.5"}
    ).start()
    try:
        admin = controller.admin()
        node_id, key = add_node_with_roles(admin, "slow-e2e", ["wk"])
        start_agent(controller, key, name="slow", config='[roles.wk]\napply = "sleep 4"\n')
        connected(admin, node_id)
        admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
        failed = wait_status(admin, node_id, "ActivateFailed", timeout=10)
        assert failed["status_reason"].startswith("no report from the agent within")
        # the late success report arrives after the deadline and is not recorded
        time.sleep(3.5)
        assert node(admin, node_id)["status"] == "ActivateFailed"
        ops = [e["operation"] for e in events(admin, node_id)]
        assert ops.count("activation-timed-out") == 1
        assert "activation-succeeded" not in ops
    finally:
        controller.stop()


def test_deactivate_waits_for_the_agent_then_deactivated(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "que-e2e", ["que"])
    marker = controller.data_dir / "stopped.txt"
    config = f'[roles.que]\nstop = "sleep 1; echo stopped > {marker}"\n'
    agent = start_agent(controller, key, name="que", config=config)
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    answer = admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate")
    assert answer.json()["status"] == "DeactivatePending"
    assert node(admin, node_id)["status"] == "DeactivatePending"
    wait_status(admin, node_id, "Deactivated")
    assert marker.read_text().strip() == "stopped"
    assert not (agent.state_dir / "roles" / "que.json").exists()


def test_online_parameter_change_damages_then_fix_reapplies(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "sip2-e2e", ["sip"])
    agent = start_agent(controller, key, name="sip2")
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")

    # Customer Connectivity may change while Online: the node stays Online and the agent
    # rewrites the role's configuration
    cc = admin.patch(
        f"/api/v1/nodes/{node_id}/roles/sip",
        json={"parameters": {"customer_connectivity": "sip.example.net"}},
    )
    assert cc.json()["status"] == "Online"
    config = agent.state_dir / "roles" / "sip.json"
    wait_for(lambda: "sip.example.net" in config.read_text(), what="the agent to rewrite sip")

    changed = admin.patch(
        f"/api/v1/nodes/{node_id}/roles/sip", json={"parameters": {"sip_port": 5080}}
    )
    assert changed.json()["status"] == "Damaged"
    assert "sip.sip_port" in changed.json()["status_reason"]
    assert '"sip_port": 5060' in config.read_text()  # not applied until Fix

    admin.post(f"/api/v1/nodes/{node_id}/actions/fix").raise_for_status()
    wait_status(admin, node_id, "Online")
    assert '"sip_port": 5080' in config.read_text()


def test_fix_that_fails_stays_damaged_with_the_reason(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "wk-fix-e2e", ["wk"])
    flag = controller.data_dir / "broken"
    config = f'[roles.wk]\ncheck = "test ! -e {flag} || (echo worker unhealthy; exit 3)"\n'
    start_agent(controller, key, name="wkfix", config=config)
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    admin.post(f"/api/v1/nodes/{node_id}/actions/mark-damaged", json={"reason": "disk"})
    flag.write_text("x")
    admin.post(f"/api/v1/nodes/{node_id}/actions/fix").raise_for_status()
    damaged = wait_status(admin, node_id, "Damaged")
    assert "worker unhealthy" in damaged["status_reason"]
    flag.unlink()
    admin.post(f"/api/v1/nodes/{node_id}/actions/fix").raise_for_status()
    wait_status(admin, node_id, "Online")


def test_delete_stops_the_agent_and_its_key_is_refused(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "del-e2e", ["wk"])
    agent = start_agent(controller, key, name="del")
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()
    wait_status(admin, node_id, "Deactivated")
    assert admin.delete(f"/api/v1/nodes/{node_id}").json()["status"] == "Deleted"
    assert agent.wait(timeout=15) == 0
    assert "node was deleted" in agent.log()
    refused = httpx.post(
        f"{controller.url}/api/v1/agent/join", json={"session_key": key}, timeout=10
    )
    assert refused.status_code == 401


def test_controller_killed_mid_activation_outcome_still_recorded_once(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "restart-e2e", ["wk"])
    start_agent(controller, key, name="restart", config='[roles.wk]\napply = "sleep 2"\n')
    connected(admin, node_id)
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    time.sleep(0.5)  # the agent is inside its apply command now
    controller.kill()
    time.sleep(2.5)  # the agent finishes while the controller is down
    controller.start()
    admin = controller.admin()
    wait_status(admin, node_id, "Online", timeout=RECONNECT_WAIT)
    ops = [e["operation"] for e in events(admin, node_id)]
    assert ops.count("activation-succeeded") == 1
    assert ops.count("activate") == 1


def test_connectivity_lost_when_the_agent_stops_and_back_on_restart(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "beat-e2e", ["wk"])
    agent = start_agent(controller, key, name="beat")
    connected(admin, node_id)
    agent.stop()
    lost = wait_for(
        lambda: (n := node(admin, node_id))["connectivity"] == "lost" and n,
        what="the agent to be seen lost",
    )
    assert lost["last_seen"] is not None
    # restarted, it rejoins with the credential kept in its state dir
    agent.start()
    connected(admin, node_id)
    joins = [e for e in events(admin, node_id) if e["operation"] == "agent-joined"]
    assert len(joins) == 1


def test_serve_runs_the_ic_agent_and_activates_a_single_machine(tmp_path: Path) -> None:
    controller = Controller(data_dir=tmp_path / "controller", ic_agent=True).start()
    try:
        admin = controller.admin()
        ic = admin.get("/api/v1/nodes").json()["items"][0]
        assert ic["is_controller"]
        inventoried(admin, ic["node_id"])  # the IC agent, started by serve, reported it
        admin.post(f"/api/v1/nodes/{ic['node_id']}/actions/activate").raise_for_status()
        wait_status(admin, ic["node_id"], "Online")
    finally:
        controller.stop()
