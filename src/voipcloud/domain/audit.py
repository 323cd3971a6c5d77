"""The audit filters of the events (API `GET /events`, the Events page, `voipcloud events`).

- `actor`: `admin:alice` matches exactly; a bare name (`alice`, `controller`, `node:5` has a
  colon so is exact) matches that actor or any role's account of that name (`*:alice`).
- `operation`: one or more operation names, comma-separated (`activate,fix`).
- `since` / `until`: ISO 8601 times (`2026-01-31T08:00:00Z`, `2026-01-31T10:00+02:00`, a date
  `2026-01-31` is its midnight); a time without an offset is UTC. `since` is inclusive,
  `until` exclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.validation import check_text

MAX_TEXT = 128
MAX_OPERATIONS = 20
_OPERATION = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
EXPORT_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True, slots=True)
class EventFilter:
    node_id: int | None = None
    actor: str | None = None
    operations: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return self == EventFilter(node_id=self.node_id)

    @classmethod
    def parse(
        cls,
        *,
        node_id: int | None = None,
        actor: str | None = None,
        operation: str | None = None,
        since: str | None = None,
        until: str | None = None,
        where: str = "query",
    ) -> EventFilter:
        errors: list[FieldError] = []
        clean_actor = None
        if actor is not None and actor.strip():
            try:
                clean_actor = check_text(actor.strip())
                if len(clean_actor) > MAX_TEXT:
                    raise ValueError(f"must be at most {MAX_TEXT} characters")
            except ValueError as exc:
                errors.append(FieldError((where, "actor"), str(exc)))
        operations: tuple[str, ...] = ()
        if operation is not None and operation.strip():
            names = tuple(dict.fromkeys(p.strip() for p in operation.split(",") if p.strip()))
            bad = [n for n in names if not _OPERATION.match(n)]
            if bad:
                errors.append(
                    FieldError(
                        (where, "operation"),
                        f"{bad[0][:64]!r} is not an operation name (lowercase letters, digits, "
                        "'-', '.', '_'; several separated by commas)",
                    )
                )
            elif len(names) > MAX_OPERATIONS:
                errors.append(
                    FieldError((where, "operation"), f"at most {MAX_OPERATIONS} operations")
                )
            operations = names
        moments: dict[str, datetime | None] = {"since": None, "until": None}
        for name, text in (("since", since), ("until", until)):
            if text is None or not text.strip():
                continue
            try:
                moments[name] = parse_moment(text.strip())
            except ValueError as exc:
                errors.append(FieldError((where, name), str(exc)))
        start, end = moments["since"], moments["until"]
        if start is not None and end is not None and end <= start:
            errors.append(FieldError((where, "until"), "must be later than since"))
        if errors:
            raise InvalidInput(errors)
        return cls(
            node_id=node_id, actor=clean_actor, operations=operations, since=start, until=end
        )


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime; ValueError with a message."""
    if len(text) > 40:
        raise ValueError("must be an ISO 8601 time such as 2026-01-31T08:00:00Z")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-01-31T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is after the last representable moment
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


def actor_matches(pattern: str, actor: str) -> bool:
    """The `actor` filter in Python (the store does the same in SQL)."""
    if ":" in pattern:
        return actor == pattern
    return actor == pattern or actor.endswith(":" + pattern)
