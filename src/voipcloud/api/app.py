"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI

from voipcloud import __version__
from voipcloud.api import errors
from voipcloud.api.limits import BodySizeLimit
from voipcloud.api.routes import auth, events, extensions, health, nodes, roles
from voipcloud.config import Settings
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.store.database import Database

log = logging.getLogger("voipcloud")


def build_controller(settings: Settings) -> Controller:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    ctx = Context(
        db=db,
        box=SecretBox.in_data_dir(settings.data_dir),
        activation_timeout=settings.activation_timeout,
        token_ttl=settings.token_ttl,
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


async def _expire_operations(controller: Controller) -> None:
    interval = min(1.0, controller.ctx.activation_timeout / 10)
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(controller.operations.expire)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("expiring pending operations failed")


def create_app(settings: Settings | None = None, controller: Controller | None = None) -> FastAPI:
    settings = settings or Settings()
    controller = controller or build_controller(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(start, controller, settings)
        expiry = asyncio.create_task(_expire_operations(controller))
        try:
            yield
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            controller.ctx.db.dispose()

    app = FastAPI(
        title="voipcloud",
        version=__version__,
        summary="Control plane for VoIP clouds: nodes, roles, lifecycle.",
        lifespan=lifespan,
    )
    app.state.controller = controller
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    api = APIRouter(prefix="/api/v1")
    for module in (auth, nodes, roles, events, extensions):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    return app
