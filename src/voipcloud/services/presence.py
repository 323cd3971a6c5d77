"""Agent connectivity kept in memory: a heartbeat costs a dict write, not a database write.

The last-seen times are flushed to the database in one batch every few seconds, so a
restart loses at most that much, and the listing can still say when a node was last seen.
"""

from __future__ import annotations

import threading
from datetime import datetime
from enum import StrEnum

from voipcloud.services.role_health import RoleHealthBook


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

    def beat(self, node_id: int, now: datetime) -> None:
        with self._lock:
            self._seen[node_id] = now
            self._unflushed[node_id] = now

    def opened(self, node_id: int, now: datetime) -> None:
        with self._lock:
            self._connected[node_id] = self._connected.get(node_id, 0) + 1
            self._seen[node_id] = now
            self._unflushed[node_id] = now

    def closed(self, node_id: int) -> None:
        with self._lock:
            left = self._connected.get(node_id, 1) - 1
            if left > 0:
                self._connected[node_id] = left
            else:
                self._connected.pop(node_id, None)

    def forget(self, node_id: int) -> None:
        with self._lock:
            self._seen.pop(node_id, None)
            self._unflushed.pop(node_id, None)
            self._connected.pop(node_id, None)

    def drain(self) -> dict[int, datetime]:
        with self._lock:
            pending, self._unflushed = self._unflushed, {}
        return pending

    def state(
        self, node_id: int, stored_last_seen: datetime | None, now: datetime
    ) -> tuple[Connectivity, datetime | None]:
        with self._lock:
            seen = self._seen.get(node_id)
            channel_open = node_id in self._connected
        last = max((t for t in (seen, stored_last_seen) if t is not None), default=None)
        if last is None:
            return Connectivity.NEVER, None
        fresh = (now - last).total_seconds() <= self.heartbeat_interval * self.missed_beats
        return (Connectivity.CONNECTED if channel_open and fresh else Connectivity.LOST), last
