"""Enrolling many nodes: Add Node and Assign Role for each row, written in a few transactions.

Each row goes through the checks of the single-node path, called from where they live:
`nodes.clean_new_node` (the fields), `RoleService.check_request` (each role and its
parameters), the rulebook's Assign Role decision (`policy.decide`, over the facts of the node
the row would create, role after role) and `RoleService.check_effective` (the parameters with
the Infrastructure Properties), then the hostname rule (`nodes.hostname_taken`) against the
live nodes and the rows before it. A row that passes is written exactly as Add Node followed
by Assign Role for each role would leave it: the node Offline with a session key (when it got
a role) and one configuration generation per role, its assignments, and the same events
(`add-node`, then one `assign-role` per role, with the actor): so the history, the metrics
and the webhooks, which read the event log, see the same thing. A refused row writes nothing.

The rows that pass are written `CHUNK` at a time, each chunk in one transaction (multi-row
inserts), under the lock that Add Node and Assign Role take (the extension count, the
Configuration Wizard's node count). A chunk that loses a race on a unique index (a node
given the same hostname meanwhile) is written again row by row, so that only the row at fault
is refused. The database going away after some chunks: what was written stays, the rest is
answered refused (`database-unavailable`, not attempted), as bulk actions do.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voipcloud.domain import imports, policy
from voipcloud.domain.errors import DatabaseUnavailable, InvalidInput, RuleViolation
from voipcloud.domain.imports import ImportOutcome, ImportResult, ImportRow
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.policy import RULE_FIELDS, NodeFacts
from voipcloud.domain.roles import Role
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.context import Context
from voipcloud.services.nodes import NodeService, clean_new_node, hostname_taken
from voipcloud.services.roles import RoleService, assigned_reason
from voipcloud.services.secrets_box import new_session_key
from voipcloud.services.transitions import planned_status
from voipcloud.store import enrolment as rows
from voipcloud.store import extensions, infrastructure
from voipcloud.store.database import Database

log = logging.getLogger("voipcloud.imports")

CHUNK = 250  # nodes per write transaction
SQLITE_PAUSE = 0.005  # s between two chunks on SQLite: the other writers get a turn
ADD_OPERATION = "add-node"


@dataclass(frozen=True, slots=True)
class _Checked:
    """A row whose fields and roles passed the checks that need no database."""

    index: int
    fields: dict[str, Any]  # normalized as Add Node stores them
    roles: tuple[tuple[Role, dict[str, Any]], ...]  # each role with its explicit parameters


def _refused(
    index: int,
    hostname: str | None,
    *,
    reason: str,
    rule: str | None = None,
    field: str | None = None,
) -> ImportResult:
    return ImportResult(
        index=index,
        outcome=ImportOutcome.REFUSED,
        hostname=hostname,
        field=field,
        rule=rule,
        reason=reason,
    )


class ImportService:
    def __init__(self, ctx: Context, *, nodes: NodeService, roles: RoleService) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._roles = roles

    def run(self, requested: Sequence[ImportRow], *, actor: str) -> list[ImportResult]:
        """One result per row, in order (see the module's docstring)."""
        imports.check_count(len(requested))
        results: dict[int, ImportResult] = {}
        passed: list[_Checked] = []
        for index, row in enumerate(requested):
            checked = self._check(index, row)
            if isinstance(checked, ImportResult):
                results[index] = checked
            else:
                passed.append(checked)
        claimed: set[str] = set()  # the hostnames of the rows written so far
        pause = SQLITE_PAUSE if self._ctx.db.dialect == "sqlite" else 0.0
        for start in range(0, len(passed), CHUNK):
            chunk = passed[start : start + CHUNK]
            if pause and start:
                time.sleep(pause)
            try:
                written = self._write_safely(chunk, actor=actor, claimed=claimed)
            except DatabaseUnavailable as exc:
                if not any(r.created for r in results.values()):
                    raise  # nothing written: the usual 503
                log.warning("import stopped by the database: %s", exc.reason)
                for rest in passed[start:]:
                    results[rest.index] = _refused(
                        rest.index,
                        rest.fields["hostname"],
                        rule="database-unavailable",
                        reason=f"not attempted: {exc.message}",
                    )
                break
            results.update((r.index, r) for r in written)
        return [results[i] for i in range(len(requested))]

    # checks that need no database: the fields, each role and its parameters
    def _check(self, index: int, row: ImportRow) -> _Checked | ImportResult:
        try:
            fields = clean_new_node(**row.fields())
        except InvalidInput as exc:
            return imports.from_invalid(index, row.hostname, exc)
        if len(row.roles) > imports.MAX_ROLES_PER_ROW:
            return _refused(
                index,
                fields["hostname"],
                field="roles",
                reason=f"at most {imports.MAX_ROLES_PER_ROW} roles per node",
            )
        roles: list[tuple[Role, dict[str, Any]]] = []
        for position, request in enumerate(row.roles):
            try:
                roles.append(self._roles.check_request(request.role, dict(request.parameters)))
            except InvalidInput as exc:
                return imports.from_invalid(
                    index, fields["hostname"], exc, prefix=f"roles.{position}."
                )
        return _Checked(index=index, fields=fields, roles=tuple(roles))

    def _write_safely(
        self, chunk: list[_Checked], *, actor: str, claimed: set[str]
    ) -> list[ImportResult]:
        try:
            return self._write(chunk, actor=actor, claimed=claimed)
        except RuleViolation as exc:  # a race lost on a unique index
            if len(chunk) == 1:
                only = chunk[0]
                return [
                    _refused(
                        only.index,
                        only.fields["hostname"],
                        rule=exc.rule,
                        reason=exc.message,
                        field=RULE_FIELDS.get(exc.rule),
                    )
                ]
            log.info("import: a chunk lost a race (%s); writing it row by row", exc.rule)
            written: list[ImportResult] = []
            for one in chunk:
                written.extend(self._write_safely([one], actor=actor, claimed=claimed))
            return written

    def _decide(
        self,
        checked: _Checked,
        *,
        extension_count: int,
        properties: dict[str, Any],
    ) -> ImportResult | None:
        """The rulebook's Assign Role for each role, in order, on the node the row would
        create (as it would be after the roles before it); None when every role may be."""
        fields = checked.fields
        facts = NodeFacts(
            hostname=fields["hostname"],
            status=NodeStatus.OFFLINE,
            has_public_ip=bool(fields["public_ip"]),
            extension_count=extension_count,
        )
        for position, (spec, explicit) in enumerate(checked.roles):
            decision = policy.decide(Operation.ASSIGN_ROLE, facts, role=spec.code)
            if not decision.allowed:
                rule = decision.rule or "refused"
                return _refused(
                    checked.index,
                    fields["hostname"],
                    rule=rule,
                    reason=decision.reason or rule,
                    field=RULE_FIELDS.get(rule, f"roles.{position}.role"),
                )
            try:
                RoleService.check_effective(
                    spec, explicit, properties=properties, public_ip=fields["public_ip"]
                )
            except InvalidInput as exc:
                return imports.from_invalid(
                    checked.index, fields["hostname"], exc, prefix=f"roles.{position}."
                )
            facts = dataclasses.replace(
                facts, roles=facts.roles | {spec.code}, has_session_key=True
            )
        return None

    def _write(self, chunk: list[_Checked], *, actor: str, claimed: set[str]) -> list[ImportResult]:
        results: list[ImportResult] = []
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            # what Add Node and Assign Role lock: the Wizard's node count, the extension count
            infrastructure.lock(conn)
            extension_count = extensions.count(conn)
            properties = self._roles.reveal(infrastructure.properties(conn))
            taken = rows.live_hostnames(conn, (c.fields["hostname"] for c in chunk))
            mine: set[str] = set()
            creating: list[tuple[_Checked, str | None, list[NodeStatus]]] = []
            node_values: list[dict[str, Any]] = []
            for checked in chunk:
                refusal = self._decide(
                    checked, extension_count=extension_count, properties=properties
                )
                hostname = checked.fields["hostname"]
                if refusal is None and (
                    hostname in taken or hostname in claimed or hostname in mine
                ):
                    taken_rule = hostname_taken(hostname)
                    refusal = _refused(
                        checked.index,
                        hostname,
                        rule=taken_rule.rule,
                        reason=taken_rule.message,
                        field=RULE_FIELDS.get(taken_rule.rule),
                    )
                if refusal is not None:
                    results.append(refusal)
                    continue
                mine.add(hostname)
                key = new_session_key() if checked.roles else None
                # the status after Add Node, then after each Assign Role (the status table's
                # answer: a new node stays Offline)
                statuses = [NodeStatus.OFFLINE]
                for _role in checked.roles:
                    statuses.append(
                        planned_status(Operation.ASSIGN_ROLE, statuses[-1], hostname=hostname)
                    )
                creating.append((checked, key, statuses))
                node_values.append(self._node_values(checked, key, statuses[-1], now=now))
            ids = rows.insert_nodes(conn, node_values)
            assignments: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            for (checked, key, statuses), node_id in zip(creating, ids, strict=True):
                hostname = checked.fields["hostname"]
                history.append(
                    self._event(
                        node_id,
                        actor=actor,
                        now=now,
                        operation=ADD_OPERATION,
                        before=None,
                        after=statuses[0],
                        reason=f"node {hostname} added",
                    )
                )
                for position, (spec, explicit) in enumerate(checked.roles):
                    assignments.append(
                        {
                            "node_id": node_id,
                            "role": spec.code,
                            "parameters": self._roles.encrypt(spec, explicit),
                            "created_at": now,
                            "updated_at": now,
                            "row_version": 1,
                        }
                    )
                    history.append(
                        self._event(
                            node_id,
                            actor=actor,
                            now=now,
                            operation=Operation.ASSIGN_ROLE.value,
                            before=statuses[position],
                            after=statuses[position + 1],
                            reason=assigned_reason(spec.code),
                        )
                    )
                Database.mark_changed(conn, node_id)
                results.append(
                    ImportResult(
                        index=checked.index,
                        outcome=ImportOutcome.CREATED,
                        hostname=hostname,
                        node_id=node_id,
                        session_key=key,
                    )
                )
            rows.insert_assignments(conn, assignments)
            rows.insert_events(conn, history)
        claimed.update(mine)  # committed
        return results

    def _node_values(
        self, checked: _Checked, key: str | None, status: NodeStatus, *, now: Any
    ) -> dict[str, Any]:
        """The row Add Node writes, then each Assign Role's change: one configuration
        generation and one version per role, the session key with the first."""
        assigned = len(checked.roles)
        values: dict[str, Any] = {
            **checked.fields,
            "status": status.value,
            "is_controller": False,
            "config_generation": 1 + assigned,
            "created_at": now,
            "updated_at": now,
            "row_version": 1 + assigned,
            "session_key_encrypted": None,
            "session_key_digest": None,
        }
        if key is not None:
            values["session_key_encrypted"] = self._ctx.box.encrypt(key)
            values["session_key_digest"] = self._ctx.box.digest(key)
        return values

    @staticmethod
    def _event(
        node_id: int,
        *,
        actor: str,
        now: Any,
        operation: str,
        before: NodeStatus | None,
        after: NodeStatus,
        reason: str,
    ) -> dict[str, Any]:
        """The event the single-node path appends (store.events.append's columns)."""
        return {
            "at": now,
            "actor": actor,
            "node_id": node_id,
            "operation": operation,
            "status_before": before.value if before else None,
            "status_after": after.value,
            "reason": reason,
        }
