"""Bulk actions: one node action over a selection, each node on its own rules (pure, no I/O).

A selection is either the nodes named (`node_ids`) or everything the listing's filter matches
(`filter`: status, role, q, maintenance), exactly one of the two, and at most
`MAX_SELECTION` nodes per call. The actions are those of the single-node interfaces, with the
same body fields; the services run each node through its single-node path, in its own
transaction, and answer one `BulkResult` per node: done, or refused with the rule and the
sentence. Nodes in maintenance are left out (refused, `node-in-maintenance`) unless the
request says `include_maintenance`. docs/operations.md, "Bulk actions and maintenance".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import TITLES, Operation
from voipcloud.domain.roles import ROLES, validate_parameters
from voipcloud.domain.validation import check_text

MAX_SELECTION = 5000  # nodes per call: a larger filter is refused, naming how many it matches
MAX_REASON = 1000  # as the single-node actions'

# action (the path's word) -> the operation it runs, in the order the interfaces offer them
ACTIONS: dict[str, Operation] = {
    "standby": Operation.STANDBY,
    "activate": Operation.ACTIVATE,
    "deactivate": Operation.DEACTIVATE,
    "fix": Operation.FIX,
    "mark-damaged": Operation.MARK_DAMAGED,
    "delete": Operation.DELETE,
    "assign-role": Operation.ASSIGN_ROLE,
    "delete-assignment": Operation.DELETE_ASSIGNMENT,
}
ROLE_ACTIONS = frozenset({"assign-role", "delete-assignment"})
FILTER_FIELDS = ("status", "role", "q", "maintenance")


def title(action: str) -> str:
    return TITLES[ACTIONS[action]]


class Outcome(StrEnum):
    DONE = "done"  # the single-node operation was accepted (a pending one: its agent goes on)
    REFUSED = "refused"  # the node's rules (or its absence) refused it; nothing changed


@dataclass(frozen=True, slots=True)
class BulkResult:
    node_id: int
    outcome: Outcome
    hostname: str | None = None  # None: no such node
    status: str | None = None  # the node's status after the call
    rule: str | None = None  # refused: the rule's code (as the single-node 409 names it)
    reason: str | None = None  # refused: the sentence

    @property
    def done(self) -> bool:
        return self.outcome is Outcome.DONE


@dataclass(frozen=True, slots=True)
class Selection:
    """The named nodes, or a filter (never both)."""

    node_ids: tuple[int, ...] | None = None
    filter: NodeFilter | None = None

    def describe(self) -> str:
        if self.node_ids is not None:
            return f"{len(self.node_ids)} named node(s)"
        flt = self.filter or NodeFilter()
        parts = [
            f"status {flt.status}" if flt.status else "",
            f"role {flt.role}" if flt.role else "",
            f"search {flt.q!r}" if flt.q else "",
            {True: "in maintenance", False: "not in maintenance", None: ""}[flt.maintenance],
        ]
        shown = ", ".join(p for p in parts if p)
        return f"every node matching {shown}" if shown else "every live node"


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """What to do to each node of the selection, checked once before any node is touched."""

    action: str
    selection: Selection
    include_maintenance: bool = False
    reason: str | None = None
    force: bool = False
    role: str | None = None
    parameters: Mapping[str, Any] | None = None

    @property
    def operation(self) -> Operation:
        return ACTIONS[self.action]


def parse_selection(
    node_ids: Sequence[int] | None, filter: Mapping[str, Any] | None, *, where: str = "body"
) -> Selection:
    """Exactly one of `node_ids` and `filter`; InvalidInput naming the field otherwise."""
    if node_ids is not None and filter is not None:
        raise InvalidInput.one((where,), "give either node_ids or filter, not both")
    if node_ids is None and filter is None:
        raise InvalidInput.one(
            (where,), "give node_ids (the nodes to act on) or filter (every node it matches)"
        )
    if node_ids is not None:
        if not node_ids:
            raise InvalidInput.one((where, "node_ids"), "name at least one node")
        if len(node_ids) > MAX_SELECTION:
            raise InvalidInput.one(
                (where, "node_ids"),
                f"{len(node_ids)} nodes named; at most {MAX_SELECTION} per call",
            )
        return Selection(node_ids=tuple(dict.fromkeys(node_ids)))  # once each, in order
    assert filter is not None
    unknown = [k for k in filter if k not in FILTER_FIELDS]
    if unknown:
        raise InvalidInput.one(
            (where, "filter", unknown[0]), f"not a filter; known: {', '.join(FILTER_FIELDS)}"
        )
    try:
        flt = NodeFilter.parse(
            status=filter.get("status") or None,
            role=filter.get("role") or None,
            q=filter.get("q") or None,
            maintenance=filter.get("maintenance"),
        )
    except InvalidInput as exc:
        raise InvalidInput(
            [FieldError((where, "filter", *e.loc[1:]), e.message) for e in exc.errors]
        ) from exc
    return Selection(filter=flt)


def too_many(matched: int, *, where: str = "body") -> InvalidInput:
    return InvalidInput.one(
        (where, "filter"),
        f"matches {matched} nodes; at most {MAX_SELECTION} per call: narrow the filter "
        "(by status, role or search) and run it in parts",
    )


def check_request(request: BulkRequest, *, where: str = "body") -> BulkRequest:
    """The action and its fields, as the single-node endpoints take them."""
    errors: list[FieldError] = []
    action = request.action
    if action not in ACTIONS:
        raise InvalidInput.one(("path", "action"), f"must be one of {', '.join(ACTIONS)}")
    reason = request.reason
    if reason is not None:
        if len(reason) > MAX_REASON:
            errors.append(FieldError((where, "reason"), f"must be at most {MAX_REASON} characters"))
        else:
            try:
                check_text(reason, multiline=True)
            except ValueError as exc:
                errors.append(FieldError((where, "reason"), str(exc)))
        reason = reason.strip() or None
    if request.force and action != "deactivate":
        errors.append(FieldError((where, "force"), "only deactivate can be forced"))
    if request.force and not reason:
        errors.append(
            FieldError((where, "reason"), "a forced deactivation needs a reason: it is recorded")
        )
    role = request.role
    if action in ROLE_ACTIONS:
        if not role:
            errors.append(FieldError((where, "role"), f"{title(action)} needs the role's code"))
        elif role not in ROLES:
            errors.append(FieldError((where, "role"), f"unknown role; known: {', '.join(ROLES)}"))
        elif request.parameters and action == "assign-role":
            try:
                validate_parameters(ROLES[role], request.parameters, loc=(where, "parameters"))
            except InvalidInput as exc:
                errors.extend(exc.errors)
    elif role is not None:
        errors.append(
            FieldError((where, "role"), "only assign-role and delete-assignment take a role")
        )
    if request.parameters and action != "assign-role":
        errors.append(FieldError((where, "parameters"), "only assign-role takes parameters"))
    if errors:
        raise InvalidInput(errors)
    return BulkRequest(
        action=action,
        selection=request.selection,
        include_maintenance=request.include_maintenance,
        reason=reason,
        force=request.force,
        role=role,
        parameters=dict(request.parameters or {}),
    )


def summary(results: Sequence[BulkResult]) -> tuple[int, int]:
    """(done, refused)."""
    done = sum(1 for r in results if r.done)
    return done, len(results) - done
