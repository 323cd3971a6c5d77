"""`voipcloud events` parts that need no controller: lines out of an export's chunks, and an
API event written as the export writes it."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

from voipcloud.cli import events
from voipcloud.domain.model import Event
from voipcloud.services import audit


def test_lines_are_split_on_newline_only_across_any_chunking() -> None:
    text = 'a,"two\r\nlines",c\r\n{"x": "sep\u2028arator"}\nlast'
    expected = ['a,"two\r\n', 'lines",c\r\n', '{"x": "sep\u2028arator"}\n', "last"]
    for size in (1, 2, 3, 7, len(text)):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(events._lines(chunks)) == expected, size
    rows = list(csv.reader(events._lines([text[:5], text[5:]])))
    assert rows[0] == ["a", "two\r\nlines", "c"]


def test_a_followed_event_is_written_as_the_export_writes_it() -> None:
    event = Event(
        id=7,
        at=datetime(2026, 1, 31, 8, 0, 1, 250000, tzinfo=UTC),
        actor="admin:alice",
        node_id=3,
        operation="edit-node",
        status_before="Offline",
        status_after="Offline",
        reason="=HYPERLINK(1)",
    )
    exported = audit.as_dict(event)
    from_api = {**exported, "at": "2026-01-31T08:00:01.250000Z"}
    assert events._export_row(from_api) == exported
    assert events._export_row({**from_api, "at": "2026-01-31T08:00:01.250000"}) == exported
    assert events.COLUMNS == audit.CSV_COLUMNS
    assert events._cell(exported["reason"]) == "'=HYPERLINK(1)"
    assert events.FORMULA_STARTS == audit._FORMULA_STARTS
