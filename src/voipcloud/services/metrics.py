"""Prometheus metrics of one controller process (GET /metrics, docs/operations.md "Metrics").

Counters and histograms count from this process's start (the Prometheus convention: a restart
resets them, `rate()` copes). Operations are counted from the event log, which every interface
(API, web, CLI, the wizard, the controller's own timeouts) writes alike: the metrics read it
past their own place (store/event_tail.py) on every scrape and every few seconds. The gauges
(nodes by status and role, agents, role health, storage migrations, pending webhook
deliveries) are read from the database and from presence at each scrape, never stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from voipcloud import __version__
from voipcloud.domain.roles import ROLES
from voipcloud.domain.rollouts import OPEN as OPEN_OUTCOMES
from voipcloud.domain.rollouts import NodeOutcome, RolloutState
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.context import CONTROLLER_ACTOR
from voipcloud.services.controller import Controller
from voipcloud.services.presence import Connectivity
from voipcloud.services.role_health import HEALTHY, UNHEALTHY, UNKNOWN
from voipcloud.store import event_tail
from voipcloud.store import nodes as node_rows
from voipcloud.store import rollouts as rollout_rows
from voipcloud.store import webhooks as webhook_rows
from voipcloud.store.tables import nodes, role_assignments, storage_migrations

# event-log operation -> (operation measured, what happened)
STARTED, SUCCEEDED, FAILED, TIMED_OUT = "started", "succeeded", "failed", "timed_out"
_OPERATION_EVENTS: dict[str, tuple[str, str]] = {
    "activate": ("activate", STARTED),
    "activation-succeeded": ("activate", SUCCEEDED),
    "activation-failed": ("activate", FAILED),
    "activation-timed-out": ("activate", TIMED_OUT),
    "fix": ("fix", STARTED),
    "fix-succeeded": ("fix", SUCCEEDED),
    "fix-failed": ("fix", FAILED),  # TIMED_OUT when the controller's deadline ended it
    "deactivate": ("deactivate", STARTED),
    "deactivation-completed": ("deactivate", SUCCEEDED),
}
OPERATIONS = ("activate", "fix", "deactivate")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MAX_TRACKED = 100_000  # operations in progress remembered for their duration


class Metrics:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_duration = Histogram(
            "voipcloud_http_request_duration_seconds",
            "HTTP requests by route template, method and status code",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "voipcloud_agent_heartbeats", "Heartbeats received from node agents", registry=r
        )
        self.channel_refused = Counter(
            "voipcloud_agent_channel_refused",
            "Agent channel upgrades answered 503 with Retry-After (too many handshakes at once)",
            registry=r,
        )
        self.channel_handshakes = Gauge(
            "voipcloud_agent_channel_handshakes",
            "Agent channel handshakes in progress (upgrade to first desired state sent)",
            registry=r,
        )
        self.operations = {
            outcome: Counter(
                f"voipcloud_operations_{outcome}",
                f"Node operations {outcome.replace('_', ' ')}",
                ["operation"],
                registry=r,
            )
            for outcome in (STARTED, SUCCEEDED, FAILED, TIMED_OUT)
        }
        self.operation_duration = Histogram(
            "voipcloud_operation_duration_seconds",
            "From an operation's start to its outcome (operations started by this process)",
            ["operation", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.webhook_attempts = Counter(
            "voipcloud_webhook_attempts",
            "Webhook delivery attempts by result",
            ["result"],
            registry=r,
        )
        for operation in OPERATIONS:  # every series present from the start, at 0
            for counter in self.operations.values():
                counter.labels(operation)
        for result in ("success", "failure"):
            self.webhook_attempts.labels(result)
        r.register(_StateCollector(self))
        self._lock = threading.Lock()
        self._tail: event_tail.TailState | None = None
        self._started: dict[int, tuple[str, datetime]] = {}  # node id -> (operation, at)

    def begin(self) -> None:
        """Count from now: called once the database is ready."""
        with self.controller.ctx.db.read() as conn:
            newest = event_tail.newest_id(conn)
        with self._lock:
            if self._tail is None:
                self._tail = event_tail.TailState(last_id=newest)

    def catch_up(self, *, max_batches: int = 50) -> None:
        """Count the events written since the last call."""
        with self._lock:
            if self._tail is None:
                return
            for _ in range(max_batches):
                with self.controller.ctx.db.read() as conn:
                    found, self._tail = event_tail.read(conn, self._tail, now=time.time())
                for event in found:
                    self._count(event)
                if len(found) < event_tail.BATCH:
                    break

    def _count(self, event: Any) -> None:
        known = _OPERATION_EVENTS.get(event.operation)
        if known is None:
            return
        operation, outcome = known
        if (
            outcome == FAILED
            and operation == "fix"
            and event.actor == CONTROLLER_ACTOR
            and event.reason == "timeout"
        ):
            outcome = TIMED_OUT
        self.operations[outcome].labels(operation).inc()
        if event.node_id is None:
            return
        if outcome == STARTED:
            if len(self._started) < MAX_TRACKED:
                self._started[event.node_id] = (operation, event.at)
            return
        begun = self._started.pop(event.node_id, None)
        if begun is not None and begun[0] == operation:
            seconds = max((event.at - begun[1]).total_seconds(), 0.0)
            self.operation_duration.labels(operation, outcome).observe(seconds)

    def count_beat(self) -> None:
        self.heartbeats.inc()

    def exposition(self) -> bytes:
        """The text format, after counting what the event log holds since the last time."""
        self.catch_up()
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # no query at registration; the families are known at collect time

    def collect(self) -> Iterator[Metric]:
        controller = self._metrics.controller
        info = GaugeMetricFamily("voipcloud_info", "This controller", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        channels = GaugeMetricFamily(  # per process: several controllers share the fleet
            "voipcloud_controller_agent_channels",
            "Agent channels held open by this controller process",
        )
        channels.add_metric([], len(controller.agents.presence.local_channels()))
        yield channels
        groups, joins, largest = controller.agents.join_groups()
        written = CounterMetricFamily(  # per process: group commit (services/group_commit.py)
            "voipcloud_agent_join_groups",
            "Join transactions this controller process wrote (each for one or more joins)",
        )
        written.add_metric([], groups)
        yield written
        written = CounterMetricFamily(
            "voipcloud_agent_joins", "Agent joins this controller process wrote (or refused)"
        )
        written.add_metric([], joins)
        yield written
        biggest = GaugeMetricFamily(
            "voipcloud_agent_join_group_largest",
            "The most joins one transaction of this process has written",
        )
        biggest.add_metric([], largest)
        yield biggest
        now = controller.ctx.clock()
        with controller.ctx.db.read() as conn:
            by_status: dict[str, int] = dict(  # list(): a Result has keys(), not a mapping
                list(conn.execute(select(nodes.c.status, func.count()).group_by(nodes.c.status)))
            )
            live = nodes.c.status != NodeStatus.DELETED.value
            by_role: dict[str, int] = dict(
                list(
                    conn.execute(
                        select(role_assignments.c.role, func.count())
                        .select_from(role_assignments.join(nodes))
                        .where(live)
                        .group_by(role_assignments.c.role)
                    )
                )
            )
            agents = list(conn.execute(select(nodes.c.id, nodes.c.last_seen).where(live)))
            in_maintenance = conn.execute(
                select(func.count())
                .select_from(nodes)
                .where(live, nodes.c.maintenance_since.is_not(None))
            ).scalar_one()
            roles = node_rows.roles_of(conn, [node_id for node_id, _seen in agents])
            migrations = list(conn.execute(select(storage_migrations)).mappings())
            pending = webhook_rows.pending_total(conn)
        family = GaugeMetricFamily("voipcloud_nodes", "Nodes by status", labels=["status"])
        for status in NodeStatus:
            family.add_metric([status.value], by_status.get(status.value, 0))
        yield family
        family = GaugeMetricFamily(
            "voipcloud_nodes_by_role",
            "Live (not Deleted) nodes carrying each role",
            labels=["role"],
        )
        for code in ROLES:
            family.add_metric([code], by_role.get(code, 0))
        yield family
        family = GaugeMetricFamily(
            "voipcloud_nodes_in_maintenance",
            "Live (not Deleted) nodes in maintenance (orthogonal to the status)",
        )
        family.add_metric([], in_maintenance)
        yield family
        counts = dict.fromkeys(Connectivity, 0)
        presence = controller.agents.presence
        health: dict[tuple[str, str], int] = {}
        for node_id, last_seen in agents:
            connectivity = presence.state(node_id, last_seen, now)[0]
            counts[connectivity] += 1
            states = presence.role_health.for_node(
                node_id, roles.get(node_id, []), connected=connectivity is Connectivity.CONNECTED
            )
            for code, reported in states.items():
                health[(code, reported.state)] = health.get((code, reported.state), 0) + 1
        family = GaugeMetricFamily(
            "voipcloud_agents",
            "Live nodes by agent connectivity (never: no agent joined yet)",
            labels=["state"],
        )
        for connectivity, count in counts.items():
            family.add_metric([connectivity.value], count)
        yield family
        family = GaugeMetricFamily(
            "voipcloud_role_health",
            "Role assignments of live nodes by the health their agents report",
            labels=["role", "state"],
        )
        for code in ROLES:
            for state_name in (HEALTHY, UNHEALTHY, UNKNOWN):
                family.add_metric([code, state_name], health.get((code, state_name), 0))
        yield family
        objects = GaugeMetricFamily(
            "voipcloud_storage_migration_objects",
            "The latest storage migration of each kind: objects total / done / failed",
            labels=["kind", "state"],
        )
        size = GaugeMetricFamily(
            "voipcloud_storage_migration_bytes",
            "The latest storage migration of each kind: bytes total / done",
            labels=["kind", "state"],
        )
        running = GaugeMetricFamily(
            "voipcloud_storage_migration_running",
            "1 while the storage migration of a kind runs",
            labels=["kind"],
        )
        for m in migrations:
            kind = str(m["kind"])
            for state in ("total", "done", "failed"):
                objects.add_metric([kind, state], m[state])
            size.add_metric([kind, "total"], m["bytes_total"])
            size.add_metric([kind, "done"], m["bytes_done"])
            running.add_metric([kind], 1 if m["status"] == "running" else 0)
        yield objects
        yield size
        yield running
        family = GaugeMetricFamily(
            "voipcloud_webhook_deliveries_pending", "Webhook deliveries not yet delivered"
        )
        family.add_metric([], pending)
        yield family
        yield from _rollout_families(controller)


def _rollout_families(controller: Controller) -> Iterator[Metric]:
    """Rollouts by state, and the nodes of each running or paused one by outcome."""
    with controller.ctx.db.read() as conn:
        by_state = rollout_rows.by_state(conn)
        active = rollout_rows.active_counts(conn)
    family = GaugeMetricFamily("voipcloud_rollouts", "Rollouts by state", labels=["state"])
    for state in RolloutState:
        family.add_metric([state.value], by_state.get(state.value, 0))
    yield family
    nodes_family = GaugeMetricFamily(
        "voipcloud_rollout_nodes",
        "Nodes of each running or paused rollout by outcome",
        labels=["rollout", "action", "outcome"],
    )
    progress = GaugeMetricFamily(
        "voipcloud_rollout_progress_ratio",
        "Share of the nodes of each running or paused rollout that have their outcome",
        labels=["rollout", "action"],
    )
    for (rollout_id, action), outcomes in sorted(active.items()):
        for outcome in NodeOutcome:
            nodes_family.add_metric(
                [str(rollout_id), action, outcome.value], outcomes.get(outcome.value, 0)
            )
        total = sum(outcomes.values())
        open_ = sum(outcomes.get(o.value, 0) for o in OPEN_OUTCOMES)
        progress.add_metric([str(rollout_id), action], (total - open_) / total if total else 1.0)
    yield nodes_family
    yield progress
