"""Optimistic concurrency over the API (domain/versions.py), on SQLite and PostgreSQL.

Every resource a person edits answers an ETag; a write with an older one in If-Match is a 412
`stale-version` naming the fields that changed, writes nothing and records no event; without
If-Match a write proceeds as before. Two writers that read the same version and write at the
same moment: exactly one wins (the check and the write are one compare-and-set).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.conftest import LiveApi
from tests.integration.live_controller import API, add_node, assign, expect, unique

STALE = "stale-version"
RACE_ROUNDS = 6


def events_total(client: httpx.Client) -> int:
    total: int = expect(client.get(f"{API}/events", params={"limit": 1}), 200)["total"]
    return total


def stale(response: httpx.Response, *changed: str) -> dict[str, Any]:
    data: dict[str, Any] = expect(response, 412)
    assert data["rule"] == STALE
    assert sorted(data["changed"]) == sorted(changed), data
    for name in changed:
        assert name in data["detail"]
    assert response.headers["ETag"]
    return data


def test_node_etag_and_if_match(api: LiveApi) -> None:
    client = api.client
    node = add_node(client, unique("ver"), "10.0.0.21")
    url = f"{API}/nodes/{node['node_id']}"
    first = client.get(url)
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert client.get(url).headers["ETag"] == etag  # stable while nothing changes

    # Alice saves with the version she read: accepted, a new ETag comes back
    renamed = unique("ver-renamed")
    saved = client.patch(url, json={"hostname": renamed}, headers={"If-Match": etag})
    expect(saved, 200)
    newer = saved.headers["ETag"]
    assert newer != etag
    assert client.get(url).headers["ETag"] == newer

    # Bob read before Alice's save: refused, naming what changed; nothing written, no event
    before_events = events_total(client)
    answer = client.patch(url, json={"private_ip": "10.0.0.99"}, headers={"If-Match": etag})
    data = stale(answer, "hostname")
    assert answer.headers["ETag"] == newer
    assert "10.0.0.99" not in str(client.get(url).json())
    assert events_total(client) == before_events
    assert "Node " + renamed in data["detail"]

    # a stale Delete is refused too; with the current version it goes through
    stale(client.delete(url, headers={"If-Match": etag}), "hostname")
    assert expect(client.get(url), 200)["status"] == "Offline"
    # several tags: any current one matches; * matches whatever the version
    both = f"{etag}, {newer}"
    expect(client.patch(url, json={"private_ip": "10.0.0.22"}, headers={"If-Match": both}), 200)
    expect(client.patch(url, json={"private_ip": "10.0.0.23"}, headers={"If-Match": "*"}), 200)
    # without If-Match: as before, last writer wins
    expect(client.patch(url, json={"private_ip": "10.0.0.24"}), 200)
    # a malformed If-Match is named, not ignored
    bad = expect(
        client.patch(url, json={"private_ip": "10.0.0.25"}, headers={"If-Match": "x"}), 422
    )
    assert bad["detail"][0]["loc"] == ["header", "If-Match"]
    current = client.get(url).headers["ETag"]
    deleted = client.delete(url, headers={"If-Match": current})
    assert expect(deleted, 200)["status"] == "Deleted"


def test_status_change_makes_a_read_stale(api: LiveApi) -> None:
    """A change of status (an action) between read and write is named as such."""
    client = api.client
    node = add_node(client, unique("ver-st"), "10.0.0.31")
    url = f"{API}/nodes/{node['node_id']}"
    etag = client.get(url).headers["ETag"]
    expect(client.post(f"{url}/actions/standby"), 200)
    stale(client.patch(url, json={"private_ip": "10.0.0.32"}, headers={"If-Match": etag}), "status")


def test_role_assignment_versions(api: LiveApi) -> None:
    client = api.client
    node = add_node(client, unique("ver-role"), "10.0.0.41")
    detail = assign(client, node["node_id"], "wk")
    (assignment,) = detail["assignments"]
    etag = assignment["etag"]
    url = f"{API}/nodes/{node['node_id']}/roles/wk"
    saved = expect(
        client.patch(url, json={"parameters": {"max_jobs": 16}}, headers={"If-Match": etag}), 200
    )
    newer = saved["assignments"][0]["etag"]
    assert newer != etag
    stale(
        client.patch(url, json={"parameters": {"max_jobs": 4}}, headers={"If-Match": etag}),
        "max_jobs",
    )
    stale(client.delete(url, headers={"If-Match": etag}), "max_jobs")
    # back to its default: the name is still what changed
    expect(
        client.patch(url, json={"parameters": {"max_jobs": None}}, headers={"If-Match": newer}), 200
    )
    stale(
        client.patch(url, json={"parameters": {"max_jobs": 2}}, headers={"If-Match": newer}),
        "max_jobs",
    )
    assert (
        client.get(f"{API}/nodes/{node['node_id']}").json()["assignments"][0]["parameters"][
            "max_jobs"
        ]["source"]
        == "default"
    )
    latest = client.get(f"{API}/nodes/{node['node_id']}").json()["assignments"][0]["etag"]
    expect(client.delete(url, headers={"If-Match": latest}), 200)


def test_properties_version(api: LiveApi) -> None:
    client = api.client
    url = f"{API}/infrastructure/properties"
    etag = client.get(url).headers["ETag"]
    saved = client.put(url, json={"infrastructure_name": "alpha"}, headers={"If-Match": etag})
    expect(saved, 200)
    assert saved.headers["ETag"] == client.get(url).headers["ETag"] != etag
    before = events_total(client)
    stale(
        client.put(url, json={"system_domain": "b.example.com"}, headers={"If-Match": etag}),
        "infrastructure_name",
    )
    assert client.get(url).json()["infrastructure_name"] == "alpha"
    assert events_total(client) == before
    # invalid input is answered as such even with a stale version (RFC 9110 13.2.1)
    for bad in ({"infrastructure_name": "\u0016x"}, {"rtp_port_min": 70000}):
        refused = client.put(url, json=bad, headers={"If-Match": etag})
        expect(refused, 422)
    # and for a node: an invalid hostname with a stale ETag is a 422, not a 412
    node = client.post(f"{API}/nodes", json={"hostname": "v-422", "private_ip": "10.4.0.2"})
    node_url = f"{API}/nodes/{node.json()['node_id']}"
    old_tag = client.get(node_url).headers["ETag"]
    expect(client.patch(node_url, json={"private_ip": "10.4.0.3"}), 200)
    expect(
        client.patch(node_url, json={"hostname": "bad host"}, headers={"If-Match": old_tag}), 422
    )
    # a preview (dry run) never writes, so it is not refused
    expect(
        client.put(
            url,
            params={"dry_run": True},
            json={"infrastructure_name": "x"},
            headers={"If-Match": etag},
        ),
        200,
    )


def test_storage_version(api: LiveApi, tmp_path: Any) -> None:
    client = api.client
    url = f"{API}/storage"
    etag = client.get(url).headers["ETag"]
    target = tmp_path / "faxes-here"
    target.mkdir()
    saved = client.put(
        url, json={"faxes": {"local": {"path": str(target)}}}, headers={"If-Match": etag}
    )
    expect(saved, 200)
    newer = saved.headers["ETag"]
    assert newer != etag
    other = tmp_path / "vm-here"
    other.mkdir()
    stale(
        client.put(
            url, json={"voicemail": {"local": {"path": str(other)}}}, headers={"If-Match": etag}
        ),
        "faxes.local.path",
    )
    expect(
        client.put(
            url, json={"voicemail": {"local": {"path": str(other)}}}, headers={"If-Match": newer}
        ),
        200,
    )


def race_once(api: LiveApi, url: str, etag: str) -> list[httpx.Response]:
    """Two clients PATCH `url` with the same If-Match at the same moment."""
    token = api.client.headers["Authorization"]
    barrier = threading.Barrier(2, timeout=30)
    answers: list[httpx.Response] = []

    def write(ip: str) -> None:
        with httpx.Client(
            base_url=api.base_url, timeout=30, headers={"Authorization": token}
        ) as client:
            client.get("/healthz")  # the connection is open before the race
            barrier.wait()
            answers.append(client.patch(url, json={"private_ip": ip}, headers={"If-Match": etag}))

    threads = [threading.Thread(target=write, args=(f"10.0.1.{i + 1}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_two_writers_one_version_one_wins(api: LiveApi) -> None:
    """Both read the same ETag and save at the same moment: one 200, one 412 (or 409 when
    both passed the check before either wrote: the compare-and-set); one event per round."""
    for round_ in range(RACE_ROUNDS):
        node = add_node(api.client, unique("ver-race"), "10.0.0.51")
        url = f"{API}/nodes/{node['node_id']}"
        etag = api.client.get(url).headers["ETag"]
        before = events_total(api.client)
        answers = race_once(api, url, etag)
        codes = sorted(a.status_code for a in answers)
        assert codes in ([200, 409], [200, 412]), (round_, [a.text for a in answers])
        loser = next(a for a in answers if a.status_code != 200).json()
        assert loser["rule"] in (STALE, "concurrent-change")
        winner = next(a for a in answers if a.status_code == 200).json()
        assert api.client.get(url).json()["private_ip"] == winner["private_ip"]
        assert events_total(api.client) == before + 1


@pytest.mark.parametrize("header", ['"abc"', "W/", '"1.2.3.4.5.6.7.8.9-x"'])
def test_malformed_if_match(api: LiveApi, header: str) -> None:
    node = add_node(api.client, unique("ver-bad"), "10.0.0.61")
    answer = api.client.delete(f"{API}/nodes/{node['node_id']}", headers={"If-Match": header})
    assert answer.status_code == 422
    assert expect(api.client.get(f"{API}/nodes/{node['node_id']}"), 200)["status"] == "Offline"
