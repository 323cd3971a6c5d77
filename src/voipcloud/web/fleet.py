"""View models of fleet operations: the status counters above the Node Listing, and what the
bulk action bar, its confirmation and its result page show (no HTTP, no rules here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voipcloud.domain import bulk
from voipcloud.domain.bulk import BulkResult
from voipcloud.domain.roles import CONTROLLER_ROLE, ROLES, Role
from voipcloud.domain.statuses import STATUS_INFO, NodeStatus, StatusInfo
from voipcloud.services.maintenance import Summary

if TYPE_CHECKING:
    from voipcloud.web.views import ListingRequest


@dataclass(frozen=True, slots=True)
class Counter:
    key: str  # "all", a status value, or "maintenance"
    label: str
    count: int
    url: str
    current: bool
    info: StatusInfo | None = None  # a status's colour and meaning


@dataclass(frozen=True, slots=True)
class Counters:
    """One link per status (and "all live", "in maintenance"), each the listing filtered to
    it with the other filters kept (search, role, page size, sort; back to page 1)."""

    items: list[Counter]
    key: str  # what the counts are, for the listing's fingerprint

    @classmethod
    def of(cls, summary: Summary, request: ListingRequest) -> Counters:
        def url(status: str, maintenance: str) -> str:
            return request.url("/", status=status, maintenance=maintenance, page=1)

        items = [
            Counter(
                "all",
                "All live",
                summary.live,
                url("", ""),
                not request.status and not request.maintenance,
            )
        ]
        for status in NodeStatus:
            info = STATUS_INFO[status]
            label = f"{info.label} (history)" if status is NodeStatus.DELETED else info.label
            items.append(
                Counter(
                    status.value,
                    label,
                    summary.count(status),
                    url(status.value, request.maintenance),
                    request.status == status.value,
                    info,
                )
            )
        items.append(
            Counter(
                "maintenance",
                "In maintenance",
                summary.in_maintenance,
                url(request.status, "yes"),
                request.maintenance == "yes",
            )
        )
        key = ",".join(f"{c.key}={c.count}" for c in items)
        return cls(items=items, key=key)


# the action bar: (action, label) in the order offered
BULK_CHOICES: list[tuple[str, str]] = [(action, bulk.title(action)) for action in bulk.ACTIONS]


def bulk_roles() -> list[Role]:
    """The roles the bar offers for Assign Role / Delete Assignment (never `ic`)."""
    return [r for r in ROLES.values() if r.code != CONTROLLER_ROLE]


@dataclass(frozen=True, slots=True)
class BulkForm:
    """What the bar posted, carried through the confirmation as hidden fields."""

    action: str
    node_ids: list[int]
    all_matching: bool
    filter: dict[str, Any]  # status, role, q, maintenance (only those given)
    include_maintenance: bool
    role: str
    reason: str
    next: str

    @property
    def title(self) -> str:
        return bulk.title(self.action) if self.action in bulk.ACTIONS else self.action

    def hidden(self) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = [
            ("action", self.action),
            ("bulk_role", self.role),
            ("reason", self.reason),
            ("next", self.next),
        ]
        if self.include_maintenance:
            fields.append(("include_maintenance", "yes"))
        if self.all_matching:
            fields.append(("all_matching", "yes"))
            for name, value in self.filter.items():
                fields.append((f"f_{name}", _form_value(value)))
        else:
            fields.extend(("node_ids", str(node_id)) for node_id in self.node_ids)
        return fields


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    form: BulkForm
    results: list[BulkResult]

    @property
    def done(self) -> int:
        return bulk.summary(self.results)[0]

    @property
    def refused(self) -> int:
        return bulk.summary(self.results)[1]
