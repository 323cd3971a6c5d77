"""Prometheus metrics of one controller process (GET /metrics, docs/operations.md "Metrics").

Counters and histograms count from this process's start (the Prometheus convention: a restart
resets them, `rate()` copes). Operations are counted from the event log, which every interface
(API, web, CLI, the wizard, the controller's own timeouts) writes alike: the metrics read it
past their own place (store/event_tail.py) on every scrape and every few seconds. The gauges
(nodes by status and role, agents, role health, storage migrations, pending webhook
deliveries) are read from the database and from presence at each scrape, never stale.

Several processes (`voipcloud serve --workers N`, cli/workers.py): the parent makes a directory
for prometheus_client's multiprocess mode and each worker calls `share_across_processes` before
its app is built. A worker's own figures then live in that directory's files and every scrape,
whichever worker serves it, reads all of them (`MultiProcessCollector`); see `AGGREGATION` for
how each family combines. The event log is counted once for them all: a worker catches up
under a file lock on one shared place in the log (`SharedTail`), so each event is counted by
exactly one worker and the sum is the controller's. A single process (`serve`, the SQLite
default) never uses those files, whatever PROMETHEUS_MULTIPROC_DIR says.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
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
from voipcloud.store.tables import (
    events,
    node_presence,
    nodes,
    nodes_with_presence,
    role_assignments,
    storage_migrations,
)

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

# How each family combines across the worker processes of one `serve --workers N` (the
# scrape's answer is the controller's whole, whichever worker serves it). "sum": counters and
# histograms, each process's own file, a dead process's counts kept (they happened);
# "livesum"/"max": a gauge's value per process, "live" ones dropped when the parent sees the
# process die; "serving": computed by the worker serving the scrape, once (from the database,
# the cluster's presence, or a constant), never summed over the workers.
AGGREGATION: dict[str, str] = {
    "voipcloud_http_request_duration_seconds": "sum",
    "voipcloud_agent_heartbeats": "sum",  # rate() of the sum: the workers' rates summed
    "voipcloud_agent_channel_refused": "sum",
    "voipcloud_agent_channel_handshakes": "livesum",  # in progress now, each live worker's
    "voipcloud_operations_started": "sum",  # each event counted by one worker (SharedTail)
    "voipcloud_operations_succeeded": "sum",
    "voipcloud_operations_failed": "sum",
    "voipcloud_operations_timed_out": "sum",
    "voipcloud_operation_duration_seconds": "sum",
    "voipcloud_webhook_attempts": "sum",  # only the webhook duty's holder delivers
    "voipcloud_controller_agent_channels": "livesum",
    "voipcloud_agent_join_groups": "sum",
    "voipcloud_agent_joins": "sum",
    "voipcloud_agent_join_group_largest": "max",  # the most any process wrote
    "voipcloud_info": "serving",
    "voipcloud_nodes": "serving",
    "voipcloud_nodes_by_role": "serving",
    "voipcloud_nodes_in_maintenance": "serving",
    "voipcloud_agents": "serving",  # presence knows the other workers' channels (cluster)
    "voipcloud_role_health": "serving",
    "voipcloud_storage_migration_objects": "serving",
    "voipcloud_storage_migration_bytes": "serving",
    "voipcloud_storage_migration_running": "serving",
    "voipcloud_webhook_deliveries_pending": "serving",
    "voipcloud_rollouts": "serving",
    "voipcloud_rollout_nodes": "serving",
    "voipcloud_rollout_progress_ratio": "serving",
}

_shared_dir: str | None = None  # set in a worker of `serve --workers N`


def share_across_processes(path: str | os.PathLike[str]) -> None:
    """This process is one worker of several: its metrics go to files in `path` (made and
    wiped by the parent), read by whichever worker serves a scrape. Call before `Metrics`."""
    global _shared_dir
    _shared_dir = os.fspath(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _shared_dir  # where prometheus_client writes


def prepare_shared_dir(path: str | os.PathLike[str]) -> str:
    """The parent, before any worker starts: an empty directory for the workers' files (what
    an earlier run left is removed: counters start again, as a process's do)."""
    directory = os.fspath(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith((".db", ".json", ".lock", ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
    return directory


def process_died(path: str | os.PathLike[str], pid: int) -> None:
    """The parent saw worker `pid` die: its live gauges leave the sums (its counts stay)."""
    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, os.fspath(path))  # type: ignore[no-untyped-call]


class SharedTail:
    """One place in the event log for every worker, in a file under a lock: whoever catches up
    counts the events past it and moves it, so each event is counted once."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "events-tail.json")
        self.lock_path = os.path.join(directory, "events-tail.lock")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self) -> tuple[event_tail.TailState, int] | None:
        """(the place, the first event id counted) or None: nobody began yet."""
        try:
            with open(self.path) as found:
                data = json.load(found)
            return event_tail.TailState.from_json(int(data["last_id"]), data["gaps"]), int(
                data["origin"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, state: event_tail.TailState, origin: int) -> None:
        temporary = self.path + ".tmp"
        with open(temporary, "w") as out:
            json.dump({"last_id": state.last_id, "gaps": state.to_json(), "origin": origin}, out)
        os.replace(temporary, self.path)


class _SampledGauge(Gauge):
    """A gauge read from a function: at collect time in one process; sampled into its file
    (`Metrics.sample`) when shared, since another process serves the scrape."""

    sample: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        self.sample = f
        if _shared_dir is None:
            super().set_function(f)


class Metrics:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.shared = _shared_dir
        # prometheus_client picks where values live when a metric (or a label's child) is
        # made: in this process's memory, or in the shared directory's files
        values.ValueClass = values.MutexValue if self.shared is None else values.MultiProcessValue()  # type: ignore[no-untyped-call]
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
        self.channel_handshakes = _SampledGauge(
            "voipcloud_agent_channel_handshakes",
            "Agent channel handshakes in progress (upgrade to first desired state sent)",
            registry=r,
            multiprocess_mode="livesum",
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
        self._shared_tail: SharedTail | None = None
        self._origin = 0  # shared: the first event id counted (durations start after it)
        self.scrape_registry = r
        if self.shared is not None:
            self._share(self.shared)

    def _share(self, directory: str) -> None:
        """Per-process figures read at scrape time in one process become files here."""
        self._shared_tail = SharedTail(directory)
        self.agent_channels = Gauge(
            "voipcloud_controller_agent_channels",
            "Agent channels held open by this controller (all its worker processes)",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.join_groups = Counter(
            "voipcloud_agent_join_groups",
            "Join transactions this controller wrote (each for one or more joins)",
            registry=None,
        )
        self.joins = Counter(
            "voipcloud_agent_joins", "Agent joins this controller wrote (or refused)", registry=None
        )
        self.join_largest = Gauge(
            "voipcloud_agent_join_group_largest",
            "The most joins one transaction of this controller has written",
            multiprocess_mode="max",
            registry=None,
        )
        self._joins_seen = (0, 0)
        self._sample_lock = threading.Lock()
        presence = self.controller.agents.presence
        # exact at every channel's open and close, whichever process is scraped: the count
        # alone (the rest of `sample` is read at scrape time), in O(1)
        presence.listeners.append(lambda _kind, _node: self._channels_changed())
        self.scrape_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            self.scrape_registry, path=directory
        )
        self.scrape_registry.register(_StateCollector(self))

    def _channels_changed(self) -> None:
        self.agent_channels.set(self.controller.agents.presence.local_count())

    def sample(self) -> None:
        """Shared: write this process's read-at-scrape figures into its files."""
        if self.shared is None:
            return
        with self._sample_lock:  # channel listeners call it from any thread
            self._channels_changed()
            groups, joins, largest = self.controller.agents.join_groups()
            seen_groups, seen_joins = self._joins_seen
            if groups > seen_groups:
                self.join_groups.inc(groups - seen_groups)
            if joins > seen_joins:
                self.joins.inc(joins - seen_joins)
            self._joins_seen = (groups, joins)
            self.join_largest.set(largest)
            if self.channel_handshakes.sample is not None:
                self.channel_handshakes.set(self.channel_handshakes.sample())

    def begin(self) -> None:
        """Count from now: called once the database is ready."""
        self.sample()
        with self.controller.ctx.db.read() as conn:
            newest = event_tail.newest_id(conn)
        with self._lock:
            if self._tail is None:
                self._tail = event_tail.TailState(last_id=newest)
            shared = self._shared_tail
            if shared is not None:  # the first worker to begin sets the shared place
                with shared.held():
                    found = shared.load()
                    if found is None:
                        shared.save(self._tail, newest)
                        self._origin = newest
                    else:
                        self._origin = found[1]

    def catch_up(self, *, max_batches: int = 50) -> None:
        """Count the events written since the last call (shared: since any worker's)."""
        self.sample()
        with self._lock:
            if self._tail is None:
                return
            if self._shared_tail is not None:
                self._catch_up_shared(self._shared_tail, max_batches)
                return
            for _ in range(max_batches):
                with self.controller.ctx.db.read() as conn:
                    found, self._tail = event_tail.read(conn, self._tail, now=time.time())
                for event in found:
                    self._count(event)
                if len(found) < event_tail.BATCH:
                    break

    def _catch_up_shared(self, shared: SharedTail, max_batches: int) -> None:
        with shared.held():
            place = shared.load()
            if place is None:
                return
            tail, origin = place
            for _ in range(max_batches):
                with self.controller.ctx.db.read() as conn:
                    found, tail = event_tail.read(conn, tail, now=time.time())
                    for event in found:
                        self._count(event, conn=conn, origin=origin)
                # a worker killed between its counting and this line counts that batch twice
                shared.save(tail, origin)
                if len(found) < event_tail.BATCH:
                    break

    def _count(self, event: Any, *, conn: Any = None, origin: int = 0) -> None:
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
        if conn is not None:  # shared: the start may have been counted by another worker
            if outcome != STARTED:
                begun_at = conn.execute(
                    select(events.c.at)
                    .where(
                        events.c.node_id == event.node_id,
                        events.c.operation == operation,  # its start event bears its name
                        events.c.id > origin,
                        events.c.id < event.id,
                    )
                    .order_by(events.c.id.desc())
                    .limit(1)
                ).scalar_one_or_none()
                if begun_at is not None:
                    seconds = max((event.at - begun_at).total_seconds(), 0.0)
                    self.operation_duration.labels(operation, outcome).observe(seconds)
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
        return generate_latest(self.scrape_registry)


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
        if self._metrics.shared is None:  # shared: these are in the processes' files
            yield from self._process_families(controller)
        yield from self._fleet_families(controller)

    def _process_families(self, controller: Controller) -> Iterator[Metric]:
        channels = GaugeMetricFamily(  # per process: several controllers share the fleet
            "voipcloud_controller_agent_channels",
            "Agent channels held open by this controller process",
        )
        channels.add_metric([], controller.agents.presence.local_count())
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

    def _fleet_families(self, controller: Controller) -> Iterator[Metric]:
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
            agents = list(
                conn.execute(
                    select(nodes.c.id, node_presence.c.last_seen)
                    .select_from(nodes_with_presence)
                    .where(live)
                )
            )
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
