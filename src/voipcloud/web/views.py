"""View models: what the templates show, computed from the services (no HTTP here).

Every action a page offers comes from the domain's rulebook (`voipcloud.domain.policy`):
an allowed action is a button (one that asks first when the rulebook names a consequence), a
refused one is shown disabled with the rulebook's reason. Nothing here decides a rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from voipcloud import __version__
from voipcloud.domain import agent_versions, policy
from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Event, Node
from voipcloud.domain.numbers import parse_whole
from voipcloud.domain.policy import Connectivity, Decision, NodeFacts
from voipcloud.domain.roles import CONTROLLER_ROLE, ROLES, Role
from voipcloud.domain.statuses import STATUS_INFO, NodeStatus, StatusInfo
from voipcloud.services.controller import Controller
from voipcloud.services.role_health import RoleHealthState
from voipcloud.services.roles import AssignedRole
from voipcloud.web.fleet import Counters

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
INFO_ACTIONS: tuple[tuple[str, Operation, str], ...] = (
    ("regenerate-session-key", Operation.REGENERATE_SESSION_KEY, "Regenerate session key"),
)
ACTION_LABELS = {key: label for key, _op, label in ROW_ACTIONS + INFO_ACTIONS}
ACTION_OPERATIONS = {key: op for key, op, _label in ROW_ACTIONS + INFO_ACTIONS}
FORM_ACTIONS = frozenset({"assign-role", "edit"})
# actions with a page of their own before the post (a reason to give, a form to fill)
OWN_PAGE_ACTIONS = frozenset({"assign-role", "edit", "mark-damaged", "force-deactivate", "delete"})


@dataclass(frozen=True, slots=True)
class ActionView:
    """One action button: allowed (perhaps asking first), or disabled with the reason."""

    key: str
    label: str
    decision: Decision

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def reason(self) -> str:
        return self.decision.reason or ""

    @property
    def asks_first(self) -> bool:
        return self.decision.confirm is not None or self.key in OWN_PAGE_ACTIONS


def when(value: datetime | None) -> str:
    """A time as the pages write it (the templates' `when` filter)."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def facts_with_agent(
    controller: Controller, node: Node, facts: NodeFacts
) -> tuple[NodeFacts, str, datetime | None]:
    """The rulebook's facts with the agent's connectivity as the controller sees it now."""
    connectivity, last_seen = controller.connectivity(node)
    seen = when(last_seen) if last_seen else None
    return (
        replace(facts, agent=Connectivity(connectivity.value), last_seen=seen),
        connectivity.value,
        last_seen,
    )


def decide(controller: Controller, facts: NodeFacts, key: str) -> Decision:
    return policy.decide(
        ACTION_OPERATIONS[key], facts, activation_timeout=controller.ctx.activation_timeout
    )


def action_views(controller: Controller, facts: NodeFacts) -> list[ActionView]:
    return [
        ActionView(key, label, decide(controller, facts, key)) for key, _op, label in ROW_ACTIONS
    ]


def current_facts(controller: Controller, node: Node) -> NodeFacts:
    facts = controller.nodes.facts([node])[node.id]
    return facts_with_agent(controller, node, facts)[0]


def require_action(controller: Controller, node: Node, key: str) -> Decision:
    """A form or confirmation reached by its address offers only what the rulebook allows."""
    decision = decide(controller, current_facts(controller, node), key)
    decision.check()
    return decision


def assignable_roles(node: Node) -> list[Role]:
    return [r for r in ROLES.values() if r.code != CONTROLLER_ROLE and r.code not in node.roles]


@dataclass(frozen=True, slots=True)
class RoleView:
    role: Role
    delete_assignment: Decision | None  # None: not offered for this role (ic)
    remove: Decision | None  # None: Administrative Remove does not apply here

    @property
    def can_delete_assignment(self) -> bool:
        return self.delete_assignment is not None and self.delete_assignment.allowed

    @property
    def can_remove(self) -> bool:
        return self.remove is not None and self.remove.allowed


def role_views(node: Node, facts: NodeFacts) -> list[RoleView]:
    views = []
    for code in node.roles:
        role = ROLES[code]
        delete = None
        if code != CONTROLLER_ROLE:
            delete = policy.decide(Operation.DELETE_ASSIGNMENT, facts, role=code)
        remove = None
        if node.is_controller and role.admin_removable:
            remove = policy.decide(Operation.ADMIN_REMOVE, facts, role=code)
        views.append(RoleView(role=role, delete_assignment=delete, remove=remove))
    return views


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: Node
    status: StatusInfo
    connectivity: str  # connected / lost / never
    last_seen: datetime | None
    roles: list[RoleView]
    buttons: list[ActionView]
    facts: NodeFacts
    # each role's health as its agent last reported it (not in the database): read once, for
    # the row's badges and the listing's fingerprint
    health: dict[str, RoleHealthState]
    outdated: bool  # its agent reported a version older than the controller's

    @property
    def seen(self) -> str:
        """When its agent was last seen, as the pages write a time (`when`), from its facts."""
        return self.facts.last_seen or when(None)

    @property
    def actions(self) -> list[str]:
        """The keys of the allowed row actions."""
        return [b.key for b in self.buttons if b.allowed]


def node_row(
    controller: Controller, node: Node, facts: NodeFacts, *, buttons: bool = True
) -> NodeRow:
    """A node as a row shows it; `buttons=False` leaves its actions undecided (the listing's
    rows: their actions are decided when the row's menu opens, `row_menu`)."""
    facts, connectivity, last_seen = facts_with_agent(controller, node, facts)
    return NodeRow(
        node=node,
        status=STATUS_INFO[node.status],
        connectivity=connectivity,
        last_seen=last_seen,
        roles=role_views(node, facts),
        buttons=action_views(controller, facts) if buttons else [],
        facts=facts,
        health=controller.agents.presence.role_health.for_node(
            node.id, node.roles, connected=connectivity == "connected"
        ),
        outdated=agent_versions.is_outdated(node.agent_version, __version__, status=node.status),
    )


def row_menu(controller: Controller, node_id: int) -> NodeRow:
    """A listing row's Actions menu, opened: every row action decided on the node as it is
    now (the full facts), allowed ones offered, refused ones with the rulebook's reason."""
    node, facts = controller.nodes.decided(node_id)
    return node_row(controller, node, facts)


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
    maintenance: str = ""  # "yes": only nodes in maintenance, "no": only the others

    def params(self, **changes: Any) -> dict[str, str]:
        values = {
            "q": self.q,
            "status": self.status,
            "role": self.role,
            "maintenance": self.maintenance,
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
    pages: int  # with an inexact total: the pages known to exist (more may follow)
    error: str | None = None
    fingerprint: str = ""
    extension_count: int = 0
    extension_rules: str = policy.EXTENSION_RULES
    statuses: list[NodeStatus] = field(default_factory=lambda: list(NodeStatus))
    roles: list[Role] = field(default_factory=lambda: list(ROLES.values()))
    counters: Counters | None = None  # the status counters above the listing
    total_exact: bool = True  # False: more than `total` nodes match (node_search.COUNT_CAP)

    @property
    def total_text(self) -> str:
        return str(self.total) if self.total_exact else f"more than {self.total}"

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
    maintenance: str | None = None,
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
        maintenance=(maintenance or "")[:8],
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
            maintenance=request.maintenance or None,
        )
    except InvalidInput as exc:
        error = "The filter was not understood (" + str(exc) + "); showing every live node."
        request = ListingRequest(per_page=request.per_page)
        flt = NodeFilter(limit=request.per_page)
    read = controller.nodes.listing(flt)
    page, facts, extension_count = read.page, read.facts, read.extension_count
    # the rows' actions are decided when a row's menu opens (`row_menu`), not for every row
    # of every poll: nine decisions and their buttons a row were most of the page's time
    rows = [node_row(controller, node, facts[node.id], buttons=False) for node in page.items]
    pages = max(1, -(-page.total // request.per_page))
    if not page.total_exact:  # at least one more than counted, and the next page if this is full
        full = len(rows) == request.per_page
        pages = max(-(-(page.total + 1) // request.per_page), request.page + full)
    counters = Counters.of(read.summary, request)
    return Listing(
        counters=counters,
        request=request,
        rows=rows,
        total=page.total,
        total_exact=page.total_exact,
        pages=pages,
        error=error,
        fingerprint=fingerprint(
            rows,
            page.total if page.total_exact else -page.total,
            extension_count,
            counters.key + _health_key(rows),
        ),
        extension_count=extension_count,
    )


def _health_key(rows: list[NodeRow]) -> str:
    """The role health the rows show (agents report it; it is not in the database)."""
    return "|health:" + ";".join(f"{row.node.id}:{sorted(row.health.items())}" for row in rows)


def fingerprint(rows: list[NodeRow], total: int, extension_count: int, counted: str = "") -> str:
    """Changes whenever something the listing shows changes (but not the heartbeat clock)."""
    digest = hashlib.sha256(f"{total}|{extension_count}|{counted}".encode())
    for row in rows:
        n = row.node
        digest.update(
            f"|{n.id}:{n.row_version}:{n.updated_at}:{n.status}:{n.pending_operation}:"
            f"{','.join(n.roles)}:{row.connectivity}:{n.status_reason}:"
            f"{n.maintenance.since if n.maintenance else ''}".encode()
        )
    return digest.hexdigest()[:16]


# --- View Info -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    row: NodeRow
    session_key: str | None
    assigned: list[AssignedRole]
    events: list[Event]
    regenerate: ActionView
    # Enter Maintenance when the node is not in it, else Leave: the rulebook's answer
    maintenance: policy.MaintenanceAnswer | None = None

    @property
    def can_regenerate_key(self) -> bool:
        return self.regenerate.allowed


def node_info(controller: Controller, node_id: int) -> NodeInfo:
    details = controller.nodes.get(node_id)
    node = details.node
    row = node_row(controller, node, details.facts)
    key, _op, label = INFO_ACTIONS[0]
    return NodeInfo(
        row=row,
        session_key=details.session_key,
        assigned=controller.roles.assigned(node_id),
        events=controller.nodes.events(node_id, limit=10).items,
        regenerate=ActionView(key, label, decide(controller, row.facts, key)),
        maintenance=policy.maintenance_change(row.facts, entering=node.maintenance is None),
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
