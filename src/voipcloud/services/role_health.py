"""Per-role health as the node's agent last reported it, kept in memory.

The agent checks each role it runs periodically (and right after an apply) and sends the
whole picture on every change and on every new channel, so a controller restart loses
nothing that the next channel does not bring back. A role with no report (no agent yet, an
older agent, a role not yet applied) or whose agent is not connected is "unknown".
Health never changes the node's status; a change of health is recorded as an event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RoleHealthState:
    state: str
    message: str | None = None

    def describe(self) -> str:
        return f"{self.state} ({self.message})" if self.message else self.state


class RoleHealthBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[int, dict[str, RoleHealthState]] = {}

    def update(
        self, node_id: int, report: dict[str, RoleHealthState]
    ) -> list[tuple[str, RoleHealthState | None, RoleHealthState]]:
        """Store a node's report; returns the roles whose state changed (old, new)."""
        with self._lock:
            before = self._by_node.get(node_id, {})
            self._by_node[node_id] = dict(report)
        changes: list[tuple[str, RoleHealthState | None, RoleHealthState]] = []
        for code, now in sorted(report.items()):
            old = before.get(code)
            if old is None or old.state != now.state:
                changes.append((code, old, now))
        return changes

    def forget(self, node_id: int) -> None:
        with self._lock:
            self._by_node.pop(node_id, None)

    def for_node(
        self, node_id: int, roles: Iterable[str], *, connected: bool
    ) -> dict[str, RoleHealthState]:
        with self._lock:
            known = dict(self._by_node.get(node_id, {}))
        result: dict[str, RoleHealthState] = {}
        for code in roles:
            found = known.get(code)
            if found is None:
                result[code] = RoleHealthState(UNKNOWN, "no health report from the agent")
            elif not connected:
                result[code] = RoleHealthState(
                    UNKNOWN, f"the agent is not connected; last report: {found.describe()}"
                )
            else:
                result[code] = found
        return result
