"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
from fastapi import FastAPI

from voipcloud import __version__, protocol
from voipcloud.api import agent_package, contract, errors, versions
from voipcloud.api import metrics as metrics_api
from voipcloud.api.agent_channel import AgentHub, ChannelRoute
from voipcloud.api.gc_policy import CollectorPolicy
from voipcloud.api.limits import BodySizeLimit
from voipcloud.api.prefix_router import PrefixRouter
from voipcloud.api.routes import (
    accounts,
    agent,
    auth,
    events,
    extensions,
    fleet,
    health,
    imports,
    infrastructure,
    nodes,
    roles,
    rollouts,
    storage,
    tokens,
    webhooks,
)
from voipcloud.config import Settings
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.services import cluster, passwords
from voipcloud.services.agent_watch import AgentWatch
from voipcloud.services.cluster import Cluster, Duties, Duty
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.key_guard import check_data_key
from voipcloud.services.metrics import Metrics
from voipcloud.services.role_health import RoleHealthState
from voipcloud.services.secrets_box import SecretBox
from voipcloud.services.webhooks import RetryPolicy, WebhookService, WebhookWorker
from voipcloud.store import files
from voipcloud.store.database import Database
from voipcloud.web import setup as web
from voipcloud.web.routes import webhooks as webhook_pages

log = logging.getLogger("voipcloud")
PRESENCE_FLUSH_SECONDS = 2.0
# a vacuum of the presence rows (PostgreSQL): ~30 ms at 50,000 agents beating every 10 s, the
# table at most ~2.5 times its packed size between two (docs/benchmarks.md, seventh pass)
PRESENCE_VACUUM_SECONDS = 30.0
# the kept counts' vacuum, fold, vacuum (PostgreSQL): a few ms on tables of a page or two
COUNTS_COMPACTION_SECONDS = 30.0
LOGIN_SWEEP_SECONDS = 60.0  # old rows of the shared login throttle (PostgreSQL) go this often


def build_controller(settings: Settings) -> Controller:
    files.secure_data_dir(settings.data_dir, settings.resolved_database_url())  # 0700, 0600
    db = Database(settings.resolved_database_url(), sqlite_synchronous=settings.sqlite_synchronous)
    ctx = Context(
        db=db,
        box=SecretBox.opened_in_data_dir(settings.data_dir),  # written by start(), not over data
        activation_timeout=settings.activation_timeout,
        token_ttl=settings.token_ttl,
        heartbeat_interval=settings.heartbeat_interval,
        missed_beats=settings.missed_beats,
        data_dir=settings.data_dir.resolve(),
    )
    return Controller.build(ctx)


def start(controller: Controller, settings: Settings) -> None:
    """Migrate and do the first-start work; print a generated admin password once."""
    passwords.warm_up()  # beside the migrations: the unknown-user logins' hash to verify
    with cluster.first_start(controller.ctx.db):  # several controllers: one at a time
        check_data_key(controller.ctx, settings.data_dir)  # a missing or wrong key is refused
        controller.ctx.db.migrate()
        generated = controller.bootstrap(admin_password=settings.admin_password)
    # agents can reach this process from now on: the deadlines' reconnect window starts here
    # (a slow start, under load, does not eat into it)
    controller.operations.took_over()
    if generated:
        print(
            "\n  voipcloud: created the system administrator 'admin' with password\n\n"
            f"      {generated}\n\n"
            "  It is shown only this once; set VOIPCLOUD_ADMIN_PASSWORD to choose your own.\n",
            file=sys.stderr,
            flush=True,
        )


class Outage:
    """One log line when the database becomes unavailable, one when it answers again (not a
    traceback per loop round and per second)."""

    def __init__(self, db: Database | None = None) -> None:
        self.reason: str | None = None
        self._db = db

    def down(self, what: str, exc: DatabaseUnavailable) -> None:
        if self.reason is None:
            log.warning("database unavailable (%s) during %s; retrying", exc.reason, what)
        self.reason = exc.reason

    def up(self) -> None:
        if self.reason is not None:
            log.warning("database answers again (was: %s)", self.reason)
        self.reason = None

    async def confirm_up(self) -> None:
        """A round succeeded, maybe without a query (nothing to flush): ask the database."""
        if self.reason is None:
            return
        if self._db is not None:
            try:
                await anyio.to_thread.run_sync(_select_one, self._db)
            except DatabaseUnavailable:
                return
        self.up()


def _select_one(db: Database) -> None:
    with db.read() as conn:
        conn.exec_driver_sql("SELECT 1")


async def _every(
    seconds: float,
    work: Callable[[], object],
    what: str,
    *,
    outage: Outage | None = None,
    after: asyncio.Event | None = None,
) -> None:
    """Run `work` in a thread every `seconds` (once `after` is set), surviving any failure."""
    outage = outage or Outage()
    if after is not None:
        await after.wait()
    while True:
        await asyncio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(work)
        except DatabaseUnavailable as exc:
            outage.down(what, exc)
            continue
        except Exception:  # a bug: keep the loop alive; the next round retries
            log.exception("%s failed", what)
            continue
        await outage.confirm_up()


def _duty(
    duties: Duties,
    duty: Duty,
    work: Callable[[], object],
    *,
    gained: Callable[[], None] | None = None,
    idle: Callable[[], None] | None = None,
) -> Callable[[], object]:
    """`work`, done only while this controller holds the duty (always on SQLite): several
    controllers on one PostgreSQL do each periodic duty once (services/cluster.py).
    `gained` runs when the duty becomes this process's, `idle` while another has it."""
    leading = [not duties.enabled]

    def guarded() -> object:
        if not duties.leads(duty):
            leading[0] = False
            if idle is not None:
                idle()
            return None
        if not leading[0]:
            leading[0] = True
            if gained is not None:
                gained()
        return work()

    return guarded


async def _start_when_available(
    app: FastAPI, controller: Controller, settings: Settings, outage: Outage, started: asyncio.Event
) -> None:
    """Retry the first-start work (migrations, bootstrap) until the database lets it finish;
    meanwhile /healthz answers 200, /readyz and every database request 503."""
    delay = 1.0
    while True:
        try:
            await anyio.to_thread.run_sync(start, controller, settings)
        except DatabaseUnavailable as exc:
            outage.down("start", exc)
            app.state.start_problem = exc.reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        except Exception:  # not an outage (a wrong key, a failed migration): stay not ready
            log.exception("start failed once the database answered; /readyz stays 503")
            return
        break
    outage.up()
    app.state.started = True
    app.state.start_problem = None
    started.set()


def _fleet(controller: Controller, settings: Settings) -> tuple[Metrics, WebhookWorker, AgentWatch]:
    """Metrics, the webhook worker and the agent lost/back watch (issue 16, docs/operations.md)."""
    collected = Metrics(controller)
    presence = controller.agents.presence
    beat = presence.beat

    def counted_beat(node_id: int, now: datetime) -> None:
        beat(node_id, now)
        collected.count_beat()

    setattr(presence, "beat", counted_beat)  # noqa: B010 - count heartbeats where they land
    policy = RetryPolicy(
        first=settings.webhook_retry_first,
        longest=settings.webhook_retry_max,
        give_up=settings.webhook_give_up,
        timeout=settings.webhook_timeout,
    )
    worker = WebhookWorker(
        WebhookService(controller.ctx, policy),
        clock=controller.ctx.clock,
        on_attempt=lambda result: collected.webhook_attempts.labels(
            "success" if result.ok else "failure"
        ).inc(),
    )
    # agents reconnecting to a restarted controller are not "lost" meanwhile (the grace
    # lasts longer while they are still coming back: services/agent_watch.py)
    window = settings.heartbeat_interval * settings.missed_beats
    watch = AgentWatch(controller.ctx, presence, grace=max(window, protocol.RECONNECT_CAP) + window)
    return collected, worker, watch


def _cluster(controller: Controller, hub: AgentHub, worker: WebhookWorker) -> Cluster | None:
    """Several controllers on one PostgreSQL: wake this process's channels (and webhook
    worker) on the others' commits, and share who holds which agent's channel."""
    db = controller.ctx.db
    if db.dialect != "postgresql":
        return None
    presence = controller.agents.presence
    presence.clustered = True
    presence.remote_slack = 2 * PRESENCE_FLUSH_SECONDS  # the holder's flush, and its lateness

    def on_nodes(node_ids: set[int]) -> None:
        hub.notify_threadsafe(node_ids)
        worker.wake()

    def on_agents(sender: str, kind: str, node_ids: set[int]) -> None:
        if kind == "open":
            presence.remote_open(sender, node_ids)
        else:
            presence.remote_closed(sender, node_ids)

    book = presence.role_health
    record = book.update

    def on_health(node_id: int, roles: dict[str, tuple[str, str | None]]) -> None:
        record(node_id, {code: RoleHealthState(*state) for code, state in roles.items()})

    def update_and_share(
        node_id: int, report: dict[str, RoleHealthState]
    ) -> list[tuple[str, RoleHealthState | None, RoleHealthState]]:
        changes = record(node_id, report)
        link.share_health(node_id, {code: (h.state, h.message) for code, h in report.items()})
        return changes

    link = Cluster(
        db,
        on_nodes=on_nodes,
        on_agents=on_agents,
        local_channels=presence.local_channels,
        on_health=on_health,
    )
    presence.listeners.append(link.announce)
    setattr(book, "update", update_and_share)  # noqa: B010 - the others show it too
    return link


def create_app(settings: Settings | None = None, controller: Controller | None = None) -> FastAPI:
    settings = settings or Settings()
    controller = controller or build_controller(settings)
    # a controller built elsewhere keeps its local storage under this app's data dir
    controller.storage.bind_data_dir(settings.data_dir)
    hub = AgentHub(
        controller,
        max_handshakes=settings.max_channel_handshakes,
        open_rate=settings.channel_open_rate,
    )
    duties = Duties(controller.ctx.db)
    collected, worker, watch = _fleet(controller, settings)
    hub.on_refused = collected.channel_refused.inc
    watch.busy = hub.shedding  # agents told "Retry-After" are not lost meanwhile
    collected.channel_handshakes.set_function(lambda: hub.admission.in_progress)
    worker.gate = _duty(duties, Duty.WEBHOOKS, lambda: True)

    async def begin_metrics(started: asyncio.Event) -> None:
        await started.wait()
        await anyio.to_thread.run_sync(collected.begin)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        outage = Outage(controller.ctx.db)
        started = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            await anyio.to_thread.run_sync(start, controller, settings)
            app.state.started = True
            started.set()
        except DatabaseUnavailable as exc:  # serve (503) and finish starting when it answers
            app.state.started = False
            app.state.start_problem = exc.reason
            outage.down("start", exc)
            tasks.append(
                asyncio.create_task(
                    _start_when_available(app, controller, settings, outage, started)
                )
            )
        hub.bind(asyncio.get_running_loop())
        controller.ctx.db.listeners.append(hub.notify_threadsafe)
        controller.ctx.db.listeners.append(worker.wake)
        link = _cluster(controller, hub, worker)
        app.state.cluster = link
        if link is not None:
            tasks.append(asyncio.create_task(link.run()))
        collector = CollectorPolicy(lambda: hub.admission.opened, hub.connected_count)
        app.state.collector = collector
        tasks += [
            asyncio.create_task(collector.run(started)),
            asyncio.create_task(begin_metrics(started)),
            asyncio.create_task(worker.run(started=started, report=outage.down)),
            # rollouts advance in the controller (services/rollout_runner.py)
            asyncio.create_task(controller.rollout_runner.run(started=started, report=outage.down)),
            asyncio.create_task(
                _every(
                    PRESENCE_FLUSH_SECONDS,
                    _duty(duties, Duty.AGENT_WATCH, watch.check, idle=watch.forget),
                    "agent lost/back watch",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    PRESENCE_FLUSH_SECONDS,
                    collected.catch_up,
                    "metrics",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    min(1.0, settings.activation_timeout / 10),
                    _duty(
                        duties,
                        Duty.EXPIRE_OPERATIONS,
                        controller.operations.expire,
                        gained=controller.operations.took_over,
                    ),
                    "expiring pending operations",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    LOGIN_SWEEP_SECONDS,
                    _duty(duties, Duty.LOGIN_FAILURES, controller.auth.sweep_login_failures),
                    "login throttle sweep",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    PRESENCE_FLUSH_SECONDS,
                    controller.agents.flush_presence,
                    "presence flush",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    PRESENCE_VACUUM_SECONDS,
                    _duty(duties, Duty.PRESENCE_VACUUM, controller.agents.vacuum_presence),
                    "presence vacuum",
                    outage=outage,
                    after=started,
                )
            ),
            asyncio.create_task(
                _every(
                    COUNTS_COMPACTION_SECONDS,
                    _duty(duties, Duty.KEPT_COUNTS, controller.nodes.compact_counts),
                    "kept counts compaction",
                    outage=outage,
                    after=started,
                )
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            controller.ctx.db.listeners.remove(hub.notify_threadsafe)
            controller.ctx.db.listeners.remove(worker.wake)
            try:
                await anyio.to_thread.run_sync(controller.agents.flush_presence)
            except DatabaseUnavailable as exc:
                log.warning("last presence flush lost: database unavailable (%s)", exc.reason)
            await anyio.to_thread.run_sync(duties.close)  # the others take the duties now
            controller.ctx.db.dispose()

    app = FastAPI(
        title="voipcloud",
        version=__version__,
        summary="Control plane for VoIP clouds: nodes, roles, lifecycle.",
        description=contract.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from vendored assets below: they work offline
        redoc_url=None,
        generate_unique_id_function=contract.operation_id,
    )
    app.state.controller = controller
    app.state.hub = hub
    app.state.settings = settings
    app.state.started = False  # set once start() has finished (GET /readyz)
    app.state.start_problem = None
    app.state.metrics = collected
    app.state.metrics_networks = settings.metrics_networks()
    app.state.webhooks = worker.service
    errors.install(app)
    versions.install(app)  # 412 for a stale If-Match
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    api_routes: set[int] = set()  # their templates get the /api/v1 prefix
    app.add_middleware(  # outermost: times everything
        metrics_api.RequestTimer, metrics=lambda: collected, prefixed=(api_routes, "/api/v1")
    )
    app.add_middleware(ChannelRoute, hub=hub)  # agent channels skip the router (not timed)

    api = PrefixRouter(prefix="/api/v1")  # a page or probe skips its ~150 routes
    for module in (
        auth,
        accounts,
        tokens,
        fleet,  # before nodes: /nodes/summary is not a node id
        imports,  # before nodes: /nodes/import is not a node id
        nodes,
        roles,
        rollouts,
        events,
        extensions,
        agent,
        infrastructure,
        storage,
        webhooks,
    ):
        api.include_router(module.router)
        api_routes.update(id(route) for route in module.router.routes)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    agent_package.install(app)  # GET /agent/package, /agent/install.sh, /agent/ca.der
    web.install(app)  # the web management interface: pages, static files
    app.include_router(webhook_pages.router)
    contract.install(app)  # the completed /openapi.json: operation ids, errors, rule codes
    contract.install_docs(app)
    return app
