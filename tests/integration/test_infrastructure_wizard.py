"""The Configuration Wizard through the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import login
from tests.integration.infrastructure_helpers import API, Infra, running_infra
from voipcloud.domain.roles import SINGLE_NODE_ROLES

WIZARD = f"{API}/infrastructure/wizard"
ANSWERS = {"system_domain": "voip.example.com", "public_ip": "203.0.113.10"}


@pytest.fixture
def infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    with running_infra(tmp_path, database_url) as running:
        yield running


def test_wizard_detects_this_machine_and_plans_the_single_node_roles(infra: Infra) -> None:
    detected = infra.client.get(WIZARD)
    assert detected.status_code == 200, detected.text
    found = detected.json()
    assert found["available"] is True
    assert found["unavailable_reason"] is None
    assert found["hostname"]
    assert found["addresses"]
    assert found["controller"]["roles"] == ["ic"]
    assert found["standard_roles"] == list(SINGLE_NODE_ROLES)

    planned = infra.client.post(f"{WIZARD}/plan", json=ANSWERS)
    assert planned.status_code == 200, planned.text
    plan = planned.json()
    assert [r["code"] for r in plan["roles"]] == ["ic", *SINGLE_NODE_ROLES]
    assert plan["new_roles"] == list(SINGLE_NODE_ROLES)
    assert plan["public_ip"] == "203.0.113.10"
    assert plan["properties"]["system_domain"] == "voip.example.com"
    sip = next(r for r in plan["roles"] if r["code"] == "sip")
    params = {p["name"]: p for p in sip["parameters"]}
    assert params["sip_domain"]["value"] == "voip.example.com"
    assert params["sip_domain"]["source"] == "property:system_domain"
    assert params["customer_connectivity"]["value"] == "203.0.113.10"
    sql = next(r for r in plan["roles"] if r["code"] == "sql")
    assert next(p for p in sql["parameters"] if p["name"] == "password")["value"] == "********"
    # a plan changes nothing
    ic = infra.node(infra.controller_id())
    assert ic["roles"] == ["ic"]
    assert ic["public_ip"] is None


def test_wizard_configures_and_activates_the_controller_node(infra: Infra) -> None:
    ic = infra.controller_id()
    answer = infra.client.post(WIZARD, json={**ANSWERS, "timezone": "Europe/Bucharest"})
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["node_id"] == ic
    assert run["pending_operation"] == "activate"

    node = infra.node(ic)
    assert sorted(node["roles"]) == sorted(["ic", *SINGLE_NODE_ROLES])
    assert node["public_ip"] == "203.0.113.10"
    assert node["pending_operation"]["kind"] == "activate"
    props = infra.client.get(f"{API}/infrastructure/properties").json()
    assert props["system_domain"] == "voip.example.com"
    assert props["management_hostname"] == "voip.example.com"
    assert props["timezone"] == "Europe/Bucharest"
    assert [e["operation"] for e in infra.events(ic)[:2]] == ["activate", "wizard"]

    # the local agent reports the activation (the e2e test runs the real one)
    infra.report(ic)
    assert infra.node(ic)["status"] == "Online"

    again = infra.client.post(WIZARD, json=ANSWERS)
    assert again.status_code == 409
    assert again.json()["rule"] == "wizard-status"
    assert "Online" in again.json()["detail"]


def test_wizard_can_be_retried_after_a_failed_activation(infra: Infra) -> None:
    ic = infra.controller_id()
    assert infra.client.post(WIZARD, json=ANSWERS).status_code == 200
    infra.report(ic, success=False, reason="sip: apply command exited with 1")
    failed = infra.node(ic)
    assert failed["status"] == "ActivateFailed"
    assert failed["status_reason"] == "sip: apply command exited with 1"

    retry = infra.client.post(WIZARD, json=ANSWERS)
    assert retry.status_code == 200, retry.text
    assert retry.json()["plan"]["new_roles"] == []  # the roles are there already
    infra.report(ic)
    assert infra.node(ic)["status"] == "Online"


def test_wizard_refuses_while_other_live_nodes_exist(infra: Infra) -> None:
    other = infra.add_node("sip-02", role="sip")
    ic = infra.controller_id()
    detected = infra.client.get(WIZARD).json()
    assert detected["available"] is False
    assert "sip-02" in detected["unavailable_reason"]

    for path in (WIZARD, f"{WIZARD}/plan"):
        refused = infra.client.post(path, json=ANSWERS)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["rule"] == "wizard-single-node"
        assert "only live node" in body["detail"]
        assert "sip-02" in body["detail"]
    assert infra.node(ic)["roles"] == ["ic"]
    assert infra.client.get(f"{API}/infrastructure/properties").json()["system_domain"] == (
        "voipcloud.local"
    )

    # a Deleted node is not live: the wizard is available again
    assert infra.client.delete(f"{API}/nodes/{other}").status_code == 200
    assert infra.client.get(WIZARD).json()["available"] is True


def test_wizard_input_is_validated_field_by_field(infra: Infra) -> None:
    missing = infra.client.post(WIZARD, json={})
    assert missing.status_code == 422
    assert {tuple(e["loc"]) for e in missing.json()["detail"]} == {
        ("body", "system_domain"),
        ("body", "public_ip"),
    }
    bad = infra.client.post(
        WIZARD,
        json={"system_domain": "no_domain", "public_ip": "300.1.1.1", "timezone": "Nowhere/City"},
    )
    assert bad.status_code == 422
    assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {
        ("body", "system_domain"),
        ("body", "public_ip"),
        ("body", "timezone"),
    }
    assert infra.node(infra.controller_id())["roles"] == ["ic"]


def _race_wizard_and_add(infra: Infra, hostname: str) -> dict[str, httpx.Response]:
    """The wizard and an Add Node sent at the same moment, each on its own connection."""
    barrier = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}
    base_url = str(infra.client.base_url)

    def send(name: str, path: str, body: dict[str, str]) -> None:
        client = login(base_url)
        try:
            barrier.wait(timeout=30)
            answers[name] = client.post(path, json=body)
        finally:
            client.close()

    threads = [
        threading.Thread(target=send, args=("wizard", WIZARD, ANSWERS)),
        threading.Thread(
            target=send,
            args=("add", f"{API}/nodes", {"hostname": hostname, "private_ip": "10.0.0.20"}),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_wizard_and_add_node_racing_never_break_the_only_live_node_rule(infra: Infra) -> None:
    """A node added while the wizard runs either makes the wizard refuse (409) or is added
    after the wizard's transaction: never counted out and slipped in at once."""
    ic = infra.controller_id()
    for attempt in range(4):
        answers = _race_wizard_and_add(infra, f"racer-{attempt}")
        assert answers["add"].status_code == 201, answers["add"].text
        added = answers["add"].json()["node_id"]
        wizard = answers["wizard"]
        assert wizard.status_code in (200, 409), wizard.text
        events = infra.client.get(f"{API}/events", params={"limit": 200}).json()["items"]
        [added_at] = [e["id"] for e in events if e["node_id"] == added]
        if wizard.status_code == 200:
            wizard_at = max(e["id"] for e in events if e["operation"] == "wizard")
            assert added_at > wizard_at, "a node slipped in while the wizard counted live nodes"
            infra.report(ic, success=False, reason="reset for the next round")
        else:
            assert "live" in wizard.text.lower(), wizard.text
        assert infra.client.delete(f"{API}/nodes/{added}").status_code == 200
