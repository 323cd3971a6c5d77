"""The Events page's view model: one page of the audit history, filtered by node, actor,
operation and time (domain/audit.py), and the export links of the same filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from voipcloud.domain.audit import EventFilter
from voipcloud.domain.errors import InvalidInput, NotFound
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.model import Event, Node
from voipcloud.domain.numbers import is_whole, parse_whole
from voipcloud.services import audit
from voipcloud.services.controller import Controller

EVENTS_PER_PAGE = 50
MAX_PAGE = 999_999


@dataclass(slots=True)
class EventsPage:
    node_query: str
    node: Node | None
    events: list[Event]
    total: int
    page: int
    hostnames: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    filters: dict[str, str] = field(default_factory=dict)  # actor, operation, since, until
    errors: dict[str, str] = field(default_factory=dict)  # per filter field

    def context(self) -> dict[str, Any]:
        pages = max(1, -(-self.total // EVENTS_PER_PAGE))
        first = (self.page - 1) * EVENTS_PER_PAGE + 1 if self.events else 0
        return {
            "node_query": self.node_query,
            "node": self.node,
            "events": self.events,
            "total": self.total,
            "page": self.page,
            "pages": pages,
            "first": first,
            "last": first + len(self.events) - 1 if self.events else 0,
            "hostnames": self.hostnames,
            "error": self.error,
            "query": self._query,
            "filters": self.filters,
            "filter_errors": self.errors,
            "filtered": any(self.filters.values()) or bool(self.node_query),
            "export_url": self._export_url,
        }

    def _params(self) -> dict[str, str]:
        return {k: v for k, v in {"node": self.node_query, **self.filters}.items() if v}

    def _query(self, page: int) -> str:
        return urlencode({**self._params(), "page": str(page)})

    def _export_url(self, fmt: str) -> str:
        return "/events/export?" + urlencode({**self._params(), "format": fmt})


def _find_node(controller: Controller, text: str) -> Node | None:
    """A node by NodeID, else by exact hostname (Deleted ones too: history is about them)."""
    if is_whole(text, max_digits=9):
        try:
            return controller.nodes.get(int(text)).node
        except NotFound:
            return None
    for status, sort in ((None, "id"), ("Deleted", "-id")):  # live first, else the latest
        try:
            flt = NodeFilter.parse(hostname=text, status=status, sort=sort, limit=1)
        except InvalidInput:
            return None
        found = controller.nodes.list(flt).items  # exact: one indexed query, no page cap
        if found:
            return found[0]
    return None


FILTERS = ("actor", "operation", "since", "until")


def parse_filter(
    controller: Controller, *, node_query: str, filters: dict[str, str]
) -> tuple[EventFilter | None, Node | None, str | None, dict[str, str]]:
    """(filter, node, error, per-field errors); the filter is None when something is wrong."""
    node_query = node_query.strip()
    node = None
    if node_query:
        node = _find_node(controller, node_query)
        if node is None:
            return None, None, f"There is no node {node_query!r}.", {}
    try:
        flt = EventFilter.parse(node_id=node.id if node else None, where="form", **filters)
    except InvalidInput as exc:
        errors = {str(e.loc[-1]): e.message for e in exc.errors}
        return None, node, "Check the filters: " + "; ".join(errors.values()) + ".", errors
    return flt, node, None, {}


def events_page(
    controller: Controller,
    *,
    node_query: str,
    page: str | None,
    filters: dict[str, str] | None = None,
) -> EventsPage:
    filters = {k: (filters or {}).get(k, "").strip() for k in FILTERS}
    number, page_error = 1, None
    if page:
        try:
            number = parse_whole(page, low=1, high=MAX_PAGE)
        except ValueError as exc:
            page_error = f"The page number {exc}; showing the first page."
    node_query = node_query.strip()
    flt, node, error, errors = parse_filter(controller, node_query=node_query, filters=filters)
    if flt is None:
        return EventsPage(
            node_query, node, [], 0, number, error=error, filters=filters, errors=errors
        )
    found = audit.page(
        controller.ctx, flt, limit=EVENTS_PER_PAGE, offset=(number - 1) * EVENTS_PER_PAGE
    )
    hostnames: dict[int, str] = {}
    for event in found.items:
        if event.node_id is not None and event.node_id not in hostnames:
            try:
                hostnames[event.node_id] = controller.nodes.get(event.node_id).node.hostname
            except NotFound:
                hostnames[event.node_id] = f"#{event.node_id}"
    return EventsPage(
        node_query,
        node,
        found.items,
        found.total,
        number,
        hostnames,
        page_error,
        filters=filters,
    )
