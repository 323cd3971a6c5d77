"""Infrastructure Properties through the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.infrastructure_helpers import API, Infra, running_infra
from voipcloud.domain.roles import SECRET_MASK
from voipcloud.store.tables import infrastructure as infrastructure_table

PROPS = f"{API}/infrastructure/properties"


@pytest.fixture
def infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    with running_infra(tmp_path, database_url) as running:
        yield running


def test_properties_read_typed_with_secrets_masked(infra: Infra) -> None:
    answer = infra.client.get(PROPS)
    assert answer.status_code == 200, answer.text
    props = answer.json()
    assert props["system_domain"] == "voipcloud.local"
    assert props["rtp_port_min"] == 10000
    assert props["rtp_port_max"] == 20000
    assert props["dns_servers"] == []
    assert props["timezone"] == "UTC"
    for secret in ("sql_password", "queue_password", "dd_password"):
        assert props[secret] == SECRET_MASK
    schema = {p["name"]: p for p in infra.client.get(f"{PROPS}/schema").json()}
    assert schema["sql_password"]["secret"] is True
    users = {(u["role"], u["parameter"]) for u in schema["system_domain"]["used_by"]}
    assert users == {("sip", "sip_domain"), ("jabber", "xmpp_domain")}


def test_generated_passwords_are_encrypted_from_the_first_start(infra: Infra) -> None:
    with infra.controller.ctx.db.read() as conn:
        revealed = infra.controller.infrastructure.read(conn)
        stored = conn.execute(sa.select(infrastructure_table.c.properties)).scalar_one()
    for secret in ("sql_password", "queue_password", "dd_password"):
        generated = revealed[secret]
        assert len(generated) >= 16
        assert generated not in str(stored)
        assert stored[secret] != generated


def test_domain_change_marks_exactly_the_affected_online_nodes_damaged(infra: Infra) -> None:
    follows = infra.add_node("sip-follows", role="sip")
    overrides = infra.add_node(
        "sip-overrides", role="sip", parameters={"sip_domain": "own.example"}
    )
    media = infra.add_node("pbx-01", role="pbx")
    resting = infra.add_node("jabber-off", role="jabber")  # stays Offline
    for node_id in (follows, overrides, media):
        infra.bring_online(node_id)
    ic = infra.controller_id()
    before = {n: infra.events(n) for n in (follows, overrides, media, resting, ic)}

    preview = infra.client.post(f"{PROPS}/preview", json={"system_domain": "voip.example.com"})
    assert preview.status_code == 200, preview.text
    planned = preview.json()
    assert planned["applied"] is False
    assert planned["changed"] == ["system_domain"]
    assert [i["hostname"] for i in planned["affected"]] == ["sip-follows"]
    assert [i["hostname"] for i in planned["others"]] == ["jabber-off"]
    assert infra.node(follows)["status"] == "Online"  # a preview changes nothing
    assert infra.client.get(PROPS).json()["system_domain"] == "voipcloud.local"

    saved = infra.client.put(PROPS, json={"system_domain": "voip.example.com"})
    assert saved.status_code == 200, saved.text
    result = saved.json()
    assert result["applied"] is True
    [impact] = result["affected"]
    assert impact["node_id"] == follows
    assert impact["status_before"] == "Online"
    assert impact["status_after"] == "Damaged"
    assert impact["reason"] == "infrastructure change: system domain changed"
    assert impact["changes"] == [
        {
            "role": "sip",
            "parameter": "sip_domain",
            "property": "system_domain",
            "old": "voipcloud.local",
            "new": "voip.example.com",
        }
    ]

    damaged = infra.node(follows)
    assert damaged["status"] == "Damaged"
    assert damaged["status_reason"] == "infrastructure change: system domain changed"
    latest = infra.events(follows)[0]
    assert latest["operation"] == "configuration-changed"
    assert (latest["status_before"], latest["status_after"]) == ("Online", "Damaged")
    assert infra.parameters(follows, "sip")["sip_domain"] == {
        "value": "voip.example.com",
        "source": "property:system_domain",
    }
    # the override, the unrelated role, the node that is not Online: untouched
    assert infra.node(overrides)["status"] == "Online"
    assert infra.parameters(overrides, "sip")["sip_domain"] == {
        "value": "own.example",
        "source": "explicit",
    }
    assert infra.node(media)["status"] == "Online"
    assert infra.node(resting)["status"] == "Offline"
    assert infra.parameters(resting, "jabber")["xmpp_domain"]["value"] == "voip.example.com"
    for node_id in (overrides, media, resting, ic):
        assert infra.events(node_id) == before[node_id]

    # Fix Node re-applies; the agent's success brings it back Online
    fix = infra.client.post(f"{API}/nodes/{follows}/actions/fix")
    assert fix.status_code == 200, fix.text
    infra.report(follows)
    assert infra.node(follows)["status"] == "Online"


def test_saving_the_same_values_changes_nothing(infra: Infra) -> None:
    node_id = infra.add_node("sip-01", role="sip")
    infra.bring_online(node_id)
    current = infra.client.get(PROPS).json()
    same = {k: v for k, v in current.items() if k != "updated_at"}
    answer = infra.client.put(PROPS, json=same)  # masked secrets are kept
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] == []
    assert answer.json()["affected"] == []
    assert infra.node(node_id)["status"] == "Online"


def test_rtp_and_secret_changes_reach_only_their_roles(infra: Infra) -> None:
    media = infra.add_node("pbx-01", role="pbx")
    queue = infra.add_node("que-01", role="que")
    sip = infra.add_node("sip-01", role="sip")
    for node_id in (media, queue, sip):
        infra.bring_online(node_id)

    rtp = infra.client.put(
        f"{PROPS}?dry_run=true", json={"rtp_port_min": 30000, "rtp_port_max": 40000}
    )
    assert rtp.status_code == 200, rtp.text
    assert [i["hostname"] for i in rtp.json()["affected"]] == ["pbx-01"]
    assert infra.client.get(PROPS).json()["rtp_port_min"] == 10000  # dry run

    saved = infra.client.put(PROPS, json={"rtp_port_min": 30000, "rtp_port_max": 40000}).json()
    assert [i["hostname"] for i in saved["affected"]] == ["pbx-01"]
    assert saved["affected"][0]["reason"] == "infrastructure change: RTP port range changed"
    assert infra.node(media)["status"] == "Damaged"

    password = "a-new-queue-secret"
    secret = infra.client.put(PROPS, json={"queue_password": password})
    assert secret.status_code == 200, secret.text
    [impact] = secret.json()["affected"]
    assert impact["hostname"] == "que-01"
    assert impact["reason"] == "infrastructure change: Queue credentials changed"
    assert impact["changes"][0]["old"] == SECRET_MASK
    assert impact["changes"][0]["new"] == SECRET_MASK
    assert password not in secret.text
    assert infra.client.get(PROPS).json()["queue_password"] == SECRET_MASK
    assert infra.node(sip)["status"] == "Online"
    # the agent of the queue node receives the new password; the row holds it encrypted
    [assigned] = infra.controller.roles.assigned(queue, reveal_secrets=True)
    assert assigned.effective["password"].value == password
    with infra.controller.ctx.db.read() as conn:
        stored = conn.execute(sa.select(infrastructure_table.c.properties)).scalar_one()
    assert password not in str(stored)


def test_invalid_values_are_refused_field_by_field(infra: Infra) -> None:
    before = infra.client.get(PROPS).json()
    answer = infra.client.put(
        PROPS,
        json={
            "system_domain": "not a domain!",
            "private_network": "10.0.0.0/33",
            "timezone": "Mars/Olympus_Mons",
            "rtp_port_min": 20000,
            "rtp_port_max": 10000,
            "dns_servers": ["10.0.0.2", "dns.example.com"],
            "sql_password": "short",
        },
    )
    assert answer.status_code == 422, answer.text
    errors = {tuple(e["loc"]): e["msg"] for e in answer.json()["detail"]}
    assert set(errors) == {
        ("body", "system_domain"),
        ("body", "private_network"),
        ("body", "timezone"),
        ("body", "rtp_port_max"),
        ("body", "dns_servers"),
        ("body", "sql_password"),
    }
    assert "reversed" in errors[("body", "rtp_port_max")]
    assert "CIDR" in errors[("body", "private_network")]
    assert "time zone" in errors[("body", "timezone")]

    cases = {
        "private_network": ["10.0.0.1/8", "not-a-cidr", "10.0.0.0", "8.8.8.0/24"],
        "timezone": ["Nowhere", "../../etc/passwd"],
        "system_domain": ["localhost", "-bad-.example.com", "192.168.1.1"],
        "rtp_port_min": [80, 70000, "many", "\u0663\u0660\u0660\u0660\u0660", "1" * 5000, "-2000"],
        "ntp_servers": ["bad host!"],
    }
    for field, values in cases.items():
        for value in values:
            refused = infra.client.put(PROPS, json={field: value})
            assert refused.status_code == 422, (field, value, refused.text)
            assert [e["loc"] for e in refused.json()["detail"]] == [["body", field]], refused.text
            assert "sys." not in refused.text  # a message for people, not Python's own

    overlap = infra.client.put(PROPS, json={"rtp_port_min": 5000, "rtp_port_max": 6000})
    assert overlap.status_code == 422
    [error] = overlap.json()["detail"]
    assert error["loc"] == ["body", "rtp_port_min"]
    assert "overlaps port 5060" in error["msg"]

    unknown = infra.client.put(PROPS, json={"colour": "blue"})
    assert unknown.status_code == 422
    assert infra.client.get(PROPS).json() == before  # nothing half-applied


def test_good_values_are_normalized(infra: Infra) -> None:
    answer = infra.client.put(
        PROPS,
        json={
            "system_domain": "Voip.Example.COM.",
            "dns_servers": "10.0.0.2, 10.0.0.3",
            "ntp_servers": ["pool.ntp.org", "10.0.0.1"],
            "timezone": "Europe/Bucharest",
            "private_network": "192.168.0.0/16",
            "rtp_port_min": "30000",
            "rtp_port_max": 40000,
            "sql_username": "voip_sql",
            "infrastructure_name": "Acme VoIP",
        },
    )
    assert answer.status_code == 200, answer.text
    props = infra.client.get(PROPS).json()
    assert props["system_domain"] == "voip.example.com"
    assert props["dns_servers"] == ["10.0.0.2", "10.0.0.3"]
    assert props["rtp_port_min"] == 30000
    assert props["private_network"] == "192.168.0.0/16"
    assert props["updated_at"]
    events = infra.client.get(f"{API}/events").json()["items"]
    assert events[0]["operation"] == "infrastructure-properties"
    assert "System domain" in events[0]["reason"]


def test_properties_need_an_administrator(infra: Infra) -> None:
    anonymous = infra.client.get(PROPS, headers={"Authorization": ""})
    assert anonymous.status_code == 401
