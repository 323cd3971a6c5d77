"""Numeric query parameters, parsed strictly in one place.

FastAPI hands a query value to pydantic, whose `int` also takes '+1', ' 1 ', '1_000' and
'1.0'. `Whole` takes ASCII digits only (see `voipcloud.domain.numbers`); bounds stay on the
`Query(ge=..., le=...)` beside it, so a refusal is the usual 422 naming `("query", name)`::

    limit: Annotated[Whole, Query(ge=1, le=500)] = 50
    node_id: Annotated[OptionalWhole, Query()] = None

tests/integration/test_api_bad_input.py checks that every `int` query parameter of the app
is declared this way.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from voipcloud.domain.audit import MAX_OPERATIONS
from voipcloud.domain.filters import SORT_KEYS
from voipcloud.domain.numbers import parse_whole
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus


def strict_whole(value: Any) -> Any:
    """A string of ASCII digits as its number (ValueError for any other string); anything
    else passes on to pydantic unchanged."""
    return parse_whole(value) if isinstance(value, str) else value


STRICT = BeforeValidator(strict_whole)
Whole = Annotated[int, STRICT]
OptionalWhole = Annotated[int | None, STRICT]  # the validator runs before the union


# Filters checked by the domain (`NodeFilter.parse`, one 422 naming every field at fault)
# and published as enums in the schema: exactly the values the domain accepts (an empty
# value is refused here, by `min_length=1` beside them).
ROLE_CODES = list(ROLES)
SORT_VALUES = [*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)]
StatusFilter = Annotated[
    str | None, WithJsonSchema({"type": "string", "enum": [s.value for s in NodeStatus]})
]
RoleFilter = Annotated[str | None, WithJsonSchema({"type": "string", "enum": ROLE_CODES})]
SortFilter = Annotated[
    str | None,
    WithJsonSchema(
        {"type": "string", "enum": SORT_VALUES, "description": "a field; '-' in front: descending"}
    ),
]

# `operation` of the events filters: names (`domain/audit.py` _OPERATION) separated by commas,
# spaces around ignored, at most MAX_OPERATIONS of them
_OPERATION = "[a-z0-9][a-z0-9._-]{0,63}"
OPERATIONS_PATTERN = (
    rf"^[\s,]*(?:{_OPERATION}(?:\s*,[\s,]*{_OPERATION}){{0,{MAX_OPERATIONS - 1}}})?[\s,]*$"
)

# `since` / `until` of the events filters: what `domain/audit.py` parse_moment reads, published
# as its common form (a date, or a date and time with an optional offset; no offset: UTC)
_YEAR = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_DAY = rf"{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
MOMENT_PATTERN = rf"^(?: *|{_DAY}|{_DAY}[T ]{_TIME}{_OFFSET}?)$"  # empty: no bound
