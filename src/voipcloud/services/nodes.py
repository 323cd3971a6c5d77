"""Node use cases: add, edit, delete, the lifecycle actions, reads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from voipcloud.domain import lifecycle, policy, validation, versions
from voipcloud.domain.errors import FieldError, InvalidInput, RuleViolation
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.model import Event, Node, Page
from voipcloud.domain.policy import NodeFacts
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services import transitions
from voipcloud.services.context import Context
from voipcloud.services.secrets_box import new_session_key
from voipcloud.services.transitions import Change, SessionKey
from voipcloud.store import events, extensions, infrastructure, kept_counts, roles
from voipcloud.store import maintenance as maintenance_rows
from voipcloud.store import nodes as node_rows
from voipcloud.store.maintenance import Summary

ACTIONS = {
    "standby": Operation.STANDBY,
    "activate": Operation.ACTIVATE,
    "deactivate": Operation.DEACTIVATE,
    "mark-damaged": Operation.MARK_DAMAGED,
    "fix": Operation.FIX,
    "regenerate-session-key": Operation.REGENERATE_SESSION_KEY,
}
MAX_CONTAINER_ID = 128
MAX_REASON = 1000
SHOWN_NAMES = 5  # the rulebook's sentences name five other nodes, then "and N more"

log = logging.getLogger("voipcloud.nodes")


@dataclass(frozen=True, slots=True)
class NodeDetails:
    node: Node
    session_key: str | None
    facts: NodeFacts  # what the rulebook looks at (agent connectivity: added by the caller)


@dataclass(frozen=True, slots=True)
class ListingRead:
    """What one poll of the Node Listing reads, in one transaction."""

    page: Page[Node]
    facts: dict[int, NodeFacts]
    extension_count: int
    summary: Summary  # the status counters


def facts_of(
    conn: Connection,
    found: Sequence[Node],
    *,
    quoted: bool = True,
    extension_count: int | None = None,
) -> dict[int, NodeFacts]:
    """The rulebook's facts about each node, read in the caller's transaction.

    `quoted=False` leaves out the other nodes the controller node's sentences name (who else
    carries a role, in Administrative Remove's warning; who else is live, in the Wizard's
    refusal): what the Node Listing asks, which shows whether each action is available but
    not those sentences (their pages read the facts again when they open). Reading those
    names was 7 % of the listing's first page at 50,000 nodes, for the controller's row alone.
    `extension_count`: the extensions already counted in this transaction."""
    if not found:
        return {}
    count = extensions.count(conn) if extension_count is None else extension_count
    result: dict[int, NodeFacts] = {}
    for node in found:
        carried: dict[str, tuple[str, ...]] = {}
        carried_count: dict[str, int] = {}
        others: tuple[str, ...] = ()
        others_count = 0
        if node.is_controller and quoted:  # Administrative Remove's warning and the Wizard
            # the sentences name five and count the rest: two indexed reads, not every node
            for role in node.roles:
                names, carried_count[role] = node_rows.other_live(
                    conn, besides=node.id, role=role, first=SHOWN_NAMES
                )
                carried[role] = tuple(hostname for hostname, _status in names)
            names, others_count = node_rows.other_live(conn, besides=node.id, first=SHOWN_NAMES)
            others = tuple(f"{hostname} ({status})" for hostname, status in names)
        result[node.id] = NodeFacts(
            hostname=node.hostname,
            status=node.status,
            roles=frozenset(node.roles),
            is_controller=node.is_controller,
            has_public_ip=bool(node.public_ip),
            extension_count=count,
            pending=node.pending_operation,
            has_session_key=node.has_session_key,
            carried_elsewhere=carried,
            carried_count=carried_count,
            other_live_nodes=others,
            other_live_count=others_count,
            maintenance=_maintenance_text(node),
        )
    return result


def _maintenance_text(node: Node) -> str | None:
    found = node.maintenance
    if found is None:
        return None
    return f"{found.reason}; set by {found.by} at {found.since:%Y-%m-%d %H:%M} UTC"


def node_facts(conn: Connection, node: Node) -> NodeFacts:
    return facts_of(conn, [node])[node.id]


def _clean_node_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Normalize hostname / IPs / container id; InvalidInput naming each bad field."""
    clean: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in values.items():
        try:
            if name == "hostname":
                clean[name] = validation.normalize_hostname(value)
            elif name == "private_ip":
                clean[name] = validation.normalize_ip(value)
            elif name == "public_ip":
                clean[name] = validation.normalize_ip(value) if value else None
            elif name == "container_id":
                if value and len(value) > MAX_CONTAINER_ID:
                    raise ValueError(f"must be at most {MAX_CONTAINER_ID} characters")
                if value:
                    validation.check_text(value)
                clean[name] = value.strip() or None if value else None
            else:
                raise ValueError("unknown field")
        except ValueError as exc:
            errors.append(FieldError(("body", name), str(exc)))
    if errors:
        raise InvalidInput(errors)
    return clean


def clean_new_node(
    *, hostname: str, private_ip: str, public_ip: str | None, container_id: str | None
) -> dict[str, Any]:
    """Add Node's fields, normalized; InvalidInput naming each bad field (Add Node and the
    import of many nodes, services/imports.py, check them here)."""
    return _clean_node_fields(
        {
            "hostname": hostname,
            "private_ip": private_ip,
            "public_ip": public_ip,
            "container_id": container_id,
        }
    )


def _check_reason(reason: str | None) -> str | None:
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidInput.one(("body", "reason"), f"must be at most {MAX_REASON} characters")
    if reason:
        try:
            validation.check_text(reason, multiline=True)
        except ValueError as exc:
            raise InvalidInput.one(("body", "reason"), str(exc)) from exc
    return reason.strip() or None if reason else None


class NodeService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._compaction_refused_said = False

    # reads
    def list(self, flt: NodeFilter) -> Page[Node]:
        with self._ctx.db.read() as conn:
            return node_rows.list_page(conn, flt)

    def listing(self, flt: NodeFilter) -> ListingRead:
        """One page of the listing, the rulebook's facts about its nodes (without the names the
        controller node's warnings quote: `facts_of`), the extension count and the status
        counters, in one read: a poll of the listing is one transaction, and one snapshot (the
        counters and the total agree with the page whatever commits meanwhile)."""
        with self._ctx.db.snapshot() as conn:
            # the counters and the extension count (one statement)
            summary = maintenance_rows.summary(conn)
            # a plain listing's total is the counters' (the same snapshot): no second count
            page = node_rows.list_page(conn, flt, by_status=summary.nodes_by_status())
            count = summary.extension_count
            facts = facts_of(conn, page.items, quoted=False, extension_count=count)
            return ListingRead(page, facts, count, summary)

    def compact_counts(self) -> bool:
        """The kept counts the listing sums on every poll folded and their tables compacted
        (PostgreSQL; every COUNTS_COMPACTION_SECONDS by one controller of a cluster:
        store/kept_counts.py). A role that does not own them folds them but cannot vacuum
        them: said once in the log."""
        done = kept_counts.compact(self._ctx.db.engine)
        refused = not done and self._ctx.db.dialect == "postgresql"
        if refused and not self._compaction_refused_said:
            self._compaction_refused_said = True
            log.warning(
                "cannot vacuum node_counts and node_role_counts: the database role voipcloud "
                "connects as does not own them; they are folded, but their dead rows stay "
                "until a vacuum by their owner (docs/operations.md, PostgreSQL)"
            )
        return done

    def get(self, node_id: int) -> NodeDetails:
        with self._ctx.db.read() as conn:
            node = transitions.load(conn, node_id)
            encrypted = node_rows.encrypted_session_key(conn, node_id)
            facts = node_facts(conn, node)
        key = self._ctx.box.decrypt(encrypted) if encrypted else None
        return NodeDetails(node=node, session_key=key, facts=facts)

    def decided(self, node_id: int) -> tuple[Node, NodeFacts]:
        """The node and the rulebook's facts about it, in one read (no session key: what its
        actions are decided on)."""
        with self._ctx.db.read() as conn:
            node = transitions.load(conn, node_id)
            return node, node_facts(conn, node)

    def facts(self, found: Sequence[Node]) -> dict[int, NodeFacts]:
        with self._ctx.db.read() as conn:
            return facts_of(conn, found)

    def controller_session_key(self) -> str | None:
        with self._ctx.db.read() as conn:
            node = node_rows.get_controller(conn)
            encrypted = node_rows.encrypted_session_key(conn, node.id) if node else None
        return self._ctx.box.decrypt(encrypted) if encrypted else None

    def events(self, node_id: int | None, *, limit: int = 50, offset: int = 0) -> Page[Event]:
        with self._ctx.db.read() as conn:
            if node_id is not None:
                transitions.load(conn, node_id)
            return events.page(conn, node_id=node_id, limit=limit, offset=offset)

    # changes
    def add(
        self,
        *,
        actor: str,
        hostname: str,
        private_ip: str,
        public_ip: str | None = None,
        container_id: str | None = None,
    ) -> Node:
        clean = clean_new_node(
            hostname=hostname,
            private_ip=private_ip,
            public_ip=public_ip,
            container_id=container_id,
        )
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            # the Configuration Wizard counts the live nodes under this lock
            infrastructure.lock(conn)
            # a concurrent add that takes the hostname after this check loses on the unique
            # index: 409 hostname-unique (voipcloud.store.errors maps every such race)
            _ensure_hostname_free(conn, clean["hostname"], node_id=None)
            node_id = node_rows.insert_node(conn, is_controller=False, now=now, **clean)
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=node_id,
                operation="add-node",
                status_after=NodeStatus.OFFLINE.value,
                reason=f"node {clean['hostname']} added",
            )
            return transitions.load(conn, node_id)

    def edit(
        self,
        node_id: int,
        *,
        actor: str,
        changes: dict[str, Any],
        expected: versions.Expected | None = None,
    ) -> Node:
        clean = _clean_node_fields(changes)
        if "private_ip" in clean and clean["private_ip"] is None:
            raise InvalidInput.one(("body", "private_ip"), "a node needs a private IP")
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            # If-Match: the write below is a compare-and-set on this same row_version
            versions.check(expected, versions.node_snapshot(node))
            if "hostname" in clean and clean["hostname"] != node.hostname:
                _ensure_hostname_free(conn, clean["hostname"], node_id=node.id)
            removing = "public_ip" in clean and clean["public_ip"] is None
            policy.decide(
                Operation.EDIT_NODE, node_facts(conn, node), removing_public_ip=removing
            ).check()
            changed = {k: v for k, v in clean.items() if getattr(node, k) != v}
            if not changed:
                return node
            described = ", ".join(f"{k} {getattr(node, k)} → {v}" for k, v in changed.items())
            return transitions.apply(
                conn,
                node,
                Change(
                    Operation.EDIT_NODE,
                    actor,
                    reason=f"edited: {described}",
                    fields=changed,
                    new_configuration="public_ip" in changed and bool(node.roles),
                ),
                now=now,
            )

    def delete(
        self,
        node_id: int,
        *,
        actor: str,
        reason: str | None = None,
        expected: versions.Expected | None = None,
        leave_out_maintenance: bool = False,
    ) -> Node:
        """Delete Node. `leave_out_maintenance`: a selection's (a bulk action's) call, which
        refuses a node in maintenance (policy.decide)."""
        reason = _check_reason(reason)
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            versions.check(expected, versions.node_snapshot(node))  # If-Match (CAS below)
            policy.decide(
                Operation.DELETE,
                node_facts(conn, node),
                leave_out_maintenance=leave_out_maintenance,
            ).check()
            released = ", ".join(node.roles) or "none"
            roles.remove_all(conn, node_id=node.id)
            return transitions.apply(
                conn,
                node,
                Change(
                    Operation.DELETE,
                    actor,
                    reason=f"{reason or 'deleted'}; roles released: {released}",
                    status_reason=reason or "deleted by the administrator",
                    session_key=SessionKey(None, None, end_agent_login=False),
                    end_pending=True,
                    new_configuration=True,
                ),
                now=now,
            )

    def action(
        self,
        node_id: int,
        action: str,
        *,
        actor: str,
        reason: str | None = None,
        force: bool = False,
        leave_out_maintenance: bool = False,
    ) -> Node:
        """One lifecycle action. `leave_out_maintenance`: see `delete`."""
        operation = ACTIONS.get(action)
        if operation is None:
            raise InvalidInput.one(("path", "action"), f"must be one of {', '.join(ACTIONS)}")
        reason = _check_reason(reason)
        if force:
            if operation is not Operation.DEACTIVATE:
                raise InvalidInput.one(
                    ("body", "force"), "only deactivate can be forced; leave force out"
                )
            return self.force_deactivate(
                node_id, actor=actor, reason=reason, leave_out_maintenance=leave_out_maintenance
            )
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            policy.decide(
                operation, node_facts(conn, node), leave_out_maintenance=leave_out_maintenance
            ).check()
            key = None
            if operation is Operation.REGENERATE_SESSION_KEY:
                key = self.new_session_key()
                reason = reason or "session key regenerated; the previous key no longer works"
            elif operation is Operation.MARK_DAMAGED:
                reason = reason or "marked Damaged by the administrator"
            starts = lifecycle.STARTS.get(operation)
            if operation is Operation.DEACTIVATE and node.status is not NodeStatus.ONLINE:
                starts = None  # StandBy -> Deactivated at once: no agent involved
            return transitions.apply(
                conn,
                node,
                Change(operation, actor, reason=reason, start=starts, session_key=key),
                now=now,
            )

    def force_deactivate(
        self,
        node_id: int,
        *,
        actor: str,
        reason: str | None,
        leave_out_maintenance: bool = False,
    ) -> Node:
        """End a deactivation its agent cannot complete: Deactivated, the pending operation
        dropped, who and why recorded. Only from DeactivatePending; a reason is required.

        The roles may still run on the machine; the node's agent, if it comes back, sees a
        Deactivated node with nothing pending (and a new configuration generation) and a
        late report of the dropped operation is answered as already recorded.
        """
        reason = _check_reason(reason)
        if not reason:
            raise InvalidInput.one(
                ("body", "reason"),
                "a forced deactivation needs a reason: it is recorded with who forced it",
            )
        now = self._ctx.clock()
        with self._ctx.db.write() as conn:
            node = transitions.load(conn, node_id)
            policy.decide(
                Operation.FORCE_DEACTIVATE,
                node_facts(conn, node),
                leave_out_maintenance=leave_out_maintenance,
            ).check()
            return transitions.apply(
                conn,
                node,
                Change(
                    Operation.FORCE_DEACTIVATE,
                    actor,
                    reason=f"forced by administrator: {reason}",
                    end_pending=True,
                    # the agent reconciles on a new generation: it stops what still runs
                    new_configuration=True,
                ),
                now=now,
            )

    def session_key_values(self, node: Node) -> dict[str, Any]:
        """A new session key as the node's column values (the bootstrap writes them)."""
        key = self.new_session_key()
        return {
            "session_key_encrypted": key.encrypted,
            "session_key_digest": key.digest,
            "agent_token_digest": None,
        }

    def new_session_key(self) -> SessionKey:
        """A new session key; whoever joined with the old key must join again."""
        key = new_session_key()
        return SessionKey(
            self._ctx.box.encrypt(key), self._ctx.box.digest(key), end_agent_login=True
        )


def hostname_taken(hostname: str) -> RuleViolation:
    """The hostname rule's refusal (Add Node, Edit, the import's rows, the unique index)."""
    return RuleViolation(
        "hostname-unique",
        f"Hostname {hostname} is already used by another node that is not Deleted.",
    )


def _ensure_hostname_free(conn: Connection, hostname: str, *, node_id: int | None) -> None:
    owner = node_rows.live_hostname_owner(conn, hostname)
    if owner is not None and owner != node_id:
        raise hostname_taken(hostname)
