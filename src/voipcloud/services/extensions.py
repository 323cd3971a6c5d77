"""The extensions registry (two lifecycle rules count its entries)."""

from __future__ import annotations

import re

from voipcloud.domain.errors import FieldError, InvalidInput, NotFound, RuleViolation
from voipcloud.domain.model import Extension, Page
from voipcloud.services.context import Context
from voipcloud.store import events, infrastructure
from voipcloud.store import extensions as rows

NUMBER = re.compile(r"^[0-9]{1,20}$")
MAX_LABEL = 255


class ExtensionService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def list(self, *, limit: int = 100, offset: int = 0) -> Page[Extension]:
        with self._ctx.db.read() as conn:
            return rows.page(conn, limit=limit, offset=offset)

    def count(self) -> int:
        with self._ctx.db.read() as conn:
            return rows.count(conn)

    def add(self, *, actor: str, number: str, label: str = "") -> Extension:
        errors = []
        number = number.strip()
        if not NUMBER.match(number):
            errors.append(FieldError(("body", "number"), "must be 1 to 20 digits"))
        if len(label) > MAX_LABEL:
            errors.append(FieldError(("body", "label"), f"must be at most {MAX_LABEL} characters"))
        if errors:
            raise InvalidInput(errors)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            infrastructure.lock(conn)
            if rows.exists(conn, number):
                raise RuleViolation("extension-unique", f"Extension {number} already exists.")
            rows.add(conn, number=number, label=label.strip(), now=now)
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="add-extension",
                reason=f"extension {number} provisioned",
            )
        return Extension(number=number, label=label.strip(), created_at=now)

    def remove(self, *, actor: str, number: str) -> None:
        if not NUMBER.match(number):  # not an extension number: nothing to look up
            raise NotFound(f"Extension {number!r} does not exist.")
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            infrastructure.lock(conn)
            if not rows.remove(conn, number):
                raise NotFound(f"Extension {number} does not exist.")
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="delete-extension",
                reason=f"extension {number} removed",
            )
