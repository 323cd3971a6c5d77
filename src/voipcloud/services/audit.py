"""The audit history, filtered and exported (CSV or JSON Lines), for the API, web and CLI.

Exports hold every matching event, oldest first, read in batches (keyset pages, each its own
short read transaction), so an export of the whole history streams without holding a
connection or the whole history in memory. CSV cells that a spreadsheet would run as a formula
(starting with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC

from sqlalchemy import Connection

from voipcloud.domain.audit import EventFilter
from voipcloud.domain.model import Event, Page
from voipcloud.services import transitions
from voipcloud.services.context import Context
from voipcloud.store import events as event_rows

CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "node_id",
    "operation",
    "status_before",
    "status_after",
    "reason",
)
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def page(ctx: Context, flt: EventFilter, *, limit: int, offset: int) -> Page[Event]:
    with ctx.db.read() as conn:
        _node_exists(conn, flt)
        return event_rows.search(conn, flt, limit=limit, offset=offset)


def check(ctx: Context, flt: EventFilter) -> None:
    """Before an export starts streaming: NotFound for a node that does not exist (a 404,
    not an empty download; a huge id included)."""
    with ctx.db.read() as conn:
        _node_exists(conn, flt)


def _node_exists(conn: Connection, flt: EventFilter) -> None:
    if flt.node_id is not None:
        transitions.load(conn, flt.node_id)


def _batches(ctx: Context, flt: EventFilter) -> Iterator[list[Event]]:
    after = 0
    while True:
        with ctx.db.read() as conn:
            found = next(event_rows.matching(conn, flt, after_id=after), [])
        if not found:
            return
        yield found
        after = found[-1].id


def as_dict(event: Event) -> dict[str, object]:
    return {
        "id": event.id,
        "at": event.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "actor": event.actor,
        "node_id": event.node_id,
        "operation": event.operation,
        "status_before": event.status_before,
        "status_after": event.status_after,
        "reason": event.reason,
    }


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def export(ctx: Context, flt: EventFilter, fmt: str) -> Iterator[str]:
    """The matching events as CSV (with a header row) or JSON Lines, chunk by chunk."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        for batch in _batches(ctx, flt):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            for event in batch:
                row = as_dict(event)
                writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
            yield buffer.getvalue()
        return
    for batch in _batches(ctx, flt):
        yield "".join(json.dumps(as_dict(e), ensure_ascii=False) + "\n" for e in batch)


def filename(fmt: str) -> str:
    return f"voipcloud-events.{fmt}"
