"""Bulk actions: the selection, then each node through its own single-node path.

Each node runs exactly the service call its single-node interface runs (NodeService.action,
.delete, RoleService.assign, .unassign), in its own transaction, asked to leave the node out
when it is in maintenance (unless the request includes those): so every node is checked
against its own rules, a node is never half-changed, and one refusal does not undo the
others. The answer is one result per node, in the order of the selection.
"""

from __future__ import annotations

import logging
import time

from voipcloud.domain import bulk
from voipcloud.domain.bulk import BulkRequest, BulkResult, Outcome, Selection
from voipcloud.domain.errors import DatabaseUnavailable, InvalidInput, NotFound, RuleViolation
from voipcloud.domain.model import Node
from voipcloud.services.context import Context
from voipcloud.services.nodes import NodeService
from voipcloud.services.roles import RoleService
from voipcloud.store import maintenance as maintenance_rows
from voipcloud.store import nodes as node_rows

log = logging.getLogger("voipcloud.bulk")


class BulkService:
    def __init__(self, ctx: Context, *, nodes: NodeService, roles: RoleService) -> None:
        self._ctx = ctx
        self._nodes = nodes
        self._roles = roles

    def select(self, selection: Selection) -> list[int]:
        """The node ids to act on: the named ones, or what the filter matches now (at most
        MAX_SELECTION; more is refused with a 422 naming the filter and the count)."""
        if selection.node_ids is not None:
            return list(selection.node_ids)
        assert selection.filter is not None
        with self._ctx.db.read() as conn:
            ids, total = node_rows.matching_ids(conn, selection.filter, at_most=bulk.MAX_SELECTION)
        if total > bulk.MAX_SELECTION:
            raise bulk.too_many(total)
        return ids

    def preview(self, ids: list[int], *, at_most: int) -> tuple[list[Node], int]:
        """The first `at_most` nodes of a selection, and how many of all are in maintenance
        (what a confirmation names before the action runs)."""
        with self._ctx.db.read() as conn:
            shown = [n for i in ids[:at_most] if (n := node_rows.get(conn, i)) is not None]
            kept = maintenance_rows.count_among(conn, ids)
        return shown, kept

    def run(self, request: BulkRequest, *, actor: str) -> list[BulkResult]:
        request = bulk.check_request(request)
        results: list[BulkResult] = []
        ids = self.select(request.selection)
        with self._ctx.db.read() as conn:
            known = node_rows.existing_ids(conn, ids)
        # SQLite has one writer at a time, and a writer that releases its lock and takes it
        # again at once starves the others waiting for it (agents' reports, other requests):
        # a selection of thousands gives them a turn between two nodes
        pause = 0.002 if self._ctx.db.dialect == "sqlite" else 0.0
        for position, node_id in enumerate(ids):
            if node_id not in known:  # no write transaction for what names no node
                results.append(
                    BulkResult(
                        node_id=node_id,
                        outcome=Outcome.REFUSED,
                        reason=f"Node {node_id} does not exist.",
                    )
                )
                continue
            if pause and position:
                time.sleep(pause)
            try:
                results.append(self._one(request, node_id, actor=actor))
            except DatabaseUnavailable as exc:
                if not results:
                    raise  # nothing done: the usual 503
                # what was done stays done; the rest is reported as not attempted
                log.warning("bulk %s stopped by the database: %s", request.action, exc.reason)
                results.extend(
                    BulkResult(
                        node_id=rest,
                        outcome=Outcome.REFUSED,
                        rule="database-unavailable",
                        reason=f"not attempted: {exc.message}",
                    )
                    for rest in ids[position:]
                )
                break
        return results

    def _one(self, request: BulkRequest, node_id: int, *, actor: str) -> BulkResult:
        leave_out = not request.include_maintenance
        try:
            node = self._act(request, node_id, actor=actor, leave_out=leave_out)
        except RuleViolation as exc:
            return self._refused(node_id, rule=exc.rule, reason=exc.message)
        except (NotFound, InvalidInput) as exc:
            reason = exc.message if isinstance(exc, NotFound) else str(exc)
            return self._refused(node_id, rule=None, reason=reason)
        return BulkResult(
            node_id=node.id,
            outcome=Outcome.DONE,
            hostname=node.hostname,
            status=node.status.value,
        )

    def _act(self, request: BulkRequest, node_id: int, *, actor: str, leave_out: bool) -> Node:
        action = request.action
        if action == "delete":
            return self._nodes.delete(
                node_id, actor=actor, reason=request.reason, leave_out_maintenance=leave_out
            )
        if action == "assign-role":
            assert request.role is not None
            return self._roles.assign(
                node_id,
                actor=actor,
                role=request.role,
                parameters=dict(request.parameters or {}),
                leave_out_maintenance=leave_out,
            ).node
        if action == "delete-assignment":
            assert request.role is not None
            return self._roles.unassign(
                node_id, actor=actor, role=request.role, leave_out_maintenance=leave_out
            )
        return self._nodes.action(
            node_id,
            action,
            actor=actor,
            reason=request.reason,
            force=request.force,
            leave_out_maintenance=leave_out,
        )

    def _refused(self, node_id: int, *, rule: str | None, reason: str) -> BulkResult:
        hostname = status = None
        try:
            with self._ctx.db.read() as conn:
                found = node_rows.get(conn, node_id) if 0 < node_id < 2**31 else None
        except DatabaseUnavailable:
            found = None
        if found is not None:
            hostname, status = found.hostname, found.status.value
        return BulkResult(
            node_id=node_id,
            outcome=Outcome.REFUSED,
            hostname=hostname,
            status=status,
            rule=rule,
            reason=reason,
        )
