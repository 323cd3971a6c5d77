"""Every sort of the plain listing (no filter) is the sort asked for, in both directions, on
each database: the fast path for the opening order (every live node by NodeID) must not
answer any other sort (it once did: `?sort=-hostname` came back by NodeID)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voipcloud.domain.filters import SORT_KEYS, NodeFilter
from voipcloud.domain.model import Node
from voipcloud.services.controller import Controller
from voipcloud.store import nodes as node_rows

ADMIN = "admin:admin"


@pytest.fixture
def controller(services: Controller) -> Controller:
    built, db = services, services.ctx.db
    # host names and addresses in an order other than their NodeIDs'; last-seen times too
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(12):
        node = built.nodes.add(
            hostname=f"sort-{(n * 7) % 12:02d}", private_ip=f"10.8.{(n * 5) % 12}.1", actor=ADMIN
        )
        with db.write() as conn:
            seen = start + timedelta(minutes=(n * 5) % 12)
            node_rows.touch_last_seen(conn, {node.id: seen})
    return built


def _value(node: Node, key: str) -> object:
    value = getattr(node, key)  # (addresses sort as the text they are stored as)
    return str(value) if key == "status" else value


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("key", SORT_KEYS)
def test_the_plain_listing_is_in_the_order_asked_for(
    controller: Controller, key: str, descending: bool
) -> None:
    every = controller.nodes.list(NodeFilter(limit=500)).items
    assert len(every) == 13  # the controller's own node and the twelve
    shown = controller.nodes.list(NodeFilter(limit=6, sort=f"-{key}" if descending else key)).items
    assert len(shown) == 6
    # (where a node without a last-seen time goes differs by database: compared without it)
    values = [v for v in (_value(n, key) for n in shown) if v is not None]
    assert values == sorted(values, reverse=descending)  # type: ignore[type-var]
    if key in ("id", "hostname", "private_ip"):  # unique: exactly the first six of all
        ordered = sorted(every, key=lambda n: _value(n, key), reverse=descending)  # type: ignore[arg-type, return-value]
        assert [n.id for n in shown] == [n.id for n in ordered[:6]]
