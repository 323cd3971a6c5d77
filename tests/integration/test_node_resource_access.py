"""Nodes reach stored resources only through their roles (SPEC.md section 9; issue 12, item 2).

Real HTTP on SQLite and PostgreSQL; each node's credential is the one its agent gets from
POST /agent/join with the node's session key. `pbx` and `us` read and write, `web` reads, any
other role gets 403 on every resource call. Node writes and deletes are events with the node
as actor; administrators keep full access.
"""

from __future__ import annotations

import itertools
from contextlib import closing
from typing import Any

import httpx

from tests.conftest import LiveApi

API = "/api/v1"
KINDS = ("faxes", "recordings", "voicemail")
_numbers = itertools.count(10)
EXPECTED_ACCESS = {"pbx": "read-write", "web": "read", "us": "read-write"}


def ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    return answer.json() if answer.content else None


def node_with(api: LiveApi, hostname: str, *roles: str) -> tuple[int, httpx.Client]:
    """A node carrying `roles`, and a client holding its agent credential."""
    client = api.client
    number = next(_numbers)
    body = {
        "hostname": hostname,
        "private_ip": f"10.0.0.{number}",
        "public_ip": f"203.0.113.{number}",
    }
    node_id = ok(client.post(f"{API}/nodes", json=body), 201)["node_id"]
    key = ""
    for role in roles:
        key = ok(client.post(f"{API}/nodes/{node_id}/roles", json={"role": role}), 201)[
            "session_key"
        ]
    agent = api.anonymous()
    token = ok(agent.post(f"{API}/agent/join", json={"session_key": key}))["agent_token"]
    agent.headers["Authorization"] = f"Bearer {token}"
    return int(node_id), agent


def seed(api: LiveApi) -> dict[str, bytes]:
    """One resource of each kind, stored by the administrator."""
    stored = {}
    for kind in KINDS:
        body = f"{kind} seeded by admin".encode()
        ok(api.client.put(f"{API}/storage/{kind}/resources/seed/one.bin", content=body))
        stored[kind] = body
    return stored


def calls(client: httpx.Client, kind: str, name: str) -> dict[str, httpx.Response]:
    base = f"{API}/storage/{kind}/resources"
    return {
        "list": client.get(base),
        "get": client.get(f"{base}/seed/one.bin"),
        "put": client.put(f"{base}/{name}.bin", content=b"from a node"),
        "overwrite": client.put(f"{base}/seed/one.bin", content=b"overwritten by a node"),
        "delete": client.delete(f"{base}/{name}.bin"),
    }


def events(api: LiveApi, node_id: int | None = None) -> list[dict[str, Any]]:
    path = f"{API}/nodes/{node_id}/events" if node_id else f"{API}/events"
    items: list[dict[str, Any]] = ok(api.client.get(path, params={"limit": 500}))["items"]
    return items


def check_the_catalogue_shows_each_roles_access(api: LiveApi) -> None:
    catalogue = ok(api.client.get(f"{API}/roles"))
    assert len(catalogue) >= 10
    for role in catalogue:
        assert role["resource_access"] == EXPECTED_ACCESS.get(role["code"], "none"), role


def check_a_jabber_node_reaches_nothing(api: LiveApi, seeded: dict[str, bytes]) -> None:
    node_id, agent = node_with(api, "jabber-only", "jabber")
    with closing(agent):
        for kind in KINDS:
            for call, answer in calls(agent, kind, "jabber").items():
                assert answer.status_code == 403, (kind, call, answer.text)
                assert "jabber" in answer.json()["detail"], answer.text
            # nothing changed: the administrator still reads the seeded bytes
            assert (
                api.client.get(f"{API}/storage/{kind}/resources/seed/one.bin").content
                == (seeded[kind])
            )
            listed = ok(api.client.get(f"{API}/storage/{kind}/resources"))
            assert [r["key"] for r in listed["items"]] == ["seed/one.bin"]
    assert not [
        e for e in events(api) if e["actor"] == f"node:{node_id}" and "resource" in e["operation"]
    ]


def check_a_pbx_node_reads_and_writes_and_leaves_a_trace(api: LiveApi) -> None:
    node_id, agent = node_with(api, "pbx-1", "pbx")
    with closing(agent):
        for kind in KINDS:
            answers = calls(agent, kind, "pbx")
            for call, answer in answers.items():
                assert answer.status_code == (204 if call == "delete" else 200), (kind, call)
            assert answers["get"].content.endswith(b"seeded by admin")
            assert agent.get(f"{API}/storage/{kind}/resources/seed/one.bin").content == (
                b"overwritten by a node"
            )
    actor = f"node:{node_id}"
    trace = [
        (e["operation"], e["reason"].split(":")[0])
        for e in events(api, node_id)
        if e["actor"] == actor and e["operation"].endswith("-resource")
    ]
    for kind in KINDS:  # newest first: the overwrite and the new one, then the delete
        assert ("store-resource", f"{kind}/pbx.bin") in trace, trace
        assert ("store-resource", f"{kind}/seed/one.bin") in trace, trace
        assert ("delete-resource", f"{kind}/pbx.bin") in trace, trace
    assert len(trace) == 3 * len(KINDS)
    everything = [e for e in events(api) if e["actor"] == actor and "resource" in e["operation"]]
    assert all(e["node_id"] == node_id for e in everything)
    assert len(everything) == len(trace)
    # the administrator's writes are events too, with the administrator as actor
    admin_writes = [
        e for e in events(api) if e["operation"] == "store-resource" and e["actor"] == "admin:admin"
    ]
    assert len(admin_writes) == len(KINDS)


def check_a_web_node_reads_but_never_writes(api: LiveApi) -> None:
    node_id, agent = node_with(api, "web-1", "web")
    with closing(agent):
        for kind in KINDS:
            answers = calls(agent, kind, "web")
            assert answers["list"].status_code == 200
            assert answers["get"].status_code == 200
            for call in ("put", "overwrite", "delete"):
                assert answers[call].status_code == 403, (kind, call, answers[call].text)
                assert "may write" in answers[call].json()["detail"]
            assert agent.get(f"{API}/storage/{kind}/resources/seed/one.bin").content == (
                b"overwritten by a node"
            )
    assert not [e for e in events(api, node_id) if e["operation"].endswith("-resource")]


def check_access_follows_the_roles_a_node_carries_now(api: LiveApi) -> None:
    node_id, agent = node_with(api, "us-and-jabber", "jabber", "us")
    with closing(agent):
        assert agent.put(f"{API}/storage/faxes/resources/us.bin", content=b"us").status_code == 200
        ok(api.client.delete(f"{API}/nodes/{node_id}/roles/us"))
        assert agent.get(f"{API}/storage/faxes/resources/us.bin").status_code == 403
        assert agent.get(f"{API}/storage/faxes/resources").status_code == 403
        ok(api.client.post(f"{API}/nodes/{node_id}/roles", json={"role": "web"}), 201)
        assert agent.get(f"{API}/storage/faxes/resources/us.bin").content == b"us"
        assert agent.delete(f"{API}/storage/faxes/resources/us.bin").status_code == 403
        # a bad credential is still 401, and the configuration stays the administrator's
        assert agent.get(f"{API}/storage").status_code == 401
        agent.headers["Authorization"] = "Bearer not-a-credential"
        assert agent.get(f"{API}/storage/faxes/resources").status_code == 401


def test_node_access_to_resources_follows_its_roles(api: LiveApi) -> None:
    check_the_catalogue_shows_each_roles_access(api)
    seeded = seed(api)
    check_a_jabber_node_reaches_nothing(api, seeded)
    check_a_pbx_node_reads_and_writes_and_leaves_a_trace(api)
    check_a_web_node_reads_but_never_writes(api)
    check_access_follows_the_roles_a_node_carries_now(api)
