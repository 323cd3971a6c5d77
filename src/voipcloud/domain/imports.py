"""Enrolling many nodes at once: the import's rows, its answer, and the CSV form (pure, no I/O).

`POST /api/v1/nodes/import` takes up to `MAX_IMPORT` rows, each the fields of Add Node plus
the roles to assign (each as Assign Role takes it: a code, with optional parameters). Every
row is checked by the very rules of the single-node path (the services call the same checks:
field normalization, role parameters, the rulebook's Assign Role decision, the hostname rule)
and the answer is one `ImportResult` per row, in the order given: `created` (with the NodeID
and the session key its agent joins with, when it got a role), or `refused` with the field
and/or the rule and the sentence. A refused row creates nothing (never a node without the
roles it asked for); the other rows are created. Two rows with the same hostname: the first
that passes is created, the later ones are refused by `hostname-unique`, as a second Add Node
would be. docs/operations.md, "Enrolling many nodes".

The CSV form (the CLI's `node import FILE.csv`, the web's upload) has a header row naming
`hostname`, `private_ip` and optionally `public_ip`, `container_id`, `roles` (codes separated
by spaces, `;` or `,`) and one column per role parameter, named `<role>.<parameter>`
(`sip.sip_port`): a row's empty cells are left out.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from voipcloud.domain.errors import FieldError, InvalidInput

MAX_IMPORT = 5000  # rows per call (as a bulk action's selection)
MAX_ROLES_PER_ROW = 16
MAX_CSV_BYTES = 4 * 1024 * 1024  # a 5,000-row CSV with a few parameters is well below
NODE_COLUMNS = ("hostname", "private_ip", "public_ip", "container_id")
ROLES_COLUMN = "roles"
_ROLE_SEPARATORS = re.compile(r"[\s;,]+")
_PARAMETER_COLUMN = re.compile(r"^([a-z0-9_-]{1,16})\.([A-Za-z0-9_]{1,64})$")


class ImportOutcome(StrEnum):
    CREATED = "created"  # the node exists with every role its row asked for
    REFUSED = "refused"  # nothing was created for this row


@dataclass(frozen=True, slots=True)
class RoleRequest:
    """One role of a row, as Assign Role takes it."""

    role: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One node to enrol: the fields of Add Node and the roles to assign, in order."""

    hostname: str
    private_ip: str
    public_ip: str | None = None
    container_id: str | None = None
    roles: tuple[RoleRequest, ...] = ()

    def fields(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "private_ip": self.private_ip,
            "public_ip": self.public_ip,
            "container_id": self.container_id,
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    index: int  # the row's position in the request, from 0
    outcome: ImportOutcome
    hostname: str | None = None  # as normalized (created), or as given (refused)
    node_id: int | None = None
    session_key: str | None = None  # created with at least one role: what its agent joins with
    field: str | None = None  # refused: the row's field at fault ("hostname", "roles.0.role")
    rule: str | None = None  # refused by a rule: its code (as the single-node 409 names it)
    reason: str | None = None  # refused: the sentence

    @property
    def created(self) -> bool:
        return self.outcome is ImportOutcome.CREATED


def summary(results: Sequence[ImportResult]) -> tuple[int, int]:
    """(created, refused)."""
    created = sum(1 for r in results if r.created)
    return created, len(results) - created


def field_name(loc: Sequence[str | int]) -> str:
    """A FieldError's place within a row, dotted: ("body", "hostname") -> "hostname"."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "row"


def check_count(count: int, *, where: str = "body") -> None:
    """Between 1 and MAX_IMPORT rows; InvalidInput naming `nodes` otherwise."""
    if count < 1:
        raise InvalidInput.one((where, "nodes"), "give at least one node")
    if count > MAX_IMPORT:
        raise InvalidInput.one(
            (where, "nodes"), f"{count} nodes given; at most {MAX_IMPORT} per call: split the file"
        )


def role_codes(cell: str) -> list[str]:
    """The role codes of a CSV cell ("sip wk", "sip;wk", "sip,wk"), lower-cased, in order."""
    return [code.lower() for code in _ROLE_SEPARATORS.split(cell.strip()) if code]


def rows_from_csv(text: str) -> list[dict[str, Any]]:
    """The CSV form as the import's JSON rows; InvalidInput naming the `file` (the header or the
    line) when it is not that form. Values are checked later, row by row, by the services."""
    if len(text.encode(errors="replace")) > MAX_CSV_BYTES:
        raise InvalidInput.one(("file",), f"larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise InvalidInput.one(("file",), "empty: the first line names the columns")
        columns = [cell.strip().lower() for cell in header]
        _check_header(columns)
        rows: list[dict[str, Any]] = []
        for line, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # blank lines
            if len(rows) >= MAX_IMPORT:
                raise InvalidInput.one(
                    ("file",), f"more than {MAX_IMPORT} nodes; at most {MAX_IMPORT} per call"
                )
            if len(cells) > len(columns):
                raise InvalidInput.one(
                    ("file",),
                    f"line {line}: {len(cells)} cells for {len(columns)} columns",
                )
            rows.append(_row(dict(zip(columns, cells, strict=False)), line))
    except csv.Error as exc:
        raise InvalidInput.one(("file",), f"not CSV: {exc}") from exc
    if not rows:
        raise InvalidInput.one(("file",), "no nodes: only the header line")
    return rows


def _check_header(columns: list[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise InvalidInput.one(("file",), f"column {name!r} appears twice")
        seen.add(name)
        if name in NODE_COLUMNS or name == ROLES_COLUMN or _PARAMETER_COLUMN.match(name):
            continue
        known = ", ".join((*NODE_COLUMNS, ROLES_COLUMN))
        raise InvalidInput.one(
            ("file",),
            f"unknown column {name!r}; known: {known}, and <role>.<parameter> for role "
            "parameters (e.g. sip.sip_port)",
        )
    for needed in ("hostname", "private_ip"):
        if needed not in seen:
            raise InvalidInput.one(("file",), f"the header needs a {needed} column")


def _row(cells: dict[str, str], line: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hostname": cells.get("hostname", "").strip(),
        "private_ip": cells.get("private_ip", "").strip(),
    }
    for name in ("public_ip", "container_id"):
        value = cells.get(name, "").strip()
        if value:
            row[name] = value
    codes = role_codes(cells.get(ROLES_COLUMN, ""))
    parameters: dict[str, dict[str, str]] = {code: {} for code in codes}
    for name, value in cells.items():
        match = _PARAMETER_COLUMN.match(name)
        if match is None or not value.strip():
            continue
        code, parameter = match.group(1), match.group(2)
        if code not in parameters:
            raise InvalidInput.one(
                ("file",),
                f"line {line}: {name} is given but the row's roles do not include {code}",
            )
        parameters[code][parameter] = value.strip()
    if codes:
        row["roles"] = [
            {"role": code, "parameters": parameters[code]} if parameters[code] else code
            for code in codes
        ]
    return row


def row_of(data: Mapping[str, Any]) -> ImportRow:
    """A row of the CSV form (`rows_from_csv`) as the import takes it."""
    roles = tuple(
        RoleRequest(role=r) if isinstance(r, str) else RoleRequest(r["role"], r["parameters"])
        for r in data.get("roles", ())
    )
    return ImportRow(
        hostname=data["hostname"],
        private_ip=data["private_ip"],
        public_ip=data.get("public_ip"),
        container_id=data.get("container_id"),
        roles=roles,
    )


def keys_csv(results: Sequence[ImportResult]) -> str:
    """The created nodes' session keys as CSV (node_id,hostname,session_key): the file an
    operator hands to the nodes' installation, never printed on a shared terminal."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["node_id", "hostname", "session_key"])
    for result in results:
        if result.created and result.session_key:
            writer.writerow([result.node_id, result.hostname, result.session_key])
    return out.getvalue()


def describe(result: ImportResult) -> str:
    """One line for people: "created (NodeID 12)" or the refusal with its field and rule."""
    if result.created:
        return f"created (NodeID {result.node_id})"
    where = f"{result.field}: " if result.field else ""
    rule = f" [{result.rule}]" if result.rule else ""
    return f"refused: {where}{result.reason}{rule}"


def from_invalid(
    index: int, hostname: str | None, exc: InvalidInput, *, prefix: str = ""
) -> ImportResult:
    """A row refused for its input: the first field at fault, and every message.
    `prefix` places the fields within the row ("roles.0." for its first role)."""
    errors = exc.errors or [FieldError(("body",), str(exc))]
    names = [prefix + field_name(e.loc) for e in errors]
    if len(errors) == 1:
        reason = errors[0].message
    else:
        reason = "; ".join(f"{n}: {e.message}" for n, e in zip(names, errors, strict=True))
    return ImportResult(
        index=index, outcome=ImportOutcome.REFUSED, hostname=hostname, field=names[0], reason=reason
    )
