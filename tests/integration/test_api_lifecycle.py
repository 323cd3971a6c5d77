"""The node and role lifecycle through the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from tests.conftest import LiveApi


def add_node(client: httpx.Client, hostname: str, **extra: str) -> dict:
    answer = client.post(
        "/api/v1/nodes", json={"hostname": hostname, "private_ip": "10.0.0.10", **extra}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_first_start_creates_the_controller_node(api: LiveApi) -> None:
    listing = api.client.get("/api/v1/nodes").json()
    assert listing["total"] == 1
    ic = listing["items"][0]
    assert ic["is_controller"] is True
    assert ic["roles"] == ["ic"]
    assert ic["status"] == "Offline"
    detail = api.client.get(f"/api/v1/nodes/{ic['node_id']}").json()
    assert len(detail["session_key"]) >= 32


def test_full_lifecycle_with_pending_operations(api: LiveApi) -> None:
    c = api.client
    node = add_node(c, "sip-01", public_ip="203.0.113.7")
    assert node["status"] == "Offline"
    assert node["session_key"] is None
    nid = node["node_id"]

    assigned = c.post(f"/api/v1/nodes/{nid}/roles", json={"role": "sip"})
    assert assigned.status_code == 201, assigned.text
    key = assigned.json()["session_key"]
    assert key
    assert len(key) >= 32
    params = assigned.json()["assignments"][0]["parameters"]
    assert params["customer_connectivity"] == {"value": "203.0.113.7", "source": "node:public_ip"}
    assert params["sip_port"] == {"value": 5060, "source": "default"}

    activated = c.post(f"/api/v1/nodes/{nid}/actions/activate").json()
    assert activated["status"] == "Offline"
    assert activated["pending_operation"]["kind"] == "activate"

    again = c.post(f"/api/v1/nodes/{nid}/actions/activate")
    assert again.status_code == 409
    assert again.json()["rule"] == "operation-in-progress"

    events = c.get(f"/api/v1/nodes/{nid}/events").json()
    assert [e["operation"] for e in events["items"]] == ["activate", "assign-role", "add-node"]

    regenerated = c.post(f"/api/v1/nodes/{nid}/actions/regenerate-session-key")
    assert regenerated.status_code == 409  # not while the agent is activating

    deleted = c.delete(f"/api/v1/nodes/{nid}")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["status"] == "Deleted"
    assert body["roles"] == []
    assert body["session_key"] is None
    assert body["pending_operation"] is None

    assert c.get("/api/v1/nodes").json()["total"] == 1
    assert c.get("/api/v1/nodes", params={"status": "Deleted"}).json()["total"] == 1
    reused = add_node(c, "sip-01")
    assert reused["node_id"] != nid


def test_openapi_and_health(api: LiveApi) -> None:
    with api.anonymous() as anon:
        assert anon.get("/healthz").status_code == 200
        schema = anon.get("/openapi.json").json()
        assert "/api/v1/nodes/{node_id}/roles/{code}/remove" in schema["paths"]
        assert anon.get("/api/v1/nodes").status_code == 401
