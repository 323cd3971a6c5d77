"""What the agent channels read, many channels at once (docs/benchmarks.md, "Mass reconnect").

Opening a channel used to cost about ten statements in four transactions, each behind its
own thread hop: the credential (read twice), the stored inventory, the node, its roles, the
role assignments and the Infrastructure Properties (decrypted again for every channel). Here
a batch of channels costs one transaction:

- `authenticate_many`: one `IN (...)` over the credential digests of every channel waiting;
- `inventory_known_many`: the stored inventories of the hellos whose digest this process has
  not seen yet (after a restart: all of them), in one statement;
- `desired_many`: the properties' version (the properties themselves are read and decrypted
  again only when it changed), one row per node with its stamp, and the role assignments only
  of the nodes whose desired state is not in the cache.

The cache holds each node's last desired state as the JSON sent, keyed by what it was built
from: (row version, properties version, the features that shape it, the reconnect window).
Every change of a node's desired state bumps its row version (a compare-and-set write of its
row: role assignments and their parameters, status, operation) and every change of the
properties bumps their version, so a stale entry is never served; the credential is checked
against the row read in the same transaction on every call, never cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voipcloud import protocol
from voipcloud.domain.errors import NodeGone, NotAuthenticated, NotFound
from voipcloud.domain.roles import ROLES, effective_parameters
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.admission import reconnect_window
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import token_digest
from voipcloud.store import channels as channel_rows
from voipcloud.store import infrastructure

FLEET_REFRESH_SECONDS = 30.0  # how often the fleet size (for the reconnect window) is counted
CACHE_LIMIT = 200_000  # desired states kept (one per node; a few hundred bytes each)


@dataclass(frozen=True, slots=True)
class DesiredRequest:
    node_id: int
    digest: str  # the channel's credential digest, checked against the row
    features: frozenset[str]


@dataclass(frozen=True, slots=True)
class DesiredAnswer:
    payload: str  # the desired state as sent
    stamp: channel_rows.Stamp


class ChannelReads:
    def __init__(self, controller: Controller, *, open_rate: float) -> None:
        self._ctx = controller.ctx
        self._roles = controller.roles
        self._agents = controller.agents
        self.open_rate = open_rate
        self._lock = threading.Lock()  # the properties and the fleet size (several threads)
        self._properties: tuple[int, dict[str, Any]] | None = None
        self._fleet: tuple[float, int] | None = None  # (monotonic time counted, size)
        self._cache: dict[int, tuple[tuple[Any, ...], str]] = {}
        # the channels open in this process (set by the hub): more than the fleet counted
        # means it grew since (a bulk import, agents joining): counted again at once
        self.connected: Callable[[], int] = lambda: 0
        self.hits = 0
        self.misses = 0

    # credentials
    def authenticate_many(self, tokens: list[str]) -> list[int | Exception]:
        """Each token's node id, or the refusal (NotAuthenticated, NodeGone) for it."""
        digests = [token_digest(token) for token in tokens]
        with self._ctx.db.read() as conn:
            found = channel_rows.by_token_digests(conn, digests)
        answers: list[int | Exception] = []
        for digest in digests:
            row = found.get(digest)
            if row is None:
                answers.append(NotAuthenticated("The agent credential is not valid; join again."))
            elif row[1] == NodeStatus.DELETED.value:
                answers.append(NodeGone(f"Node {row[0]} was deleted."))
            else:
                answers.append(row[0])
        return answers

    # desired state
    def window(self) -> float:
        """The reconnect window advertised to agents (seconds): the fleet at this open rate."""
        fleet = self._fleet[1] if self._fleet is not None else 0
        return reconnect_window(fleet, self.open_rate)

    def desired_many(self, requests: list[DesiredRequest]) -> list[DesiredAnswer | Exception]:
        with self._ctx.db.read() as conn:  # one snapshot for the whole batch
            properties = self._current_properties(conn)
            self._count_fleet(conn)
            rows = channel_rows.desired_rows(conn, [r.node_id for r in requests])
            window = self.window()
            keys: dict[int, tuple[Any, ...]] = {}
            missing: list[int] = []
            for request in requests:
                row = rows.get(request.node_id)
                if row is None:
                    continue
                key = self._key(row, properties[0], request.features, window)
                keys[request.node_id] = key
                cached = self._cache.get(request.node_id)
                if cached is None or cached[0] != key:
                    missing.append(request.node_id)
            assignments = channel_rows.assignments_of(conn, missing) if missing else {}
        answers: list[DesiredAnswer | Exception] = []
        built: dict[int, str] = {}
        for request in requests:
            row = rows.get(request.node_id)
            if row is None:
                answers.append(NotFound(f"Node {request.node_id} does not exist."))
                continue
            if row.agent_token_digest != request.digest:
                answers.append(NotAuthenticated("The agent credential belongs to another node."))
                continue
            if row.status == NodeStatus.DELETED.value:
                answers.append(NodeGone(f"Node {row.id} was deleted."))
                continue
            key = keys[row.id]
            payload = built.get(row.id)
            if payload is None:
                cached = self._cache.get(row.id)
                if cached is not None and cached[0] == key:
                    payload = cached[1]
                    self.hits += 1
                else:
                    payload = self._build(row, assignments.get(row.id, []), properties[1], key)
                    self._remember(row.id, key, payload)
                    self.misses += 1
                built[row.id] = payload
            answers.append(DesiredAnswer(payload, (row.row_version, row.agent_token_digest)))
        return answers

    # inventory
    def inventory_known_many(self, hellos: list[tuple[int, str]]) -> list[bool | Exception]:
        """For each (node id, digest of a hello): whether the stored inventory has it (as
        AgentService.inventory_known: a read, never a write)."""
        unknown = [node_id for node_id, digest in hellos if not self._digest_known(node_id, digest)]
        inventories: dict[int, dict[str, Any]] = {}
        if unknown:
            with self._ctx.db.read() as conn:
                inventories = channel_rows.inventories_of(conn, unknown)
        return [
            self._digest_known(node_id, digest)
            or self._agents.stored_inventory_matches(node_id, digest, inventories.get(node_id))
            for node_id, digest in hellos
        ]

    def forget(self) -> None:
        self._cache.clear()

    # helpers
    @staticmethod
    def _key(
        row: Any, properties_version: int, features: frozenset[str], window: float
    ) -> tuple[Any, ...]:
        return (
            row.row_version,
            properties_version,
            protocol.FEATURE_NODE_ADDRESSES in features,
            window if protocol.FEATURE_RECONNECT_WINDOW in features else None,
        )

    def _current_properties(self, conn: Any) -> tuple[int, dict[str, Any]]:
        version = channel_rows.properties_version(conn)
        with self._lock:
            current = self._properties
        if current is not None and current[0] == version:
            return current
        fresh = (version, self._roles.reveal(infrastructure.properties(conn)))
        with self._lock:
            self._properties = fresh
        return fresh

    def _count_fleet(self, conn: Any) -> None:
        now = time.monotonic()
        with self._lock:
            due = (
                self._fleet is None
                or now - self._fleet[0] >= FLEET_REFRESH_SECONDS
                or self.connected() > self._fleet[1]
            )
        if due:
            size = channel_rows.fleet_size(conn)
            with self._lock:
                self._fleet = (now, size)

    def _build(
        self,
        row: Any,
        assignments: list[tuple[str, Any]],
        properties: dict[str, Any],
        key: tuple[Any, ...],
    ) -> str:
        roles = []
        for code, stored in assignments:
            spec = ROLES[code]
            effective = effective_parameters(
                spec, self._roles.reveal(stored), properties=properties, public_ip=row.public_ip
            )
            roles.append(
                protocol.DesiredRole(
                    code=spec.code,
                    name=spec.name,
                    parameters={name: v.value for name, v in effective.items()},
                )
            )
        operation = None
        if row.pending_operation and row.operation_id:
            operation = protocol.PendingOperation(id=row.operation_id, kind=row.pending_operation)
        desired = protocol.Desired(
            node_id=row.id,
            hostname=row.hostname,
            status=NodeStatus(row.status).value,
            generation=row.config_generation,
            operation=operation,
            roles=roles,
            node=(
                protocol.NodeAddresses(private_ip=row.private_ip, public_ip=row.public_ip)
                if key[2]
                else None
            ),
            reconnect_window=key[3],
        )
        # an older agent refuses unknown fields: the optional ones only when there are any
        return desired.model_dump_json(exclude=protocol.desired_exclusions(desired))

    def _remember(self, node_id: int, key: tuple[Any, ...], payload: str) -> None:
        cache = self._cache
        if node_id not in cache and len(cache) >= CACHE_LIMIT:
            cache.pop(next(iter(cache)))  # the oldest entry
        cache[node_id] = (key, payload)

    # the inventory digests AgentService keeps (a hello whose digest matches writes nothing)
    def _digest_known(self, node_id: int, digest: str) -> bool:
        return self._agents._inventory_digests.get(node_id) == bytes.fromhex(digest)
