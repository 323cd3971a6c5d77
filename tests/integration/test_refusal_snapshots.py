"""The "a refusal changes nothing" snapshot (live_controller.snapshot) sees every change a request
can make, and not the events the controller's agent watch records on its own meanwhile.

CI, 2026-12-01 (PostgreSQL): a refused regenerate-session-key "changed something" because the
previous test's agent, joined without a channel, was recorded lost (an `agent-lost` event) a few
seconds later, between the refusal's two snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.live_controller import (
    API,
    ControlledApi,
    add_node,
    assign,
    expect,
    running_app,
    snapshot,
    unique,
)


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[ControlledApi]:
    with running_app(tmp_path, database_url) as running:
        yield running


def joined_agent(live: ControlledApi) -> int:
    """A node whose agent joins (REST) and opens no channel: the watch records it lost soon."""
    node_id: int = add_node(live.client, unique("watched"))["node_id"]
    key = assign(live.client, node_id, "jabber")["session_key"]
    with live.anonymous() as agent:
        expect(agent.post(f"{API}/agent/join", json={"session_key": key}), 200)
    return node_id


def total(live: ControlledApi, **params: str | int) -> int:
    count: int = expect(live.client.get(f"{API}/events", params=params), 200)["total"]
    return count


def wait_for_lost(live: ControlledApi, node_id: int) -> None:
    deadline = time.monotonic() + 60
    while total(live, node_id=node_id, operation="agent-lost") == 0:
        assert time.monotonic() < deadline, "the watch never recorded the agent lost"
        time.sleep(0.2)


def test_an_agent_recorded_lost_between_two_snapshots_is_not_a_change(
    live: ControlledApi,
) -> None:
    other = add_node(live.client, unique("bystander"))["node_id"]
    watched = joined_agent(live)
    before = total(live)
    snapshots = (snapshot(live.client, other), snapshot(live.client, watched))
    wait_for_lost(live, watched)
    assert total(live) > before  # the watch's event is there...
    # ...and neither the other node's snapshot nor the watched node's own sees it
    assert (snapshot(live.client, other), snapshot(live.client, watched)) == snapshots


def test_an_administrators_event_between_two_snapshots_is_a_change(live: ControlledApi) -> None:
    node_id = add_node(live.client, unique("changed"))["node_id"]
    watched = joined_agent(live)
    before = snapshot(live.client, node_id)
    wait_for_lost(live, watched)
    expect(live.client.post(f"{API}/nodes/{node_id}/actions/regenerate-session-key"), 200)
    after = snapshot(live.client, node_id)
    assert after.all_events == before.all_events + 1
    assert after.node_events == before.node_events + 1
    assert after.node["session_key"] != before.node["session_key"]
