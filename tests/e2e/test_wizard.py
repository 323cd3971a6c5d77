"""The Configuration Wizard on a fresh, real `voipcloud serve` with its real local IC agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.processes import Controller, wait_status
from voipcloud.domain.roles import SINGLE_NODE_ROLES

pytestmark = pytest.mark.e2e
ANSWERS = {"system_domain": "voip.example.com", "public_ip": "203.0.113.10"}


def role_config(controller: Controller, role: str) -> dict:
    path = controller.data_dir / "ic-agent" / "roles" / f"{role}.json"
    parameters: dict = json.loads(path.read_text())["parameters"]
    return parameters


def test_wizard_brings_the_controller_node_online_and_a_property_change_needs_fix(
    tmp_path: Path,
) -> None:
    controller = Controller(data_dir=tmp_path / "controller", ic_agent=True).start()
    try:
        admin = controller.admin()
        detected = admin.get("/api/v1/infrastructure/wizard").json()
        assert detected["available"] is True, detected
        ic = detected["controller"]["node_id"]

        run = admin.post("/api/v1/infrastructure/wizard", json=ANSWERS)
        assert run.status_code == 200, run.text
        online = wait_status(admin, ic, "Online", timeout=30)
        assert sorted(online["roles"]) == sorted(["ic", *SINGLE_NODE_ROLES])
        assert online["public_ip"] == "203.0.113.10"
        # the local agent applied the effective configuration the properties gave
        sip = role_config(controller, "sip")
        assert sip["sip_domain"] == "voip.example.com"
        assert sip["customer_connectivity"] == "203.0.113.10"
        assert len(role_config(controller, "sql")["password"]) >= 8

        refused = admin.post("/api/v1/infrastructure/wizard", json=ANSWERS)
        assert refused.status_code == 409
        assert refused.json()["rule"] == "wizard-status"

        saved = admin.put(
            "/api/v1/infrastructure/properties", json={"system_domain": "sip.example.net"}
        )
        assert saved.status_code == 200, saved.text
        assert [i["node_id"] for i in saved.json()["affected"]] == [ic]
        damaged = admin.get(f"/api/v1/nodes/{ic}").json()
        assert damaged["status"] == "Damaged"
        assert damaged["status_reason"] == "infrastructure change: system domain changed"

        assert admin.post(f"/api/v1/nodes/{ic}/actions/fix").status_code == 200
        wait_status(admin, ic, "Online", timeout=30)
        assert role_config(controller, "sip")["sip_domain"] == "sip.example.net"
        assert role_config(controller, "jabber")["xmpp_domain"] == "sip.example.net"
    finally:
        controller.stop()


def test_wizard_failure_shows_the_reason_and_can_be_retried(tmp_path: Path) -> None:
    data_dir = tmp_path / "controller"
    (data_dir / "ic-agent").mkdir(parents=True)
    (data_dir / "ic-agent" / "agent.toml").write_text(
        '[roles.pbx]\napply = "echo no media server here >&2; exit 3"\n'
    )
    controller = Controller(data_dir=data_dir, ic_agent=True).start()
    try:
        admin = controller.admin()
        ic = admin.get("/api/v1/infrastructure/wizard").json()["controller"]["node_id"]
        assert admin.post("/api/v1/infrastructure/wizard", json=ANSWERS).status_code == 200
        failed = wait_status(admin, ic, "ActivateFailed", timeout=30)
        assert "pbx" in failed["status_reason"]
        assert "no media server here" in failed["status_reason"]
    finally:
        controller.stop()

    # the administrator repairs the machine and runs the wizard again
    (data_dir / "ic-agent" / "agent.toml").write_text("")
    controller = Controller(data_dir=data_dir, port=controller.port, ic_agent=True).start()
    try:
        admin = controller.admin()
        retry = admin.post("/api/v1/infrastructure/wizard", json=ANSWERS)
        assert retry.status_code == 200, retry.text
        assert retry.json()["plan"]["new_roles"] == []
        wait_status(admin, ic, "Online", timeout=30)
    finally:
        controller.stop()
