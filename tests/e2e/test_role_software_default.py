"""The role software is on by default: an agent with no configuration at all runs the built-in
handler of its roles, and a role whose program is missing fails the activation naming the
exact Debian package(s) to install (shown in the node's status reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import AgentProcess, Controller, wait_for, wait_status

pytestmark = pytest.mark.e2e


class AgentWithoutSbin(AgentProcess):
    """A real agent whose PATH lacks /usr/sbin, where Debian puts kamailio, mariadbd, nginx
    and rabbitmq-server: to this agent they are not installed (the machine is not touched)."""

    def wrap(self, argv: list[str]) -> list[str]:
        return ["env", "PATH=/usr/bin:/bin", *argv]


def test_software_on_by_default_and_a_missing_package_fails_naming_it(
    controller: Controller, tmp_path: Path
) -> None:
    admin = controller.admin()
    created = admin.post(
        "/api/v1/nodes",
        json={"hostname": "bare", "private_ip": "10.0.9.2", "public_ip": "203.0.113.70"},
    )
    node_id = created.json()["node_id"]
    assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "sip"})
    assert assigned.status_code == 201, assigned.text
    key = assigned.json()["session_key"]
    agent = AgentWithoutSbin(
        controller_url=controller.url,
        session_key=key,
        state_dir=tmp_path / "agent",
        config="",  # no [software] section: the product's default
        software=True,
    ).start()
    try:
        assert (agent.state_dir / "agent.toml").read_text() == ""
        wait_for(
            lambda: admin.get(f"/api/v1/nodes/{node_id}").json()["connectivity"] == "connected",
            what="the agent",
        )
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        failed = wait_status(admin, node_id, "ActivateFailed", timeout=30)
        assert failed["status_reason"] == (
            "sip: Kamailio is not installed (kamailio not found): install the Debian "
            "package(s) kamailio, or allow the agent to (software.install = true)"
        )
        assert not (agent.state_dir / "roles" / "sip" / "kamailio.cfg").exists()
    finally:
        agent.stop()

    # the sibling: the same agent told to leave the software alone runs the command handler
    agent.config, agent.software = "", False
    agent.start()
    try:
        assert "enabled = false" in (agent.state_dir / "agent.toml").read_text()
        assert admin.post(f"/api/v1/nodes/{node_id}/actions/activate").status_code == 200
        wait_status(admin, node_id, "Online", timeout=30)
        assert (agent.state_dir / "roles" / "sip.json").exists()
    finally:
        agent.stop()
