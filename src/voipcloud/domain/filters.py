"""The node listing filter: one definition for the API list, the web listing and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.domain.validation import check_text

SORT_KEYS = ("id", "hostname", "status", "private_ip", "created_at", "updated_at", "last_seen")
MAX_LIMIT = 500
MAX_QUERY = 253
MAX_OFFSET = 2**31 - 1  # beyond any listing; larger values would overflow the database


@dataclass(frozen=True, slots=True)
class NodeFilter:
    status: NodeStatus | None = None
    role: str | None = None
    q: str | None = None  # hostname, NodeID or IP, substring match
    hostname: str | None = None  # exact (any case): one indexed query, no page cap to miss it
    maintenance: bool | None = None  # True: only nodes in maintenance; False: only the others
    sort: str = "id"  # a SORT_KEYS entry, "-" in front for descending
    limit: int = 50
    offset: int = 0

    @classmethod
    def parse(
        cls,
        *,
        status: str | None = None,
        role: str | None = None,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        hostname: str | None = None,
        maintenance: bool | str | None = None,
    ) -> NodeFilter:
        errors: list[FieldError] = []
        parsed_status: NodeStatus | None = None
        if status:
            try:
                parsed_status = NodeStatus(status)
            except ValueError:
                errors.append(
                    FieldError(("query", "status"), f"must be one of {', '.join(NodeStatus)}")
                )
        if role and role not in ROLES:
            errors.append(FieldError(("query", "role"), f"must be one of {', '.join(ROLES)}"))
        if q and len(q) > MAX_QUERY:
            errors.append(FieldError(("query", "q"), f"must be at most {MAX_QUERY} characters"))
        elif q:
            try:
                check_text(q)
            except ValueError as exc:
                errors.append(FieldError(("query", "q"), str(exc)))
        if hostname and len(hostname) > MAX_QUERY:
            errors.append(
                FieldError(("query", "hostname"), f"must be at most {MAX_QUERY} characters")
            )
        elif hostname:
            try:
                check_text(hostname)
            except ValueError as exc:
                errors.append(FieldError(("query", "hostname"), str(exc)))
        in_maintenance = _flag(maintenance, errors)
        sort = sort or "id"
        if sort.removeprefix("-") not in SORT_KEYS:
            errors.append(
                FieldError(("query", "sort"), f"must be one of {', '.join(SORT_KEYS)} (- for desc)")
            )
        limit = 50 if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            errors.append(FieldError(("query", "limit"), f"must be between 1 and {MAX_LIMIT}"))
        offset = offset or 0
        if not 0 <= offset <= MAX_OFFSET:
            errors.append(FieldError(("query", "offset"), f"must be between 0 and {MAX_OFFSET}"))
        if errors:
            raise InvalidInput(errors)
        return cls(
            status=parsed_status,
            role=role or None,
            q=(q or "").strip() or None,
            # stored host names are lower case without a final dot (validation.py)
            hostname=(hostname or "").strip().lower().rstrip(".") or None,
            maintenance=in_maintenance,
            sort=sort,
            limit=limit,
            offset=offset,
        )


_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def _flag(value: bool | str | None, errors: list[FieldError]) -> bool | None:
    """`maintenance`: true / false (a form's yes / no), empty or None for either."""
    if value is None or isinstance(value, bool):
        return value
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    errors.append(FieldError(("query", "maintenance"), "must be true or false"))
    return None
