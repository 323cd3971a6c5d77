"""The agent's side of a stand-in controller: for tests of how a real `voipcloud agent` treats
a controller that misbehaves on its channel (closes it, refuses it), served by a small app of
the test's own (`serve_in_thread`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.processes import AgentProcess

# a desired state with nothing to do, for the agent's node
DESIRED: dict[str, Any] = {
    "type": "desired",
    "node_id": 7,
    "hostname": "edge",
    "status": "Offline",
    "generation": 1,
    "operation": None,
    "roles": [],
}


def returning_agent(url: str, state_dir: Path) -> AgentProcess:
    """A real `voipcloud agent` process, started, that joined the controller at `url` before
    (its state file holds node 7 and a token): it goes straight to its channel."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(
        json.dumps(
            {
                "controller": url,
                "node_id": DESIRED["node_id"],
                "agent_token": "t",
                "heartbeat_interval": 0.5,
            }
        )
    )
    return AgentProcess(controller_url=url, session_key="unused", state_dir=state_dir).start()
