"""`GET /nodes/{id}`'s `actions` read the same facts as the web's buttons: this controller's
activation timeout and the agent's connectivity, not defaults."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import login, make_settings
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app


def test_the_confirmation_names_this_controllers_timeout_and_the_absent_agent(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, activation_timeout=7)
    with serve_in_thread(create_app(settings)) as base_url:
        client = login(base_url)
        try:
            node = client.post(
                "/api/v1/nodes", json={"hostname": "quiet-01", "private_ip": "10.9.0.4"}
            ).json()
            path = f"/api/v1/nodes/{node['node_id']}"
            assert client.post(f"{path}/roles", json={"role": "wk"}).status_code == 201
            actions = {a["name"]: a for a in client.get(path).json()["actions"]}
        finally:
            client.close()
    activate = actions["activate"]
    assert activate["allowed"] is True
    confirm = activate["confirm"]
    assert "the agent of node quiet-01 has never joined" in confirm
    assert "within 7 s" in confirm, confirm
    assert "within 60 s" not in confirm
    # refused actions carry the rule and the sentence, allowed ones neither
    assert actions["fix"]["allowed"] is False
    assert actions["fix"]["rule"] == "fix-status"
    assert "quiet-01" in actions["fix"]["reason"]
    assert "rule" not in activate or activate["rule"] is None
