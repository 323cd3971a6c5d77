"""Agent lost / back as events: the connectivity the listing shows, watched every few seconds.

Presence (services/presence.py) knows at any moment whether a node's agent is connected or
lost, but kept no record of the moment it changed. This watch samples it for every live node
that has had an agent, and records an `agent-lost` event when a connected agent becomes lost
and an `agent-back` event when a lost one is connected again (actor `controller`; the node's
status is unchanged). Bounded: one event per node per change, at most `MAX_PER_ROUND` per
round (it samples every few seconds: an agent gone and back between two samples is not
seen). Its memory is rebuilt from each node's last such event when its first round runs.

After a start, agents this process has not heard are not declared lost during a grace period
(`grace`: the time agents need to reconnect to a restarted controller), so a controller restart
records no lost/back pairs. Its rounds then read only the nodes heard here whose channel closed
or that were recorded lost (an agent that connected and went is recorded at once), and count
the nodes whose stored last-seen time is stale (one COUNT: reading those rows every round was
40 % of the duty worker's interpreter during a 50,000-agent reconnect, py-spy). The grace lasts
past `grace` while the fleet is still coming back: as long as that count fell by
`RETURNING_MIN` or more over the last missed-beats window (50,000 agents reconnecting take
minutes on two cores; a fixed minute recorded 17,000 lost/back pairs for agents that were on
their way), and at most `GRACE_LIMIT_SECONDS` after start; once it has ended it does not come
back, and the next round reads every node. While the controller sheds channel opens (`busy`:
agents it told to come back later are on their way), rounds run but spare the agents this
process has not heard (docs/reliability.md "Mass reconnect").

A round reads only the nodes whose state can have changed (docs/benchmarks.md, "Idle upkeep"):
those whose stored last-seen time is older than the missed-beats window, those recorded
connected whose channel presence no longer knows open, and those recorded lost whose channel is
open again (here, or as another controller announced: one opened elsewhere unannounced is
found by the next full round). Every other node is as recorded: connected (a channel, heard
within the window) or lost (no channel). A full round (every live node) comes after the
start's grace and every `FULL_ROUND_SECONDS`, and forgets deleted nodes; at 50,000 nodes a full
round costs about 0.4 s of a core, a round of candidates a few milliseconds.

The stale read is bounded below too: a stored last-seen time only grows, so a node that went
stale before the last complete round was read by that round (its event recorded, or no change),
and is not read again at every round while it stays stale (thousands of agents gone, e.g. a
site down, made each round a full one: `stale_floor`). A round is complete when it recorded
every change it saw and no grace applied; after any other round the next reads every stale
node again. The floor keeps one heartbeat interval of slack (two controllers' flushes of one
node may land out of order); a node whose stored time jumped back further is found by the next
full round.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from voipcloud.services import cooperative
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.presence import Connectivity, Presence
from voipcloud.store import events
from voipcloud.store.tables import events as events_table
from voipcloud.store.tables import node_presence, nodes, nodes_with_presence

AGENT_LOST, AGENT_BACK = "agent-lost", "agent-back"
MAX_PER_ROUND = 1000
FULL_ROUND_SECONDS = 300.0
MAX_CANDIDATE_IDS = 2000  # more nodes lost or closed than this: a full round instead
RETURNING_MIN = 10  # agents back per missed-beats window that keep the start's grace going
GRACE_LIMIT_SECONDS = 900.0  # the start's grace never lasts longer than this
# a node's agent as the watch reads it: NodeID, stored last-seen time (its presence row), status
_last_seen = node_presence.c.last_seen
_AGENTS = select(nodes.c.id, _last_seen, nodes.c.status).select_from(nodes_with_presence)


def _by_node(conn: Any, query: Any) -> dict[int, Any]:
    """NodeID -> (stored last-seen time, status) of `_AGENTS` rows, read cooperatively: a full
    round reads every live node (services/cooperative.py)."""
    return {i: (seen, status) for i, seen, status in cooperative.rows(conn.execute(query))}


class AgentWatch:
    def __init__(self, ctx: Context, presence: Presence, *, grace: float) -> None:
        self._ctx = ctx
        self._presence = presence
        self._started = time.monotonic()
        self._grace_until = self._started + grace
        self._grace_over = grace <= 0
        self._absent: deque[tuple[float, int]] = deque()  # (monotonic time, agents not back)
        self._connected: dict[int, bool] | None = None  # node id -> last recorded state
        self._next_full = 0.0  # monotonic time of the next full round
        # stale nodes whose stored last-seen time is older were read by a complete round
        self.stale_floor: datetime | None = None
        self.read = 0  # nodes the last round read (tests and benchmarks read it)
        # True while agents told "Retry-After" may still be on their way (api/agent_channel.py)
        self.busy: Callable[[], bool] | None = None

    def _baseline(self, conn: Any) -> dict[int, bool]:
        """Each node's state as its last agent-lost/agent-back event left it (none: connected
        if an agent ever joined)."""
        e = events_table
        last = (
            select(func.max(e.c.id))
            .where(e.c.operation.in_((AGENT_LOST, AGENT_BACK)))
            .group_by(e.c.node_id)
        )
        lost = {
            node_id
            for node_id, operation in cooperative.rows(
                conn.execute(select(e.c.node_id, e.c.operation).where(e.c.id.in_(last)))
            )
            if operation == AGENT_LOST
        }
        return {node_id: node_id not in lost for node_id in self._agent_nodes(conn)}

    def forget(self) -> None:
        """Another controller records these events now: when this one takes over again, it
        starts from what the events say, not from what it remembered."""
        self._connected = None
        self._next_full = 0.0
        self.stale_floor = None

    def _candidates(self, conn: Any, known: dict[int, bool], now: datetime) -> dict[int, Any]:
        """The live nodes whose state can differ from the one recorded (the module's
        docstring), or None when there are too many to name: read them all."""
        # recorded connected, or heard here since the last full round (not recorded yet):
        # lost once their channel closes; recorded lost: back once a channel is known open
        # (here, or announced by another controller). One that several controllers cannot
        # rule out (opened elsewhere before this process started, unannounced) is not named:
        # with 47,500 agents recorded lost that was every one of them, so every round read the
        # whole fleet (0.4-0.55 s of the duty worker each 2 s at 50,000 nodes); the next full
        # round (FULL_ROUND_SECONDS) finds it back from the last-seen time its holder flushes
        up = [node_id for node_id, connected in known.items() if connected]
        up += [node_id for node_id in self._presence.heard() if node_id not in known]
        lost = [node_id for node_id, connected in known.items() if not connected]
        named = self._presence.without_channel(up) | self._presence.announced_open(lost)
        if len(named) > MAX_CANDIDATE_IDS:
            return self._agent_nodes(conn)
        window = timedelta(seconds=self._presence.heartbeat_interval * self._presence.missed_beats)
        stale = _last_seen < now - window
        if self.stale_floor is not None:
            stale = and_(stale, _last_seen >= self.stale_floor)
        query = _AGENTS.where(
            nodes.c.status != "Deleted",
            _last_seen.is_not(None),
            or_(stale, nodes.c.id.in_(named)) if named else stale,
        )
        return _by_node(conn, query)

    def _heard_here(self, conn: Any, known: dict[int, bool]) -> dict[int, Any]:
        """In the grace after start, the only nodes whose change can be recorded: those whose
        agent this process heard and whose channel is closed (lost), or that were recorded
        lost and are heard here again (back); the others are not read at all."""
        heard = self._presence.heard()
        named = self._presence.without_channel(heard)
        named |= {node_id for node_id in heard if known.get(node_id) is False}
        if not named:
            return {}
        ids = sorted(named)[:MAX_CANDIDATE_IDS]  # any more: the next rounds
        query = _AGENTS.where(
            nodes.c.status != "Deleted", _last_seen.is_not(None), nodes.c.id.in_(ids)
        )
        return _by_node(conn, query)

    @staticmethod
    def _agent_nodes(conn: Any) -> dict[int, Any]:
        query = _AGENTS.where(nodes.c.status != "Deleted", _last_seen.is_not(None))
        return _by_node(conn, query)

    def check(self) -> int:
        """One round; returns how many events were recorded."""
        now = self._ctx.clock()
        with self._ctx.db.read() as conn:
            starting = self._starting(conn)
            full = not starting and (self._connected is None or time.monotonic() >= self._next_full)
            if self._connected is None:
                self._connected = self._baseline(conn)
            if starting:
                live = self._heard_here(conn, self._connected)
            elif full:
                live = self._agent_nodes(conn)
                self._next_full = time.monotonic() + FULL_ROUND_SECONDS
            else:
                live = self._candidates(conn, self._connected, now)
        self.read = len(live)
        known = self._connected
        # presence knows of agents that joined since the last flush of last_seen; each
        # node's state and whether this process heard its agent are read at one instant: a
        # channel that opens here while the round runs is not "heard here and lost"
        judged = self._presence.states(
            {node_id: seen for node_id, (seen, _status) in live.items()}, now
        )
        states = {node_id: state for node_id, (state, _heard) in judged.items()}
        heard = {node_id for node_id, (_state, here) in judged.items() if here}
        in_grace = starting or (self.busy is not None and self.busy())
        changes: list[tuple[int, str, str, str]] = []
        if full:
            for node_id in cooperative.items(list(known)):
                if node_id not in live:
                    del known[node_id]  # deleted (or never had an agent)
        for node_id, state in cooperative.items(states.items()):
            was = known.get(node_id)
            status = live[node_id][1]
            if state is Connectivity.CONNECTED:
                if was is False:
                    changes.append((node_id, AGENT_BACK, status, "the agent is connected again"))
                elif was is None:
                    known[node_id] = True
            elif state is Connectivity.LOST:
                heard_here = node_id in heard
                if was is None:  # first seen lost (e.g. joined and went between two rounds)
                    known[node_id] = True
                    was = True
                if was and (heard_here or not in_grace):
                    changes.append((node_id, AGENT_LOST, status, self._why_lost(node_id)))
        complete = len(changes) <= MAX_PER_ROUND and not in_grace
        changes = changes[:MAX_PER_ROUND]
        if not changes:
            self._round_done(now, complete)
            return 0
        with self._ctx.db.write() as conn:
            for node_id, operation, status, reason in changes:
                events.append(
                    conn,
                    at=now,
                    actor=CONTROLLER_ACTOR,
                    node_id=node_id,
                    operation=operation,
                    status_before=status,
                    status_after=status,
                    reason=reason,
                )
        for node_id, operation, _status, _reason in changes:  # recorded: remember
            known[node_id] = operation == AGENT_BACK
        self._round_done(now, complete)
        return len(changes)

    def _why_lost(self, node_id: int) -> str:
        if self._presence.without_channel([node_id]):
            if self._presence.channel_closed(node_id):
                return "its channel closed"
            return "it joined but never opened its channel"
        window = self._presence.heartbeat_interval * self._presence.missed_beats
        return f"no heartbeat for {window:g} s"

    def _starting(self, conn: Any) -> bool:
        """Whether the grace after start still holds (the module's docstring): it lasts while
        the count of stale nodes falls by `RETURNING_MIN` or more per missed-beats window."""
        if self._grace_over:
            return False
        now = time.monotonic()
        window = self._presence.heartbeat_interval * self._presence.missed_beats
        absent = self._stale_count(conn, window)
        while len(self._absent) > 1 and self._absent[1][0] <= now - window:
            self._absent.popleft()  # the first: the newest sample at least a window old
        returning = now < self._grace_until or (
            now < self._started + GRACE_LIMIT_SECONDS
            and bool(self._absent)
            and self._absent[0][1] - absent >= RETURNING_MIN
        )
        self._absent.append((now, absent))
        if not returning:
            self._grace_over = True
            self._absent.clear()
        return returning

    def _stale_count(self, conn: Any, window: float) -> int:
        """Live nodes whose agent joined once and whose stored last-seen time is older than
        the window: the agents not back yet (and those long gone, a constant)."""
        cutoff = self._ctx.clock() - timedelta(seconds=window)
        query = (
            select(func.count())
            .select_from(nodes_with_presence)
            .where(nodes.c.status != "Deleted", _last_seen < cutoff)
        )
        return int(conn.execute(query).scalar_one())

    def _round_done(self, now: datetime, complete: bool) -> None:
        """After a round whose changes are recorded: a complete one raises the stale floor to
        the nodes that go stale from now on; any other makes the next read every stale node."""
        if not complete:
            self.stale_floor = None
            return
        presence = self._presence
        window = presence.heartbeat_interval * presence.missed_beats
        self.stale_floor = now - timedelta(seconds=window + presence.heartbeat_interval)
