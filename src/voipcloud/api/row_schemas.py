"""Wire schemas of the calls that act on many rows at once, one result a row, in order:
`POST /nodes/import` (created or refused) and `POST /nodes/bulk/{action}` (done or refused).
A refused row names what refused it: the row's `field` at fault and/or the `rule` (its code,
as the single-node 409 names it) and the `reason`; nothing of that row changed."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from voipcloud.api.enrolment import EnrolmentPublic

RowModel = TypeVar("RowModel", bound=BaseModel)


def row_results(model: type[RowModel], results: Iterable[object]) -> list[RowModel]:
    """Each domain result (a dataclass with the model's field names) as `model`, in order; an
    outcome by its value."""
    names = list(model.model_fields)
    return [model(**{name: _plain(getattr(r, name)) for name in names}) for r in results]


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


class ImportResultPublic(BaseModel):
    index: int = Field(description="the row's position in `nodes`, from 0")
    outcome: Literal["created", "refused"]
    hostname: str | None = None
    node_id: int | None = None
    session_key: str | None = Field(
        default=None, description="created with a role: the key the node's agent joins with"
    )
    field: str | None = Field(
        default=None, description="refused: the row's field at fault (`roles.0.parameters.x`)"
    )
    rule: str | None = Field(default=None, description="refused by a rule: its code")
    reason: str | None = None


class ImportResultsPublic(BaseModel):
    created: int
    refused: int
    results: list[ImportResultPublic]
    enrolment: EnrolmentPublic = Field(
        description="how the nodes' agents join (each with its own session key, from a file)"
    )


class BulkResultPublic(BaseModel):
    node_id: int
    outcome: str  # "done" or "refused"
    hostname: str | None = None  # null: no such node
    status: str | None = None  # the node's status after the call
    rule: str | None = None  # refused: the rule (as the single-node 409 names it)
    reason: str | None = None  # refused: why


class BulkResultsPublic(BaseModel):
    action: str
    done: int
    refused: int
    results: list[BulkResultPublic]
