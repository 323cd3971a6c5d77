"""Agent versions (issue 16): agents report theirs; the API, the listing and the Quick info
flag those older than the controller; the agent downloads are public. Both databases."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, LiveApi
from tests.integration.accounts_helpers import web_login
from voipcloud import __version__

API = "/api/v1"


def joined_node(api: LiveApi, hostname: str, version: str | None) -> int:
    c = api.client
    created = c.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": "10.0.0.40"})
    node_id = int(created.json()["node_id"])
    if version is None:
        return node_id  # never joined: no version reported
    assigned = c.post(f"{API}/nodes/{node_id}/roles", json={"role": "que"})
    assert assigned.status_code == 201, assigned.text
    inventory = {"os": "Debian 12", "kernel": "6.1", "version": version, "components": []}
    with api.anonymous() as anon:
        answer = anon.post(
            f"{API}/agent/join",
            json={"session_key": assigned.json()["session_key"], "inventory": inventory},
        )
    assert answer.status_code == 200, answer.text
    return node_id


def rejoin(api: LiveApi, node_id: int, version: str) -> None:
    """The node's agent joins again (restarted, another version), with the same key."""
    key = api.client.get(f"{API}/nodes/{node_id}").json()["session_key"]
    inventory = {"os": "Debian 12", "kernel": "6.1", "version": version, "components": []}
    with api.anonymous() as anon:
        answer = anon.post(f"{API}/agent/join", json={"session_key": key, "inventory": inventory})
    assert answer.status_code == 200, answer.text


def listed(api: LiveApi) -> dict[int, dict[str, Any]]:
    items = api.client.get(f"{API}/nodes", params={"limit": 500}).json()["items"]
    return {int(n["node_id"]): n for n in items}


def test_agents_older_than_the_controller_are_flagged_and_only_they(api: LiveApi) -> None:
    old = joined_node(api, "old-agent", "0.0.1")
    same = joined_node(api, "same-agent", __version__)
    newer = joined_node(api, "newer-agent", "999.0")
    odd = joined_node(api, "odd-agent", "a-custom-build")
    never = joined_node(api, "no-agent", None)

    nodes = listed(api)
    assert nodes[old]["version"] == "0.0.1"
    assert nodes[old]["agent_outdated"] is True
    for node_id in (same, newer, odd, never):
        assert nodes[node_id]["agent_outdated"] is False, nodes[node_id]
    detail = api.client.get(f"{API}/nodes/{old}").json()
    assert detail["agent_outdated"] is True
    assert api.client.get(f"{API}/nodes/{same}").json()["agent_outdated"] is False

    web = web_login(api.base_url, "admin", ADMIN_PASSWORD)
    try:
        page = web.get("/").text
        assert f'id="n{old}-outdated"' in page
        assert "agent 0.0.1 outdated" in page
        # the row says when its agent was last seen, as the pages write a time
        row = page[page.index(f'id="node-{old}"') :]
        row = row[: row.index("</tr>")]
        assert re.search(r"last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<", row), row
        for node_id in (same, newer, odd, never):
            assert f'id="n{node_id}-outdated"' not in page
        info = web.get(f"/nodes/{old}/info").text
        assert 'id="info-outdated"' in info
        assert f"older than the controller ({__version__})" in info
        assert 'id="info-outdated"' not in web.get(f"/nodes/{same}/info").text
        # the live listing (polled every 2 s) shows an agent that came back older
        found = re.search(r'/nodes/listing\?[^"]*fp=([0-9a-f]+)', page)
        assert found, page[:500]
        unchanged = web.get("/nodes/listing", params={"fp": found.group(1)})
        assert unchanged.status_code == 204
        rejoin(api, same, "0.0.2")
        changed = web.get("/nodes/listing", params={"fp": found.group(1)})
        assert changed.status_code == 200
        assert f'id="n{same}-outdated"' in changed.text
    finally:
        web.close()


def test_the_agent_downloads_are_public_and_hold_no_secret(api: LiveApi) -> None:
    with httpx.Client(base_url=api.base_url, timeout=60) as anonymous:
        script = anonymous.get("/agent/install.sh")
        assert script.status_code == 200
        assert script.text.startswith("#!/bin/sh\n")
        assert f"voipcloud-{__version__}-py3-none-any.whl" in script.text
        wheel = anonymous.get("/agent/package")
        assert wheel.status_code == 200
        with zipfile.ZipFile(io.BytesIO(wheel.content)) as archive:
            names = archive.namelist()
        assert "voipcloud/agent/runner.py" in names
        # only the package and its metadata: nothing of the data dir (keys, database)
        assert all(
            n.startswith(("voipcloud/", f"voipcloud-{__version__}.dist-info/")) for n in names
        )
        assert not any(n.endswith((".key", ".sqlite3", ".pem")) for n in names)
        assert (api.settings.data_dir / "cache" / wheel_name()).exists()
        # plain HTTP: no CA to pin, so none served
        assert anonymous.get("/agent/ca.der").status_code == 404
        # the session key is not among them: still only an administrator's
        assert anonymous.get(f"{API}/nodes").status_code == 401


def wheel_name() -> str:
    return f"voipcloud-{__version__}-py3-none-any.whl"
