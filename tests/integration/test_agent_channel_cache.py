"""The agent channel's cached desired state (services/channel_reads.py), over real HTTP and
WebSocket on SQLite and PostgreSQL: a channel opened again is served from the cache while
nothing changed, and a change of the node's role parameters or of the Infrastructure
Properties (which moves no row version of a node that is not Online) reaches the agent on its
next channel: a stale cache fails these tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApi, login, make_settings
from tests.integration.test_agent_security import (
    add_node,
    assign,
    channel,
    close_code,
    expect,
    join,
)
from tests.support.server import serve_in_thread
from voipcloud import protocol
from voipcloud.api.agent_channel import AgentHub
from voipcloud.api.app import create_app

API = "/api/v1"
FEATURES = [
    protocol.FEATURE_NODE_ADDRESSES,
    protocol.FEATURE_INVENTORY_DIGEST,
    protocol.FEATURE_RECONNECT_WINDOW,
]


@dataclass
class Served:
    api: LiveApi
    hub: AgentHub

    @property
    def base_url(self) -> str:
        return self.api.base_url

    @property
    def client(self) -> httpx.Client:
        return self.api.client


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    settings = make_settings(tmp_path, database_url)
    app = create_app(settings)
    with serve_in_thread(app) as base_url:
        client = login(base_url)
        try:
            yield Served(LiveApi(base_url, client, settings), app.state.hub)
        finally:
            client.close()


def first_desired(served: Served, token: str, features: list[str] = FEATURES) -> dict[str, Any]:
    """A new channel: hello, and the desired state that answers it."""
    hello = protocol.Hello(
        inventory_digest=protocol.inventory_digest(protocol.Inventory()), features=features
    )
    with channel(served.base_url, token) as ws:
        ws.send(hello.model_dump_json(exclude_none=True))
        for _ in range(5):
            message: dict[str, Any] = json.loads(ws.recv(timeout=10))
            if message["type"] == "desired":
                return message
    raise AssertionError("no desired state")


def sip_parameters(desired: dict[str, Any]) -> dict[str, Any]:
    (role,) = [r for r in desired["roles"] if r["code"] == "sip"]
    parameters: dict[str, Any] = role["parameters"]
    return parameters


def test_a_reconnect_is_served_from_the_cache_until_a_parameter_or_property_changes(
    served: Served,
) -> None:
    c = served.client
    nid = add_node(c, "cache-sip-01", public_ip="203.0.113.71")
    key = assign(c, nid, "sip")
    token = expect(join(served.api, key), 200)["agent_token"]
    reads = served.hub.reads

    first = first_desired(served, token)
    assert first["status"] == "Offline"  # not Online: a property change bumps no row version
    assert sip_parameters(first)["max_calls"] == 1000
    domain = sip_parameters(first)["sip_domain"]
    assert domain == expect(c.get(f"{API}/infrastructure/properties"), 200)["system_domain"]
    assert first["node"] == {"private_ip": "10.0.0.21", "public_ip": "203.0.113.71"}
    assert protocol.RECONNECT_BASE <= first["reconnect_window"] <= protocol.RECONNECT_CAP

    # nothing changed: the same desired state, from the cache
    hits = reads.hits
    assert first_desired(served, token) == first
    assert reads.hits == hits + 1

    # a role parameter: the node's row version moves, the cache entry is not used
    changed = c.patch(f"{API}/nodes/{nid}/roles/sip", json={"parameters": {"max_calls": 2000}})
    assert changed.status_code == 200, changed.text
    after_edit = first_desired(served, token)
    assert sip_parameters(after_edit)["max_calls"] == 2000
    assert after_edit["generation"] >= first["generation"]

    # an Infrastructure Property the role follows: only the properties' version moves
    version = node_version(c, nid)
    saved = c.put(f"{API}/infrastructure/properties", json={"system_domain": "moved.example"})
    assert saved.status_code == 200, saved.text
    assert node_version(c, nid) == version  # the node's row is untouched...
    after_property = first_desired(served, token)
    assert sip_parameters(after_property)["sip_domain"] == "moved.example"  # ...yet it arrives
    assert sip_parameters(after_property)["max_calls"] == 2000

    # features shape the cached state: an older agent gets neither field
    older = first_desired(served, token, features=[protocol.FEATURE_INVENTORY_DIGEST])
    assert "node" not in older
    assert "reconnect_window" not in older
    assert sip_parameters(older) == sip_parameters(after_property)


def node_version(client: httpx.Client, node_id: int) -> str:
    answer = client.get(f"{API}/nodes/{node_id}")
    assert answer.status_code == 200, answer.text
    return str(answer.headers["etag"])


def test_a_revoked_credential_is_refused_even_with_a_cached_desired_state(
    served: Served,
) -> None:
    c = served.client
    nid = add_node(c, "cache-wk-01")
    key = assign(c, nid, "wk")
    token = expect(join(served.api, key), 200)["agent_token"]
    first_desired(served, token)  # cached now
    expect(c.post(f"{API}/nodes/{nid}/actions/regenerate-session-key"), 200)
    with channel(served.base_url, token) as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
