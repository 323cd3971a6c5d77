"""The agent watch's cheap rounds (services/agent_watch.py): between full rounds it reads only
the nodes whose state can have changed, and records the same agent-lost / agent-back events a
full round would. On each database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from voipcloud.services import agent_watch, cooperative
from voipcloud.services import presence as presence_module
from voipcloud.services.agent_watch import AgentWatch
from voipcloud.services.controller import Controller
from voipcloud.services.presence import Connectivity
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import events

ADMIN = "admin:admin"


@pytest.fixture
def controller(services: Controller) -> Controller:
    return services


def joined_node(controller: Controller, name: str, seen: datetime) -> int:
    node = controller.nodes.add(hostname=name, private_ip="10.0.0.5", actor=ADMIN)
    with controller.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, {node.id: seen})
    return node.id


def silent_just_past_the_window(controller: Controller, node_id: int) -> None:
    """The agent was last heard (stored and in presence) just before the missed-beats window."""
    presence = controller.agents.presence
    window = presence.heartbeat_interval * presence.missed_beats
    heard = datetime.now(UTC) - timedelta(seconds=window + 1)
    with controller.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, {node_id: heard})
    presence.beat(node_id, heard)


def recorded(controller: Controller) -> list[tuple[int, str]]:
    query = (
        select(events.c.node_id, events.c.operation)
        .where(events.c.operation.in_(("agent-lost", "agent-back")))
        .order_by(events.c.id)
    )
    with controller.ctx.db.read() as conn:
        return [(row.node_id, row.operation) for row in conn.execute(query)]


def reasons(controller: Controller) -> dict[int, str]:
    """Each node's newest agent-lost reason."""
    query = select(events.c.node_id, events.c.reason).where(events.c.operation == "agent-lost")
    with controller.ctx.db.read() as conn:
        return {row.node_id: row.reason for row in conn.execute(query.order_by(events.c.id))}


def test_rounds_between_full_ones_see_every_kind_of_change(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_rounds: list[int] = []
    watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    every = watch._agent_nodes
    monkeypatch.setattr(watch, "_agent_nodes", lambda conn: full_rounds.append(1) or every(conn))
    presence = controller.agents.presence
    now = datetime.now(UTC)
    a, b, c = (joined_node(controller, f"watch-{n}", now) for n in "abc")
    for node_id in (a, b, c):
        presence.opened(node_id, now)
    assert watch.check() == 0
    first = len(full_rounds)  # the first round reads every node; the next ones do not
    assert first >= 1

    presence.closed(a)  # a channel closes: lost at the next round
    assert watch.check() == 1
    assert recorded(controller) == [(a, "agent-lost")]
    assert reasons(controller)[a] == "its channel closed"  # what the operator reads: why
    presence.opened(a, datetime.now(UTC))  # and opens again: back
    assert watch.check() == 1
    assert recorded(controller)[-1] == (a, "agent-back")

    # an agent silent past the window while its channel is still open (stored and heard
    # last-seen times both just older than the window): lost, found by the stale-last-seen read
    silent_just_past_the_window(controller, b)
    assert watch.check() == 1
    assert recorded(controller)[-1] == (b, "agent-lost")
    assert reasons(controller)[b] == "no heartbeat for 30 s"  # the channel is still open

    # a node whose agent joined after the full round, then went: lost too
    d = joined_node(controller, "watch-d", datetime.now(UTC))
    presence.opened(d, datetime.now(UTC))
    assert watch.check() == 0
    presence.closed(d)
    assert watch.check() == 1
    assert recorded(controller)[-1] == (d, "agent-lost")

    assert watch.check() == 0  # nothing changed: nothing recorded again
    assert len(full_rounds) == first
    assert (c, "agent-lost") not in recorded(controller)


def test_an_agent_that_joined_and_never_opened_its_channel_is_lost_saying_so(
    controller: Controller,
) -> None:
    """The reason names what happened: an agent that joined (over REST) but never opened its
    channel did not have one close; one whose channel opened then closed did."""
    presence = controller.agents.presence
    window = presence.heartbeat_interval * presence.missed_beats
    long_ago = datetime.now(UTC) - timedelta(seconds=window + 1)
    joined_only = joined_node(controller, "joined-only", long_ago)
    presence.beat(joined_only, long_ago)  # heard here (its join), no channel ever
    had_one = joined_node(controller, "had-one", long_ago)
    presence.opened(had_one, long_ago)
    presence.closed(had_one)
    watch = AgentWatch(controller.ctx, presence, grace=0)
    assert watch.check() == 2
    assert reasons(controller) == {
        joined_only: "it joined but never opened its channel",
        had_one: "its channel closed",
    }


def test_too_many_named_nodes_make_a_full_round(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_watch, "MAX_CANDIDATE_IDS", 1)
    watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    presence = controller.agents.presence
    now = datetime.now(UTC)
    ids = [joined_node(controller, f"many-{n}", now) for n in range(3)]
    for node_id in ids:
        presence.opened(node_id, now)
    assert watch.check() == 0
    for node_id in ids:
        presence.closed(node_id)
    assert watch.check() == 3
    assert sorted(recorded(controller)) == sorted((n, "agent-lost") for n in ids)


def _gone(controller: Controller, count: int, name: str) -> list[int]:
    """Nodes whose agents joined and went long ago (a site down): stored last-seen times an
    hour old, no channel."""
    old = datetime.now(UTC) - timedelta(hours=1)
    return [joined_node(controller, f"{name}-{n}", old) for n in range(count)]


@pytest.mark.parametrize("clustered", [False, True], ids=["one controller", "several"])
def test_nodes_long_stale_and_recorded_lost_are_not_read_at_every_round(
    controller: Controller, clustered: bool
) -> None:
    watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    presence = controller.agents.presence
    # several controllers: a channel this process has no word of may be open elsewhere
    presence.clustered = clustered
    gone = _gone(controller, 30, "gone")
    assert watch.check() == 30  # the first (full) round records them lost
    assert watch.read >= 30
    assert watch.check() == 0
    assert watch.read == 0  # lost and still stale: nothing can have changed; not read
    # one that goes stale now is still read and recorded (the floor is a heartbeat under it)
    now = datetime.now(UTC)
    live = joined_node(controller, "live", now)
    presence.opened(live, now)
    assert watch.check() == 0
    silent_just_past_the_window(controller, live)
    assert watch.check() == 1
    assert recorded(controller)[-1] == (live, "agent-lost")
    assert watch.read == 1
    # and one of the gone comes back on a channel of this controller: named, back
    presence.opened(gone[0], datetime.now(UTC))
    assert watch.check() == 1
    assert recorded(controller)[-1] == (gone[0], "agent-back")
    if not clustered:
        return
    # another comes back through another controller, which announces it and flushes its
    # last-seen time: named, back at the next round
    with controller.ctx.db.write() as conn:
        fresh = datetime.now(UTC)
        node_rows.touch_last_seen(conn, {gone[1]: fresh})
    presence.remote_open("other-controller", {gone[1]})
    assert watch.check() == 1
    assert recorded(controller)[-1] == (gone[1], "agent-back")
    assert watch.read <= 3


def test_unannounced_returns_through_another_controller_are_found_by_the_full_round(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several controllers: an agent recorded lost that opened a channel elsewhere with no
    announcement this process heard (before it started) is back at the next full round."""
    watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    controller.agents.presence.clustered = True
    gone = _gone(controller, 3, "away")
    assert watch.check() == 3
    with controller.ctx.db.write() as conn:  # its holder flushes a fresh last-seen time
        fresh = datetime.now(UTC)
        node_rows.touch_last_seen(conn, {gone[2]: fresh})
    assert watch.check() == 0  # not named: not read
    assert watch.read == 0
    monkeypatch.setattr(watch, "_next_full", 0.0)  # FULL_ROUND_SECONDS later
    assert watch.check() == 1
    assert recorded(controller)[-1] == (gone[2], "agent-back")


def test_a_round_cut_short_or_in_grace_reads_every_stale_node_next_time(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_watch, "MAX_PER_ROUND", 4)
    watch = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    gone = _gone(controller, 10, "cut")
    assert watch.check() == 4  # the rest wait: the round was cut at MAX_PER_ROUND
    assert watch.stale_floor is None
    assert watch.check() == 4
    assert watch.check() == 2
    assert sorted(n for n, op in recorded(controller) if op == "agent-lost") == sorted(gone)
    assert watch.stale_floor is not None
    # a controller shedding opens records no loss of agents it has not heard: those rounds
    # are not complete either; in the grace after start, no round runs
    waiting = AgentWatch(controller.ctx, controller.agents.presence, grace=0)
    waiting.busy = lambda: True
    assert waiting.check() == 0
    assert waiting.read > 0
    assert waiting.stale_floor is None
    starting = AgentWatch(controller.ctx, controller.agents.presence, grace=3600)
    assert starting.check() == 0
    assert starting.read == 0


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_start_grace_lasts_while_the_fleet_is_still_coming_back(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted controller whose agents take longer than its grace to come back (50,000 on
    two cores) records no lost/back pair for the ones still on their way; the ones that do
    not come back are recorded lost once the returns stop."""
    clock = FakeMonotonic()
    monkeypatch.setattr(agent_watch, "time", clock)
    presence = controller.agents.presence
    fleet = _gone(controller, 60, "fleet")  # connected before the restart, not heard since
    watch = AgentWatch(controller.ctx, presence, grace=60)

    def back(node_ids: list[int]) -> None:
        for node_id in node_ids:
            presence.opened(node_id, datetime.now(UTC))
        controller.agents.flush_presence()  # as every few seconds: their last-seen stored

    assert watch.check() == 0  # t=0, in the grace: nobody lost
    clock.now += 30
    back(fleet[:20])
    assert watch.check() == 0
    clock.now += 31  # the grace has passed, but 30 agents came back in the last window
    back(fleet[20:50])
    assert watch.check() == 0
    clock.now += 31  # no agent came back in the last window: the other 10 are lost
    assert watch.check() == 10
    lost = sorted(n for n, op in recorded(controller) if op == "agent-lost")
    assert lost == sorted(fleet[50:])
    assert all(op == "agent-lost" for _, op in recorded(controller))  # no lost/back pairs
    # the grace is over for good: an agent gone now is lost at once, the returning are back
    presence.closed(fleet[0])
    back(fleet[50:52])
    assert watch.check() == 3
    assert set(recorded(controller)[-3:]) == {
        (fleet[0], "agent-lost"),
        (fleet[50], "agent-back"),
        (fleet[51], "agent-back"),
    }


def test_the_start_grace_ends_when_the_returns_are_a_trickle(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr(agent_watch, "time", clock)
    presence = controller.agents.presence
    fleet = _gone(controller, 50, "slow")
    watch = AgentWatch(controller.ctx, presence, grace=60)
    assert watch.check() == 0
    clock.now += 61  # fewer than RETURNING_MIN back in the last window: not a fleet coming back
    few = agent_watch.RETURNING_MIN - 1
    for node_id in fleet[:few]:
        presence.opened(node_id, datetime.now(UTC))
    controller.agents.flush_presence()
    assert watch.check() == 50 - few
    assert sorted(n for n, _ in recorded(controller)) == sorted(fleet[few:])


def test_the_start_grace_never_lasts_past_its_limit(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr(agent_watch, "time", clock)
    monkeypatch.setattr(agent_watch, "GRACE_LIMIT_SECONDS", 120.0)
    presence = controller.agents.presence
    fleet = _gone(controller, 100, "limit")
    watch = AgentWatch(controller.ctx, presence, grace=60)
    assert watch.check() == 0
    returned = 0
    for at in (31, 62, 93):  # 20 back every 31 s: still coming back, spared until 120 s
        clock.now = 1000.0 + at
        for node_id in fleet[returned : returned + 20]:
            presence.opened(node_id, datetime.now(UTC))
        controller.agents.flush_presence()
        returned += 20
        assert watch.check() == 0, at
    clock.now = 1000.0 + 124
    for node_id in fleet[returned : returned + 20]:
        presence.opened(node_id, datetime.now(UTC))
    controller.agents.flush_presence()
    returned += 20
    assert watch.check() == 100 - returned  # past the limit: the 20 not back are lost


def test_a_channel_opening_while_a_round_reads_is_not_recorded_lost(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a 50,000-agent reconnect: a round took seconds, an agent's channel opened here
    between the round's reading of its state (lost: not back yet) and of whether this process
    had heard it (yes, now), and it was recorded lost in the grace, then back: 1,100 pairs.
    The two are one snapshot now. (Rounds that spare agents not heard here run while the
    controller sheds opens; the start's grace runs none.)"""
    presence = controller.agents.presence
    fleet = _gone(controller, 3, "racing")  # connected before a restart, not heard since
    watch = AgentWatch(controller.ctx, presence, grace=0)
    watch._connected = dict.fromkeys(fleet, True)  # as recorded before
    watch.busy = lambda: True  # the controller sheds: agents told to come back are due
    read = presence.states

    def read_then_the_agents_connect(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        for node_id in fleet:  # their channels open here while the round goes on
            presence.opened(node_id, datetime.now(UTC))
        return found

    monkeypatch.setattr(presence, "states", read_then_the_agents_connect)
    assert watch.check() == 0
    monkeypatch.setattr(presence, "states", read)
    assert watch.check() == 0
    assert recorded(controller) == []


def test_presence_states_agree_with_state(controller: Controller) -> None:
    presence = controller.agents.presence
    now = datetime.now(UTC)
    window = presence.heartbeat_interval * presence.missed_beats
    stale = now - timedelta(seconds=window + 5)
    here, silent, away = 10_001, 10_002, 10_003
    presence.opened(here, now)
    presence.opened(silent, stale)
    stored: dict[int, datetime | None] = {here: None, silent: stale, away: now, 10_004: None}
    found = presence.states(stored, now)
    for node_id, last in stored.items():
        assert found[node_id][0] is presence.state(node_id, last, now)[0]
    assert found[here] == (Connectivity.CONNECTED, True)
    assert found[silent] == (Connectivity.LOST, True)
    assert found[away][1] is False
    assert found[10_004] == (Connectivity.NEVER, False)


def test_in_the_start_grace_an_agent_heard_here_that_goes_is_lost_at_once(
    controller: Controller,
) -> None:
    presence = controller.agents.presence
    away = _gone(controller, 20, "away")  # not back yet after the restart: not even read
    node = joined_node(controller, "here", datetime.now(UTC))
    presence.opened(node, datetime.now(UTC))
    watch = AgentWatch(controller.ctx, presence, grace=3600)
    assert watch.check() == 0
    presence.closed(node)
    assert watch.check() == 1
    assert watch.read == 1  # the node heard here, not the twenty on their way
    assert recorded(controller) == [(node, "agent-lost")]
    assert reasons(controller)[node] == "its channel closed"
    presence.opened(node, datetime.now(UTC))
    assert watch.check() == 1
    assert recorded(controller)[-1] == (node, "agent-back")
    assert all(node_id not in away for node_id, _ in recorded(controller))


def test_a_full_round_gives_the_interpreter_away_as_it_goes(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full round reads, judges and walks every live node that had an agent; it pauses every
    so many of them (services/cooperative.py), so that the requests' threads are not kept
    waiting by it, and still records what it would without pausing: here 600 nodes, every
    50, one of them lost."""
    now = datetime.now(UTC)
    ids = [
        row.id
        for row in (
            controller.nodes.add(hostname=f"round-{n:03d}", private_ip="10.0.0.5", actor=ADMIN)
            for n in range(600)
        )
    ]
    with controller.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, dict.fromkeys(ids, now))
    presence = controller.agents.presence
    for node_id in ids:
        presence.opened(node_id, now)
    watch = AgentWatch(controller.ctx, presence, grace=0)
    assert watch.check() == 0  # the first round: the baseline, every node connected
    monkeypatch.setattr(cooperative, "EVERY", 50)
    monkeypatch.setattr(presence_module, "STATES_BATCH", 50)
    pauses: list[str] = []
    monkeypatch.setattr(cooperative, "pause", lambda: pauses.append("pause"))
    presence.closed(ids[7])
    watch._next_full = 0.0  # the next round is a full one
    assert watch.check() == 1
    assert watch.read == len(ids)
    assert recorded(controller) == [(ids[7], "agent-lost")]
    # the rows read, the nodes judged, and the recorded nodes walked: 12 pauses each at least
    assert len(pauses) >= 3 * len(ids) // 50, len(pauses)
