"""Whole numbers typed by people or sent in a URL: ASCII digits 0-9 only, and few of them.

`str.isdigit()` also takes superscripts ('³'), circled digits ('①') and other scripts' digits
('٣', fullwidth '1'); `int()` refuses some of them and takes others, and fails with a message about
Python itself beyond 4,300 digits. Every query, form or parameter value that should be a
number goes through `parse_whole` (or `is_whole`) instead, the API's through
`voipcloud.api.params.Whole`.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
MAX_DIGITS = 32  # more than any id, count or page; bounds are checked after
NOT_WHOLE = "must be a whole number written with the digits 0-9"


def is_whole(text: str, *, max_digits: int = MAX_DIGITS) -> bool:
    """True when `text` is 1 to `max_digits` ASCII digits and nothing else."""
    return len(text) <= max_digits and _DIGITS.fullmatch(text) is not None


def parse_whole(
    text: str, *, low: int | None = None, high: int | None = None, max_digits: int = MAX_DIGITS
) -> int:
    """The number written in `text`, within [low, high]; ValueError with a message otherwise."""
    if not isinstance(text, str) or _DIGITS.fullmatch(text) is None:
        raise ValueError(NOT_WHOLE)
    digits = text.lstrip("0") or "0"
    if len(digits) > max_digits:
        raise ValueError(f"must be at most {high}" if high is not None else "is too large")
    value = int(digits)
    if low is not None and value < low:
        raise ValueError(f"must be at least {low}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {high}")
    return value
