"""The channel's one sweep, with a real `voipcloud serve` and real agents (issue 15).

An open channel does no periodic work of its own: commits wake it at once, and one sweep per
missed-beats window (1.5 s here: beats every 0.5 s, 3 missed) compares every node's stamp
(row version, credential digest) and wakes only the channels whose node changed behind the
controller's back (a wake-up that was lost, e.g. a change committed by another process). These
tests change the node's row in the controller's database directly, so no commit of this
controller wakes the channel: only the sweep can carry the change to the agent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.test_agent_lifecycle import add_node_with_roles, connected, events
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status
from voipcloud import protocol
from voipcloud.store.database import Database, sqlite_url
from voipcloud.store.tables import nodes

pytestmark = pytest.mark.e2e


@contextmanager
def database(controller: Controller) -> Iterator[Database]:
    db = Database(sqlite_url(controller.data_dir.resolve()))
    try:
        yield db
    finally:
        db.dispose()


def behind_the_back(controller: Controller, node_id: int, **values: Any) -> None:
    """Change the node's row without this controller's commit wake-up (as another process
    would), bumping row_version as every real change of a node does."""
    with database(controller) as db, db.write() as conn:
        version = conn.execute(select(nodes.c.row_version).where(nodes.c.id == node_id)).scalar()
        assert version is not None
        conn.execute(
            update(nodes).where(nodes.c.id == node_id).values(row_version=version + 1, **values)
        )


def agent_generation(agent: AgentProcess) -> int:
    state = agent.state_dir / "state.json"
    return int(json.loads(state.read_text()).get("generation", 0)) if state.exists() else 0


def test_a_change_missed_by_the_wake_up_reaches_the_agent_by_the_sweep(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "sweep-e2e", ["wk"])
    agent = start_agent(controller, key, name="sweep")
    connected(admin, node_id)
    # the sibling case, through the API: the commit wakes the channel at once
    admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
    wait_status(admin, node_id, "Online")
    with database(controller) as db, db.read() as conn:
        generation = int(
            conn.execute(select(nodes.c.config_generation).where(nodes.c.id == node_id)).scalar()
            or 0
        )
    wait_for(lambda: agent_generation(agent) == generation, what="the agent at the generation")

    # a new configuration committed elsewhere: no wake-up here, the sweep finds the stamp moved
    behind_the_back(controller, node_id, config_generation=generation + 1)
    wait_for(
        lambda: agent_generation(agent) == generation + 1,
        timeout=10,
        what="the agent to reconcile the new generation (carried by the sweep)",
    )
    assert node(admin, node_id)["status"] == "Online"
    assert agent.process is not None
    assert agent.process.poll() is None


def test_a_node_deleted_behind_the_back_closes_its_channel_and_the_agent_exits(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "sweep-deleted", ["wk"])
    agent = start_agent(controller, key, name="deleted")
    connected(admin, node_id)
    behind_the_back(controller, node_id, status="Deleted")
    assert agent.process is not None
    code = agent.wait(timeout=15)  # the sweep finds the stamp moved: 4410
    assert code == 0  # 4410: the node was deleted, roles stopped, exit 0
    assert "node was deleted" in agent.log()


def test_a_credential_replaced_behind_the_back_closes_the_channel_and_the_agent_rejoins(
    controller: Controller, start_agent: Callable[..., AgentProcess]
) -> None:
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "sweep-revoked", ["wk"])
    start_agent(controller, key, name="revoked")
    connected(admin, node_id)
    with database(controller) as db, db.write() as conn:  # not a row_version change
        conn.execute(update(nodes).where(nodes.c.id == node_id).values(agent_token_digest="0" * 64))
    # closed with 4401: the agent joins again with its (still valid) session key
    wait_for(
        lambda: [e["operation"] for e in events(admin, node_id)].count("agent-joined") == 2,
        timeout=15,
        what="the agent to join again after its credential was refused",
    )
    connected(admin, node_id)


def channel(controller: Controller, token: str) -> ClientConnection:
    url = controller.url.replace("http://", "ws://") + "/api/v1/agent/channel"
    return connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5)


def join(controller: Controller, key: str) -> str:
    answer = controller.admin().post("/api/v1/agent/join", json={"session_key": key})
    answer.raise_for_status()
    return str(answer.json()["agent_token"])


def test_a_silent_channel_is_closed_after_twice_the_missed_beats_window(
    controller: Controller,
) -> None:
    """No WebSocket pings: the beats are the one liveness mechanism. A channel that stops
    beating is closed (4408) after twice the window (3 s here); one that beats stays open."""
    admin = controller.admin()
    silent_id, silent_key = add_node_with_roles(admin, "silent-one", ["wk"])
    beating_id, beating_key = add_node_with_roles(admin, "beating-one", ["wk"])
    hello = protocol.Hello(inventory=protocol.Inventory()).model_dump_json(exclude_none=True)
    beat = protocol.Beat().model_dump_json()
    with (
        channel(controller, join(controller, silent_key)) as silent,
        channel(controller, join(controller, beating_key)) as beating,
    ):
        # the controller last heard the silent channel when its hello arrived: after this
        opened = time.monotonic()
        for ws in (silent, beating):
            ws.send(hello)
            assert json.loads(ws.recv(timeout=5))["type"] == "desired"
        code = None
        while time.monotonic() - opened < 12:
            beating.send(beat)
            try:
                silent.recv(timeout=0.25)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                break
        waited = time.monotonic() - opened
        assert code == protocol.CLOSE_SILENT
        assert waited >= 3.0  # not before twice the window
        beating.send(beat)  # still open
        assert node(admin, beating_id)["connectivity"] == "connected"
    assert node(admin, silent_id)["connectivity"] == "lost"


def test_an_older_agent_without_the_digest_feature_still_gets_its_inventory_stored(
    controller: Controller, tmp_path: Path
) -> None:
    """A hello with the full inventory (an agent from before the digest) works as before."""
    admin = controller.admin()
    node_id, key = add_node_with_roles(admin, "older-agent", ["wk"])
    inventory = protocol.Inventory(os="Debian GNU/Linux 11", kernel="Linux 5.10", version="0.9")
    with channel(controller, join(controller, key)) as ws:
        ws.send(protocol.Hello(inventory=inventory).model_dump_json(exclude_none=True))
        assert json.loads(ws.recv(timeout=5))["type"] == "desired"
        wait_for(lambda: node(admin, node_id)["os"] == "Debian GNU/Linux 11", what="inventory")
