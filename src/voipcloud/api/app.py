"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI

from voipcloud import __version__
from voipcloud.api import errors
from voipcloud.api.agent_channel import AgentHub
from voipcloud.api.limits import BodySizeLimit
from voipcloud.api.routes import (
    agent,
    auth,
    events,
    extensions,
    health,
    infrastructure,
    nodes,
    roles,
    storage,
)
from voipcloud.config import Settings
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store.database import Database
from voipcloud.web import setup as web

log = logging.getLogger("voipcloud")
PRESENCE_FLUSH_SECONDS = 2.0


def build_controller(settings: Settings) -> Controller:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    ctx = Context(
        db=db,
        box=SecretBox.in_data_dir(settings.data_dir),
        activation_timeout=settings.activation_timeout,
        token_ttl=settings.token_ttl,
        heartbeat_interval=settings.heartbeat_interval,
        missed_beats=settings.missed_beats,
        data_dir=settings.data_dir.resolve(),
    )
    return Controller.build(ctx)


def start(controller: Controller, settings: Settings) -> None:
    """Migrate and do the first-start work; print a generated admin password once."""
    controller.ctx.db.migrate()
    generated = controller.bootstrap(admin_password=settings.admin_password)
    if generated:
        print(
            "\n  voipcloud: created the system administrator 'admin' with password\n\n"
            f"      {generated}\n\n"
            "  It is shown only this once; set VOIPCLOUD_ADMIN_PASSWORD to choose your own.\n",
            file=sys.stderr,
            flush=True,
        )


async def _every(seconds: float, work: Callable[[], object], what: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(work)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("%s failed", what)


def create_app(settings: Settings | None = None, controller: Controller | None = None) -> FastAPI:
    settings = settings or Settings()
    controller = controller or build_controller(settings)
    # a controller built elsewhere keeps its local storage under this app's data dir
    controller.storage.bind_data_dir(settings.data_dir)
    hub = AgentHub(controller)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(start, controller, settings)
        hub.bind(asyncio.get_running_loop())
        controller.ctx.db.listeners.append(hub.notify_threadsafe)
        tasks = [
            asyncio.create_task(
                _every(
                    min(1.0, settings.activation_timeout / 10),
                    controller.operations.expire,
                    "expiring pending operations",
                )
            ),
            asyncio.create_task(
                _every(PRESENCE_FLUSH_SECONDS, controller.agents.flush_presence, "presence flush")
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
            await anyio.to_thread.run_sync(controller.agents.flush_presence)
            controller.ctx.db.dispose()

    app = FastAPI(
        title="voipcloud",
        version=__version__,
        summary="Control plane for VoIP clouds: nodes, roles, lifecycle.",
        lifespan=lifespan,
    )
    app.state.controller = controller
    app.state.hub = hub
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )

    api = APIRouter(prefix="/api/v1")
    for module in (auth, nodes, roles, events, extensions, agent, infrastructure, storage):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    web.install(app)  # the web management interface: pages, static files
    return app
