"""View models: what the templates show, computed from the services (no HTTP here).

The actions offered for a node come from the domain's own rules (`lifecycle.allowed`,
`check_not_busy`) plus the few extra conditions the services check, so a button is shown
exactly when the operation would be accepted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Event, Node
from voipcloud.domain.numbers import parse_whole
from voipcloud.domain.roles import CONTROLLER_ROLE, ROLES, Role
from voipcloud.domain.statuses import STATUS_INFO, NodeStatus, StatusInfo
from voipcloud.services.controller import Controller
from voipcloud.services.roles import ADMIN_REMOVE_MAX_EXTENSIONS, AssignedRole

PAGE_SIZES = (25, 50, 100)
MAX_PAGE = 999_999
DEFAULT_PAGE_SIZE = 25
# (action key, operation, button label) in the order the listing shows them
ROW_ACTIONS: tuple[tuple[str, Operation, str], ...] = (
    ("assign-role", Operation.ASSIGN_ROLE, "Assign Role"),
    ("edit", Operation.EDIT_NODE, "Edit"),
    ("standby", Operation.STANDBY, "Set StandBy"),
    ("activate", Operation.ACTIVATE, "Activate"),
    ("deactivate", Operation.DEACTIVATE, "Deactivate"),
    ("force-deactivate", Operation.FORCE_DEACTIVATE, "Force deactivation"),
    ("mark-damaged", Operation.MARK_DAMAGED, "Mark Damaged"),
    ("fix", Operation.FIX, "Fix Node"),
    ("delete", Operation.DELETE, "Delete Node"),
)
ACTION_LABELS = {key: label for key, _op, label in ROW_ACTIONS}
# actions that ask first (they open a confirmation layer); the rest post straight away
CONFIRMED_ACTIONS = frozenset({"mark-damaged", "force-deactivate", "delete"})
FORM_ACTIONS = frozenset({"assign-role", "edit"})


def _may(operation: Operation, node: Node) -> bool:
    """May the administrator run `operation` on `node` now, as far as its status goes?"""
    if not lifecycle.allowed(operation, node.status):
        return False
    try:
        lifecycle.check_not_busy(operation, node.pending_operation, hostname=node.hostname)
    except RuleViolation:
        return False
    return True


def node_actions(node: Node) -> list[str]:
    """The row actions the node's status allows (View Info is always there)."""
    actions = []
    for key, operation, _label in ROW_ACTIONS:
        if not _may(operation, node):
            continue
        if key == "activate" and not node.roles:
            continue  # Activate needs at least one role
        if key == "delete" and node.is_controller:
            continue  # the IC node runs this controller: never deletable
        if key == "assign-role" and not assignable_roles(node):
            continue
        actions.append(key)
    return actions


def require_action(node: Node, key: str) -> None:
    """A form or confirmation reached by its address offers only what the listing offers."""
    if key not in node_actions(node):
        raise RuleViolation(
            f"{key}-not-available",
            f"{ACTION_LABELS[key]} is not available for node {node.hostname} while it is "
            f"{node.status.value}. Go back to Cloud Management: each row offers what its "
            "status allows.",
        )


def assignable_roles(node: Node) -> list[Role]:
    return [r for r in ROLES.values() if r.code != CONTROLLER_ROLE and r.code not in node.roles]


@dataclass(frozen=True, slots=True)
class RoleView:
    role: Role
    can_delete_assignment: bool
    can_remove: bool


def role_views(node: Node, extension_count: int) -> list[RoleView]:
    views = []
    for code in node.roles:
        role = ROLES[code]
        views.append(
            RoleView(
                role=role,
                can_delete_assignment=code != CONTROLLER_ROLE
                and _may(Operation.DELETE_ASSIGNMENT, node),
                can_remove=node.is_controller
                and role.admin_removable
                and extension_count <= ADMIN_REMOVE_MAX_EXTENSIONS
                and _may(Operation.ADMIN_REMOVE, node),
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: Node
    status: StatusInfo
    connectivity: str  # connected / lost / never
    last_seen: datetime | None
    roles: list[RoleView]
    actions: list[str]


def node_row(controller: Controller, node: Node, extension_count: int) -> NodeRow:
    connectivity, last_seen = controller.connectivity(node)
    return NodeRow(
        node=node,
        status=STATUS_INFO[node.status],
        connectivity=connectivity.value,
        last_seen=last_seen,
        roles=role_views(node, extension_count),
        actions=node_actions(node),
    )


# --- the listing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingRequest:
    """The listing's query string, as the administrator sent it."""

    q: str = ""
    status: str = ""
    role: str = ""
    sort: str = "id"
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE
    problem: str = ""  # page or per_page not understood (the defaults are shown instead)

    def params(self, **changes: Any) -> dict[str, str]:
        values = {
            "q": self.q,
            "status": self.status,
            "role": self.role,
            "sort": self.sort,
            "page": str(self.page),
            "per_page": str(self.per_page),
            **{k: str(v) for k, v in changes.items()},
        }
        defaults = {"sort": "id", "page": "1", "per_page": str(DEFAULT_PAGE_SIZE)}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}

    def url(self, path: str = "/", **changes: Any) -> str:
        params = self.params(**changes)
        return f"{path}?{urlencode(params)}" if params else path

    def sort_url(self, key: str) -> str:
        descending = self.sort == key
        return self.url(sort=f"-{key}" if descending else key, page=1)

    def aria_sort(self, key: str) -> str:
        if self.sort == key:
            return "ascending"
        if self.sort == f"-{key}":
            return "descending"
        return "none"


@dataclass(slots=True)
class Listing:
    request: ListingRequest
    rows: list[NodeRow]
    total: int
    pages: int
    error: str | None = None
    fingerprint: str = ""
    statuses: list[NodeStatus] = field(default_factory=lambda: list(NodeStatus))
    roles: list[Role] = field(default_factory=lambda: list(ROLES.values()))

    @property
    def first(self) -> int:
        return 0 if not self.rows else (self.request.page - 1) * self.request.per_page + 1

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def parse_listing(
    *,
    q: str | None,
    status: str | None,
    role: str | None,
    sort: str | None,
    page: str | None,
    per_page: str | None,
) -> ListingRequest:
    problems: list[str] = []

    def number(name: str, text: str | None, default: int, high: int) -> int:
        if not text:
            return default
        try:
            return parse_whole(text, low=1, high=high)
        except ValueError as exc:
            problems.append(f"{name} {exc}")
            return default

    size = number("per_page", per_page, DEFAULT_PAGE_SIZE, max(PAGE_SIZES))
    if size not in PAGE_SIZES:
        problems.append(f"per_page must be one of {', '.join(map(str, PAGE_SIZES))}")
        size = DEFAULT_PAGE_SIZE
    return ListingRequest(
        q=(q or "").strip()[:253],
        status=(status or "")[:32],
        role=(role or "")[:16],
        sort=(sort or "id")[:32],
        page=number("page", page, 1, MAX_PAGE),
        per_page=size,
        problem="; ".join(problems),
    )


def listing(controller: Controller, request: ListingRequest) -> Listing:
    """One page of the Node Listing, cut in SQL by the shared NodeFilter."""
    error = None
    if request.problem:
        error = f"The paging was not understood ({request.problem}); showing the default instead."
    try:
        flt = NodeFilter.parse(
            status=request.status or None,
            role=request.role or None,
            q=request.q or None,
            sort=request.sort,
            limit=request.per_page,
            offset=(request.page - 1) * request.per_page,
        )
    except InvalidInput as exc:
        error = "The filter was not understood (" + str(exc) + "); showing every live node."
        request = ListingRequest(per_page=request.per_page)
        flt = NodeFilter(limit=request.per_page)
    page = controller.nodes.list(flt)
    extension_count = controller.extensions.count()
    rows = [node_row(controller, node, extension_count) for node in page.items]
    pages = max(1, -(-page.total // request.per_page))
    return Listing(
        request=request,
        rows=rows,
        total=page.total,
        pages=pages,
        error=error,
        fingerprint=fingerprint(rows, page.total, extension_count),
    )


def fingerprint(rows: list[NodeRow], total: int, extension_count: int) -> str:
    """Changes whenever something the listing shows changes (but not the heartbeat clock)."""
    digest = hashlib.sha256(f"{total}|{extension_count}".encode())
    for row in rows:
        n = row.node
        digest.update(
            f"|{n.id}:{n.row_version}:{n.updated_at}:{n.status}:{n.pending_operation}:"
            f"{','.join(n.roles)}:{row.connectivity}".encode()
        )
    return digest.hexdigest()[:16]


# --- View Info -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    row: NodeRow
    session_key: str | None
    assigned: list[AssignedRole]
    events: list[Event]
    can_regenerate_key: bool


def node_info(controller: Controller, node_id: int) -> NodeInfo:
    details = controller.nodes.get(node_id)
    node = details.node
    return NodeInfo(
        row=node_row(controller, node, controller.extensions.count()),
        session_key=details.session_key,
        assigned=controller.roles.assigned(node_id),
        events=controller.nodes.events(node_id, limit=10).items,
        can_regenerate_key=node.has_session_key and _may(Operation.REGENERATE_SESSION_KEY, node),
    )


def action_done(action: str, node: Node) -> str:
    """The message after a lifecycle action was accepted."""
    if node.pending_operation:
        return (
            f"{ACTION_TITLES.get(action, action)} of {node.hostname} requested; "
            "its agent applies it and the listing follows."
        )
    return f"{ACTION_TITLES.get(action, action)}: node {node.hostname} is {node.status.value}."


ACTION_TITLES = {
    **ACTION_LABELS,
    "regenerate-session-key": "New session key",
}
