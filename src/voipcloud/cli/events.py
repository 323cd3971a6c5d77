"""`voipcloud events`: the audit history of the whole infrastructure, filtered, exported, or
followed as it grows (the filters and exports of `GET /events`, domain/audit.py).

    table   the N newest matches, newest first (the Events page's view)
    csv     the API's export as it streams (every match, oldest first); with --limit, the N
    jsonl   newest of them, still oldest first
    --follow  the N newest, then every new match as it is recorded (oldest first), polling
              every --interval seconds; Ctrl-C ends it (exit 0)
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from voipcloud.cli.client import ApiClient, UsageProblem, client_from_context
from voipcloud.cli.output import print_table, when

# the columns of the API's CSV export (services/audit.py CSV_COLUMNS), in its order
COLUMNS = ("id", "at", "actor", "node_id", "operation", "status_before", "status_after", "reason")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # as the export: a spreadsheet runs these
PAGE = 500  # the API's largest page
MAX_CATCH_UP_PAGES = 20  # per poll; more new events than this: the rest come next round


class EventFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSONL = "jsonl"


def register(app: typer.Typer) -> None:
    app.command("events")(events)


def events(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Option(help="Only this node (NodeID or hostname).")] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Only this actor: `admin:alice` exactly, or `alice` in any role."),
    ] = None,
    operation: Annotated[
        list[str] | None,
        typer.Option(help="Only this operation (e.g. activate); repeatable, or comma-separated."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO 8601, inclusive; no offset: UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time (ISO 8601, exclusive; no offset: UTC).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=100_000,
            help="The N newest matches (table and --follow: 50 unless given; csv and jsonl: "
            "every match unless given).",
        ),
    ] = None,
    output_format: Annotated[
        EventFormat, typer.Option("--format", case_sensitive=False, help="table, csv or jsonl.")
    ] = EventFormat.TABLE,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events; Ctrl-C ends.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, max=60, help="Seconds between two polls with --follow.")
    ] = 2.0,
) -> None:
    """The audit history: every change, by whom, filtered; as a table, CSV or JSON Lines."""
    if follow and until:
        raise UsageProblem("--follow shows what is recorded from now on: it takes no --until")
    client = client_from_context(ctx)
    from voipcloud.cli.nodes import node_id_of

    params: dict[str, Any] = {
        "node_id": node_id_of(client, node) if node is not None else None,
        "actor": actor,
        "operation": ",".join(o.strip() for o in operation or [] if o.strip()) or None,
        "since": since,
        "until": until,
    }
    if follow:
        _follow(client, params, output_format, limit or 50, interval)
    elif output_format is EventFormat.TABLE:
        _table(client, params, limit or 50)
    else:
        _export(client, params, output_format, limit)


def _table(client: ApiClient, params: dict[str, Any], limit: int) -> None:
    items: list[dict[str, Any]] = []
    total = 0
    while len(items) < limit:  # bounded: limit / PAGE requests
        page = client.get(
            "/events",
            params={**params, "limit": min(PAGE, limit - len(items)), "offset": len(items)},
        )
        items += page["items"]
        total = page["total"]
        if not page["items"]:
            break
    print_table(
        ["ID", "When", "Node", "Who", "Operation", "Status", "Reason"],
        (
            [
                e["id"],
                when(e["at"]),
                e["node_id"],
                e["actor"],
                e["operation"],
                _change(e),
                e["reason"],
            ]
            for e in items
        ),
        caption=f"{len(items)} of {total} events, newest first",
    )


def _change(event: dict[str, Any]) -> str | None:
    before, after = event["status_before"], event["status_after"]
    return after if before == after else f"{before or '-'} -> {after or '-'}"


def _export(client: ApiClient, params: dict[str, Any], fmt: EventFormat, limit: int | None) -> None:
    chunks = client.text_chunks("/events", params={**params, "format": fmt.value})
    out = sys.stdout
    if limit is None:
        for chunk in chunks:  # the export as it arrives, unchanged
            out.write(chunk)
        out.flush()
        return
    lines = _lines(chunks)
    if fmt is EventFormat.JSONL:
        out.writelines(deque(lines, maxlen=limit))
        return
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None:
        return
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(deque(rows, maxlen=limit))


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """Whole lines (with their "\n") out of text chunks; split on "\n" only, as a JSON line
    or a CSV cell may hold other line separators (U+2028, a lone CR)."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        *whole, pending = pending.split("\n")
        for line in whole:
            yield line + "\n"
    if pending:
        yield pending


# --- --follow --------------------------------------------------------------------------------


def _follow(
    client: ApiClient, params: dict[str, Any], fmt: EventFormat, limit: int, interval: float
) -> None:
    printer = _Printer(fmt)
    try:
        first = client.get("/events", params={**params, "limit": min(limit, PAGE)})["items"]
        last = max((e["id"] for e in first), default=0)
        if not first:  # nothing matches yet: start after the newest event of all
            newest = client.get("/events", params={"limit": 1})["items"]
            last = newest[0]["id"] if newest else 0
        printer.show(list(reversed(first)))
        while True:
            time.sleep(interval)
            fresh = _newer_than(client, params, last)
            if fresh:
                last = fresh[-1]["id"]
                printer.show(fresh)
    except KeyboardInterrupt:
        sys.stdout.flush()


def _newer_than(client: ApiClient, params: dict[str, Any], last: int) -> list[dict[str, Any]]:
    """The matching events with an id above `last`, oldest first (newest-first pages, read
    until one reaches `last`; bounded per round)."""
    found: list[dict[str, Any]] = []
    for number in range(MAX_CATCH_UP_PAGES):
        items = client.get("/events", params={**params, "limit": PAGE, "offset": number * PAGE})[
            "items"
        ]
        newer = [e for e in items if e["id"] > last]
        found += newer
        if len(newer) < len(items) or len(items) < PAGE:
            break
    return sorted(found, key=lambda e: e["id"])


class _Printer:
    """Events as they come, in one format, flushed at once (a pipe sees them live)."""

    def __init__(self, fmt: EventFormat) -> None:
        self.fmt = fmt
        self.header_done = False

    def show(self, events: list[dict[str, Any]]) -> None:
        out = sys.stdout
        if self.fmt is EventFormat.JSONL:
            for e in events:
                out.write(json.dumps(_export_row(e), ensure_ascii=False) + "\n")
        elif self.fmt is EventFormat.CSV:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            if not self.header_done:
                writer.writerow(COLUMNS)
                self.header_done = True
            for e in events:
                row = _export_row(e)
                writer.writerow([_cell(row[c]) for c in COLUMNS])
            out.write(buffer.getvalue())
        else:
            for e in events:
                node = f"node {e['node_id']}" if e["node_id"] is not None else "-"
                reason = f"  {e['reason']}" if e["reason"] else ""
                out.write(
                    f"{when(e['at'])}  #{e['id']}  {node}  {e['actor']}  {e['operation']}  "
                    f"{_change(e) or '-'}{reason}\n"
                )
        out.flush()


def _export_row(event: dict[str, Any]) -> dict[str, Any]:
    """An API event as the export writes it (`at` in UTC with Z)."""
    at = datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return {
        **{c: event.get(c) for c in COLUMNS},
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value
