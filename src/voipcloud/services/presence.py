"""Agent connectivity kept in memory: a heartbeat costs a dict write, not a database write.

The last-seen times are flushed to the database in one batch every few seconds, so a
restart loses at most that much, and the listing can still say when a node was last seen.

Several controllers on one PostgreSQL (services/cluster.py): an agent's channel is held by one
of them. The others learn of its opening and closing from the cluster's announcements
(`remote_open` / `remote_closed`) and read its last-seen time from the database, so every
controller answers the same connectivity.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum

from voipcloud.services import cooperative
from voipcloud.services.role_health import RoleHealthBook

STATES_BATCH = 500  # nodes judged per hold of the lock (`Presence.states`), then a pause


class Connectivity(StrEnum):
    CONNECTED = "connected"
    LOST = "lost"
    NEVER = "never"  # no agent has joined yet


class Presence:
    def __init__(self, *, heartbeat_interval: float, missed_beats: int) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.missed_beats = missed_beats
        self._lock = threading.Lock()
        self._seen: dict[int, datetime] = {}
        self._unflushed: dict[int, datetime] = {}
        self._connected: dict[int, int] = {}  # node id -> open channels
        self.role_health = RoleHealthBook()  # per-role health the agents report
        # several controllers: node id -> (controller, channel open) as last announced
        self._remote: dict[int, tuple[str, bool]] = {}
        self.clustered = False  # set when the database is shared (PostgreSQL)
        # an agent held by another controller is seen through the last-seen time that
        # controller flushes every few seconds: allowed this much more age (set by the app)
        self.remote_slack = 0.0
        # called with ("open" | "closed", node id) when this process's first channel of a
        # node opens or its last one closes (the cluster announces it to the others)
        self.listeners: list[Callable[[str, int], None]] = []

    def beat(self, node_id: int, now: datetime) -> None:
        with self._lock:
            self._seen[node_id] = now
            self._unflushed[node_id] = now

    def opened(self, node_id: int, now: datetime) -> None:
        with self._lock:
            first = node_id not in self._connected
            self._connected[node_id] = self._connected.get(node_id, 0) + 1
            self._seen[node_id] = now
            self._unflushed[node_id] = now
        if first:
            for listener in self.listeners:
                listener("open", node_id)

    def closed(self, node_id: int) -> None:
        with self._lock:
            left = self._connected.get(node_id, 1) - 1
            if left > 0:
                self._connected[node_id] = left
            else:
                self._connected.pop(node_id, None)
                self._remote[node_id] = ("", False)  # "" is this process
        if left <= 0:
            for listener in self.listeners:
                listener("closed", node_id)

    def local_channels(self) -> set[int]:
        """The nodes whose agents hold a channel to this process."""
        with self._lock:
            return set(self._connected)

    def local_count(self) -> int:
        """How many nodes' agents hold a channel to this process (no copy: it is read at
        every channel's open and close)."""
        return len(self._connected)

    def remote_open(self, controller: str, node_ids: set[int]) -> None:
        """Another controller announced that it holds these nodes' channels."""
        with self._lock:
            for node_id in node_ids:
                self._remote[node_id] = (controller, True)

    def remote_closed(self, controller: str, node_ids: set[int]) -> None:
        """Another controller announced these channels closed; an announcement of a
        channel held by a third controller since is not undone by it."""
        with self._lock:
            for node_id in node_ids:
                holder = self._remote.get(node_id)
                if holder is None or holder[0] == controller:
                    self._remote[node_id] = (controller, False)

    def forget(self, node_id: int) -> None:
        with self._lock:
            self._seen.pop(node_id, None)
            self._unflushed.pop(node_id, None)
            self._connected.pop(node_id, None)
            self._remote.pop(node_id, None)

    def drain(self) -> dict[int, datetime]:
        with self._lock:
            pending, self._unflushed = self._unflushed, {}
        return pending

    def _channel_open(self, node_id: int) -> bool:
        """With the lock held: does the node's agent hold a channel, here or (as announced)
        to another controller? Nothing announced, with several controllers: trust the
        last-seen time its holder flushes if this process started after the channel opened
        (never heard of the agent); an agent heard here (it joined here) has no channel until
        one is announced."""
        known = self._known_channel(node_id)
        if known is not None:
            return known
        return self.clustered and node_id not in self._seen

    def _known_channel(self, node_id: int) -> bool | None:
        """With the lock held: whether the node's agent holds a channel here or, as the last
        word another controller announced about it, there; None when nothing tells."""
        if node_id in self._connected:
            return True
        if not self.clustered:
            return False
        remote = self._remote.get(node_id)
        return None if remote is None else remote[1]

    def announced_open(self, node_ids: Iterable[int]) -> set[int]:
        """Of these nodes, those whose agent holds a channel here or, as another controller
        announced, there: not those `_channel_open` only cannot rule out (several
        controllers: an agent never heard of here may hold a channel opened elsewhere before
        this process started; its holder's flushed last-seen time tells)."""
        with self._lock:
            return {node_id for node_id in node_ids if self._known_channel(node_id)}

    def heard(self) -> set[int]:
        """The nodes whose agents this process has heard (joined, opened or beat here)."""
        with self._lock:
            return set(self._seen)

    def channel_closed(self, node_id: int) -> bool:
        """Whether the node's agent had a channel that closed (here, or as another controller
        announced), rather than never opening one (an agent that joined over REST only)."""
        with self._lock:
            remote = self._remote.get(node_id)
            return remote is not None and not remote[1]

    def without_channel(self, node_ids: Iterable[int]) -> set[int]:
        """Of these nodes, those whose agent holds no channel as far as this process knows
        (one lock for all of them)."""
        with self._lock:
            return {node_id for node_id in node_ids if not self._channel_open(node_id)}

    def state(
        self, node_id: int, stored_last_seen: datetime | None, now: datetime
    ) -> tuple[Connectivity, datetime | None]:
        with self._lock:
            seen, channel_open, slack = self._sample(node_id)
        return self._judge(seen, stored_last_seen, channel_open, slack, now)

    def states(
        self, stored_last_seen: dict[int, datetime | None], now: datetime
    ) -> dict[int, tuple[Connectivity, bool]]:
        """Each node's connectivity and whether this process heard its agent itself, both
        taken at the same instant (the agent-lost watch: a channel opening while it reads
        must not be seen as heard here and not yet open). The lock is taken per batch of
        nodes, so the channels' beats never wait long for it."""
        found: dict[int, tuple[Connectivity, bool]] = {}
        items = list(stored_last_seen.items())
        for start in range(0, len(items), STATES_BATCH):
            with self._lock:
                taken = [
                    (node_id, stored, *self._sample(node_id))
                    for node_id, stored in items[start : start + STATES_BATCH]
                ]
            for node_id, stored, seen, channel_open, slack in taken:
                state = self._judge(seen, stored, channel_open, slack, now)[0]
                found[node_id] = (state, seen is not None)
            cooperative.pause()  # the requests' threads in (a full round judges every node)
        return found

    def _sample(self, node_id: int) -> tuple[datetime | None, bool, float]:
        """With the lock held: what a node's connectivity is judged from (heard here,
        channel open here or elsewhere, the slack a remote holder's flush is allowed)."""
        slack = self.remote_slack if self.clustered and node_id not in self._connected else 0.0
        return self._seen.get(node_id), self._channel_open(node_id), slack

    def _judge(
        self,
        seen: datetime | None,
        stored_last_seen: datetime | None,
        channel_open: bool,
        slack: float,
        now: datetime,
    ) -> tuple[Connectivity, datetime | None]:
        last = max((t for t in (seen, stored_last_seen) if t is not None), default=None)
        if last is None:
            return Connectivity.NEVER, None
        window = self.heartbeat_interval * self.missed_beats + slack
        fresh = (now - last).total_seconds() <= window
        return (Connectivity.CONNECTED if channel_open and fresh else Connectivity.LOST), last
