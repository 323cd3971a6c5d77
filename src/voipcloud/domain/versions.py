"""Optimistic concurrency: versions, ETags, and the refusal of a stale write.

Every node, role assignment, the Infrastructure Properties and the Storage Configuration carry
a version (a `row_version` column bumped by every write). A reader gets it as an ETag::

    "7-Qk3x9A"        node, role assignment, properties: the version, then field digests
    "3.1.0-Qk3x9A"    storage: the version of each kind (faxes.recordings.voicemail)

The part after the dash is two bytes of a digest of each visible field as read: it lets a
refusal name the fields that changed since, without keeping any history. It plays no part in
the decision, which compares versions only. Secret values are never digested (their masks
are), so an ETag says nothing about a password.

A writer sends the ETag back in `If-Match` (or the web form its hidden `version`); the service
checks it inside the write transaction against the row it has just read, and the write itself
is a compare-and-set on that version (`UPDATE ... WHERE row_version = ?`): no other write can
slip between the check and the write. A stale one raises `StaleVersion` (API 412, rule
`stale-version`); without `If-Match` a write proceeds as before.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voipcloud.domain.errors import RuleViolation

STALE_RULE = "stale-version"
_DIGEST_BYTES = 2
_TOKEN = re.compile(
    r'^(?:W/)?"?(?P<version>\d{1,10}(?:\.\d{1,10}){0,7})(?:-(?P<digest>[A-Za-z0-9_-]*))?"?$'
)


def _plain(value: Any) -> Any:
    """Enums by their value: a digest must not depend on how a field is typed in code."""
    if isinstance(value, tuple | list):
        return tuple(_plain(v) for v in value)
    return getattr(value, "value", value)


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(repr(_plain(value)).encode(), digest_size=_DIGEST_BYTES).digest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A resource as read: what it is (for messages), its version, its visible fields."""

    what: str  # "node edge-01", "role sip of node edge-01", "the Infrastructure Properties"
    version: str  # "7", or "3.1.0" for a resource made of several rows
    fields: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, what: str, version: int | str, fields: Mapping[str, Any]) -> Snapshot:
        return cls(what, str(version), tuple(fields.items()))

    @property
    def etag(self) -> str:
        digests = b"".join(_digest(value) for _, value in self.fields)
        encoded = base64.urlsafe_b64encode(digests).decode().rstrip("=")
        return f'"{self.version}-{encoded}"'

    def changed_since(self, digest: str | None) -> list[str] | None:
        """The fields whose digest differs from `digest` (an older ETag's); None when the old
        digests cannot be compared (another shape, or none sent)."""
        if digest is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        except ValueError:
            return None
        if len(raw) != _DIGEST_BYTES * len(self.fields):
            return None
        old = [raw[i : i + _DIGEST_BYTES] for i in range(0, len(raw), _DIGEST_BYTES)]
        return [
            name
            for (name, value), before in zip(self.fields, old, strict=True)
            if _digest(value) != before
        ]


@dataclass(frozen=True, slots=True)
class Expected:
    """The version(s) a writer read (from `If-Match` or a form); `any` for `If-Match: *`."""

    versions: tuple[tuple[str, str | None], ...] = ()  # (version, digest) per entity tag
    any: bool = False

    @classmethod
    def version(cls, version: int | str) -> Expected:
        return cls(((str(version), None),))

    @classmethod
    def parse(cls, header: str | None) -> Expected | None:
        """An `If-Match` header; None when absent. Raises ValueError for a malformed one."""
        if header is None or not header.strip():
            return None
        if header.strip() == "*":
            return cls(any=True)
        found = []
        for part in header.split(","):
            match = _TOKEN.match(part.strip())
            if match is None:
                raise ValueError(
                    'If-Match must be an ETag this server gave (e.g. "7-Qk3x9A"), or *'
                )
            found.append((match["version"], match["digest"]))
        return cls(tuple(found))

    @classmethod
    def of_form(cls, token: str | None) -> Expected | None:
        """The hidden `version` field of a web form (an ETag); None when empty or unreadable
        (a form of an older page: it proceeds as before)."""
        try:
            return cls.parse(token)
        except ValueError:
            return None

    def matches(self, current: Snapshot) -> bool:
        return self.any or any(version == current.version for version, _ in self.versions)


class StaleVersion(RuleViolation):
    """The resource changed since the writer read it: nothing was written."""

    def __init__(self, current: Snapshot, read: str, changed: list[str] | None) -> None:
        names = ", ".join(changed) if changed else ""
        what_changed = f"changed: {names}" if names else "a value that is not shown changed"
        super().__init__(
            STALE_RULE,
            f"{current.what[:1].upper()}{current.what[1:]} was changed by someone else since "
            f"you read it (version {read}, now {current.version}); {what_changed}. Nothing "
            "was saved: read it again and make your change on the current values.",
        )
        self.current = current
        self.changed = changed or []
        self.read = read


def check(expected: Expected | None, current: Snapshot) -> None:
    """Refuse a write whose writer read an older version. Call it inside the write
    transaction, on the row just read, and make the write a compare-and-set on it."""
    if expected is None or expected.matches(current):
        return
    version, digest = expected.versions[0]
    raise StaleVersion(current, version, current.changed_since(digest))


# --- the snapshots of each kind of resource ------------------------------------------------


def node_snapshot(node: Any) -> Snapshot:
    """A node (`domain.model.Node`) as a client sees it."""
    return Snapshot.of(
        f"node {node.hostname}",
        node.row_version,
        {
            "hostname": node.hostname,
            "private_ip": node.private_ip,
            "public_ip": node.public_ip,
            "container_id": node.container_id,
            "status": node.status,
            "status_reason": node.status_reason,
            "pending_operation": node.pending_operation,
            "roles": tuple(node.roles),
            "maintenance": node.maintenance.reason if node.maintenance else None,
        },
    )


def role_snapshot(
    hostname: str,
    role: str,
    version: int,
    *,
    names: list[str],
    explicit: Mapping[str, Any],
    secret: frozenset[str] = frozenset(),
) -> Snapshot:
    """A role assignment: each declared parameter, its explicit value or "default"."""
    fields: dict[str, Any] = {}
    for name in names:
        if name not in explicit:
            fields[name] = ("default",)
        else:
            fields[name] = ("set",) if name in secret else ("set", explicit[name])
    return Snapshot.of(f"role {role} of node {hostname}", version, fields)


def assignment_snapshot(hostname: str, spec: Any, assignment: Any) -> Snapshot:
    """A role assignment (`domain.model.RoleAssignment` of the role `spec`) as stored."""
    return role_snapshot(
        hostname,
        spec.code,
        assignment.row_version,
        names=[p.name for p in spec.parameters],
        explicit=assignment.parameters,
        secret=frozenset(p.name for p in spec.parameters if spec.is_secret(p.name)),
    )


def properties_snapshot(version: int, masked: Mapping[str, Any]) -> Snapshot:
    """The Infrastructure Properties, secret ones masked."""
    return Snapshot.of(
        "the Infrastructure Properties", version, {name: masked[name] for name in sorted(masked)}
    )
