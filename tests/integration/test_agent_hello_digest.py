"""The cheap hello (issue 15), over real HTTP and WebSocket on SQLite and PostgreSQL.

An agent with the "inventory-digest" feature sends only the SHA-256 of its inventory in its
hello; the controller writes nothing when its stored copy has that digest, and otherwise asks
(`inventory-request`) and stores the answer. The digest is stored with the inventory
(`nodes.inventory_digest`), so a controller started again answers a hello from it without
reading the components back (a row written before the column existed: from its components).
An older agent still sends the whole inventory,
which is written only when it differs from the stored one. A write shows as a new
`updated_at` of the node (the inventory is the only thing these tests change).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, update
from websockets.sync.client import ClientConnection

from tests.conftest import LiveApi
from tests.integration.test_agent_security import (
    add_node,
    assign,
    channel,
    close_code,
    expect,
    join,
    node,
)
from tests.support.processes import wait_for
from voipcloud import protocol
from voipcloud.api.app import build_controller
from voipcloud.services.controller import Controller
from voipcloud.store import channels as channel_rows
from voipcloud.store.tables import nodes

FIRST = protocol.Inventory(
    os="Debian GNU/Linux 12",
    kernel="Linux 6.1.0-test",
    version="1.0.0",
    components=[protocol.ComponentInfo(name="kamailio", version="5.6")],
)
CHANGED = FIRST.model_copy(update={"kernel": "Linux 6.1.0-newer"})
FEATURES = [protocol.FEATURE_NODE_ADDRESSES, protocol.FEATURE_INVENTORY_DIGEST]


def hello_digest(inventory: protocol.Inventory) -> str:
    hello = protocol.Hello(inventory_digest=protocol.inventory_digest(inventory), features=FEATURES)
    return hello.model_dump_json(exclude_none=True)


def hello_full(inventory: protocol.Inventory) -> str:
    return protocol.Hello(inventory=inventory).model_dump_json(exclude_none=True)


def until_ack(ws: ClientConnection, sentinel: str) -> list[dict[str, Any]]:
    """Every message up to the ack of a sentinel outcome sent after the hello: the controller
    handles the hello (and sends any inventory-request) before it reads the sentinel."""
    ws.send(protocol.OutcomeReport(operation_id=sentinel, success=True).model_dump_json())
    seen = []
    for _ in range(20):
        message = json.loads(ws.recv(timeout=5))
        seen.append(message)
        if message["type"] == "ack" and message["operation_id"] == sentinel:
            return seen
    raise AssertionError(f"no ack of {sentinel}: {seen}")


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def joined(api: LiveApi, hostname: str) -> tuple[int, str]:
    nid = add_node(api.client, hostname)
    key = assign(api.client, nid, "wk")
    answer = expect(join(api, key, inventory=FIRST.model_dump()), 200)  # the join stores it
    return nid, str(answer["agent_token"])


def test_hello_with_the_digest_writes_the_inventory_once_and_again_when_it_changed(
    api: LiveApi,
) -> None:
    nid, token = joined(api, "digest-01")
    stored = node(api.client, nid)
    assert stored["kernel"] == FIRST.kernel

    # the same inventory: no request, nothing written (on every reconnect)
    for attempt in range(2):
        with channel(api.base_url, token) as ws:
            ws.send(hello_digest(FIRST))
            assert "inventory-request" not in kinds(until_ack(ws, f"same-{attempt}"))
    assert node(api.client, nid)["updated_at"] == stored["updated_at"]

    # changed: the controller asks, the agent answers with the inventory, it is stored
    with channel(api.base_url, token) as ws:
        ws.send(hello_digest(CHANGED))
        assert "inventory-request" in kinds(until_ack(ws, "changed"))
        ws.send(protocol.InventoryUpdate(inventory=CHANGED).model_dump_json())
        rewritten = wait_for(
            lambda: (n := node(api.client, nid))["kernel"] == CHANGED.kernel and n,
            what="the changed inventory to be stored",
        )
    assert rewritten["updated_at"] > stored["updated_at"]
    assert stored_digest(api, nid) == protocol.inventory_digest(CHANGED)

    # and from then on that one is known: no request, no write
    with channel(api.base_url, token) as ws:
        ws.send(hello_digest(CHANGED))
        assert "inventory-request" not in kinds(until_ack(ws, "known"))
    assert node(api.client, nid)["updated_at"] == rewritten["updated_at"]


@contextmanager
def started_again(api: LiveApi) -> Iterator[Controller]:
    """A controller with nothing in memory (as after a restart), on the same database."""
    controller = build_controller(api.settings)
    try:
        yield controller
    finally:
        controller.ctx.db.dispose()


def stored_digest(api: LiveApi, nid: int) -> str | None:
    with started_again(api) as controller, controller.ctx.db.read() as conn:
        return conn.execute(select(nodes.c.inventory_digest).where(nodes.c.id == nid)).scalar()


def known(controller: Controller, nid: int) -> tuple[dict[str, Any], bool, bool]:
    """The inventory row the channels read, and whether the first and the changed inventory
    are known from it."""
    with controller.ctx.db.read() as conn:
        row = channel_rows.inventories_of(conn, [nid])[nid]
    return (
        row,
        controller.agents.inventory_known(nid, protocol.inventory_digest(FIRST)),
        controller.agents.inventory_known(nid, protocol.inventory_digest(CHANGED)),
    )


def test_a_controller_started_again_knows_the_inventory_from_the_stored_digest(
    api: LiveApi,
) -> None:
    nid, _token = joined(api, "digest-04")
    first = protocol.inventory_digest(FIRST)
    assert stored_digest(api, nid) == first  # written by the join, with the inventory

    with started_again(api) as fresh:
        row, first_known, changed_known = known(fresh, nid)
    assert row["inventory_digest"] == first
    assert row["components"] is None  # not read back: the digest decides
    assert (first_known, changed_known) == (True, False)

    # a row stored before the digest was (NULL): checked from its components, as before
    with started_again(api) as legacy:
        with legacy.ctx.db.write() as conn:
            conn.execute(update(nodes).where(nodes.c.id == nid).values(inventory_digest=None))
        row, first_known, changed_known = known(legacy, nid)
    assert row["components"] == [c.model_dump() for c in FIRST.components]
    assert (first_known, changed_known) == (True, False)


def test_an_older_agent_sending_the_whole_inventory_is_written_only_when_it_changed(
    api: LiveApi,
) -> None:
    nid, token = joined(api, "digest-02")
    stored = node(api.client, nid)
    with channel(api.base_url, token) as ws:
        ws.send(hello_full(FIRST))
        assert "inventory-request" not in kinds(until_ack(ws, "full-same"))
        # the periodic inventory message, unchanged: not written either
        ws.send(protocol.InventoryUpdate(inventory=FIRST).model_dump_json())
        until_ack(ws, "update-same")
    assert node(api.client, nid)["updated_at"] == stored["updated_at"]

    with channel(api.base_url, token) as ws:
        ws.send(hello_full(CHANGED))
        assert "inventory-request" not in kinds(until_ack(ws, "full-changed"))
    rewritten = node(api.client, nid)
    assert rewritten["kernel"] == CHANGED.kernel
    assert rewritten["updated_at"] > stored["updated_at"]


def test_a_hello_with_neither_inventory_nor_digest_is_refused(api: LiveApi) -> None:
    _nid, token = joined(api, "digest-03")
    with channel(api.base_url, token) as ws:
        ws.send(json.dumps({"type": "hello", "outcomes": []}))
        assert close_code(ws) == protocol.CLOSE_POLICY
