"""Reading the event log in order, past a cursor, without missing a late commit.

On SQLite one writer at a time gives event ids in commit order. On PostgreSQL an id comes from
a sequence when the row is inserted, so a transaction still open may commit id 10 after id 11
was read: the reader notes 10 as a gap and asks for it again on later rounds for `GAP_WAIT`
seconds (an id rolled back never comes). Used by the webhook dispatcher (its place kept in the
database, `webhook_outbox`) and by the metrics (kept in memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Row, func, select

from voipcloud.store.tables import events

GAP_WAIT = 60.0  # seconds a missing id is looked for again
MAX_GAPS = 1000
BATCH = 500


@dataclass(slots=True)
class TailState:
    last_id: int
    gaps: dict[int, float] = field(default_factory=dict)  # event id -> first missed (unix s)

    def to_json(self) -> dict[str, float]:
        return {str(k): v for k, v in self.gaps.items()}

    @classmethod
    def from_json(cls, last_id: int, gaps: object) -> TailState:
        found: dict[int, float] = {}
        if isinstance(gaps, dict):
            for key, value in gaps.items():
                try:
                    found[int(key)] = float(value)
                except (TypeError, ValueError):
                    continue
        return cls(last_id=last_id, gaps=found)


def newest_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())


def read(
    conn: Connection, state: TailState, *, now: float, batch: int = BATCH
) -> tuple[list[Row[tuple[object, ...]]], TailState]:
    """The events after `state` (late commits of earlier gaps first), and the state after them."""
    gaps = {k: v for k, v in state.gaps.items() if now - v < GAP_WAIT}
    late: list[Row[tuple[object, ...]]] = []
    if gaps:
        late = list(
            conn.execute(select(events).where(events.c.id.in_(sorted(gaps))).order_by(events.c.id))
        )
        for row in late:
            gaps.pop(row.id, None)
    rows = list(
        conn.execute(
            select(events).where(events.c.id > state.last_id).order_by(events.c.id).limit(batch)
        )
    )
    expected = state.last_id + 1
    for row in rows:
        if row.id > expected:  # ids not (yet) committed: look again later
            for missing in range(max(expected, row.id - MAX_GAPS), row.id):
                gaps.setdefault(missing, now)
        expected = row.id + 1
    if len(gaps) > MAX_GAPS:
        gaps = dict(sorted(gaps.items())[-MAX_GAPS:])
    last_id = rows[-1].id if rows else state.last_id
    return late + rows, TailState(last_id=last_id, gaps=gaps)
