"""Role health over a raw agent channel, on SQLite and PostgreSQL: an older agent (no
features) never sees the new `node` field; one that announces `node-addresses` gets the
node's addresses; `health` reports show on GET /nodes/{id} as `role_health` and each change
of state is one `role-health` event; an unassigned or unreported role is `unknown`."""

from __future__ import annotations

import json
import time

from tests.conftest import LiveApi
from tests.integration.test_agent_security import (
    API,
    add_node,
    assign,
    channel,
    expect,
    join,
    node,
    node_events,
    receive,
)


def health_events(api: LiveApi, node_id: int) -> list[str]:
    return [
        e["reason"] for e in node_events(api.client, node_id) if e["operation"] == "role-health"
    ]


def test_health_reports_show_per_role_and_changes_are_events(api: LiveApi) -> None:
    c = api.client
    nid = add_node(c, "health-01", public_ip="203.0.113.77")
    assign(c, nid, "sip")
    key = assign(c, nid, "jabber")
    token = expect(join(api, key), 200)["agent_token"]
    private_ip = node(c, nid)["private_ip"]

    with channel(api.base_url, token) as ws:  # an older agent: no features
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "desired"
        assert "node" not in first
    assert set(node(c, nid)["role_health"]) == {"sip", "jabber"}
    assert node(c, nid)["role_health"]["sip"]["state"] == "unknown"

    hello = {
        "type": "hello",
        "inventory": {},
        "outcomes": [],
        "features": ["node-addresses", "role-health"],
    }
    with channel(api.base_url, token) as ws:
        ws.send(json.dumps(hello))
        desired = receive(ws, "desired")
        if "node" not in desired:  # the first desired may have gone before the hello
            desired = receive(ws, "desired")
        assert desired["node"] == {"private_ip": private_ip, "public_ip": "203.0.113.77"}
        report = {
            "type": "health",
            "roles": {
                "sip": {"state": "healthy"},
                "jabber": {"state": "unhealthy", "message": "no XMPP stream\x00 here"},
            },
        }
        for _ in range(2):  # the same report twice: one event per change, not per report
            ws.send(json.dumps(report))
        deadline = time.monotonic() + 5
        while node(c, nid)["role_health"]["sip"]["state"] != "healthy":
            assert time.monotonic() < deadline, "the health report was not recorded"
            time.sleep(0.05)
        shown = node(c, nid)["role_health"]
        assert shown["sip"] == {"state": "healthy", "message": None}
        assert shown["jabber"] == {"state": "unhealthy", "message": "no XMPP stream here"}
        assert node(c, nid)["status"] == "Offline"  # health never changes the status
        report["roles"]["jabber"] = {"state": "healthy"}
        ws.send(json.dumps(report))
        deadline = time.monotonic() + 5
        while node(c, nid)["role_health"]["jabber"]["state"] != "healthy":
            assert time.monotonic() < deadline, "the change was not recorded"
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(reasons := health_events(api, nid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(reasons) == sorted(
            [
                "jabber: unknown → unhealthy (no XMPP stream here)",
                "sip: unknown → healthy",
                "jabber: unhealthy → healthy",
            ]
        ), reasons
    # the agent gone: what it said last is no longer vouched for
    deadline = time.monotonic() + 10
    while node(c, nid)["role_health"]["sip"]["state"] != "unknown":
        assert time.monotonic() < deadline, "health stayed known without an agent"
        time.sleep(0.1)
    assert "not connected" in node(c, nid)["role_health"]["sip"]["message"]
    assert c.get(f"{API}/nodes/{nid}").status_code == 200
