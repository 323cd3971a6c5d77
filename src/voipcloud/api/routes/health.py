"""Liveness and readiness, both unauthenticated.

- `GET /healthz` liveness: the process runs and answers HTTP. No database query, so a load
  balancer or supervisor does not restart a controller whose database is down (restarting
  would not help; the controller recovers by itself when the database answers again).
- `GET /readyz` readiness: 200 when the database answers a query, its schema is the one this
  version migrates to, and the first-start work is done; otherwise 503 with
  `{"detail", "rule"}` and `Retry-After` (route traffic elsewhere meanwhile).
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from voipcloud.api.errors import RETRY_AFTER_SECONDS, UNAVAILABLE_RULE
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.store.database import Database, alembic_config

router = APIRouter(tags=["health"])
READY_TIMEOUT_SECONDS = 5.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: 200 while the process runs (no database query)."""
    return {"status": "ok"}


@functools.cache
def schema_head() -> str | None:
    """The migration revision this version of voipcloud expects."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def database_revision(db: Database) -> str | None:
    """The schema revision the database is at (a query: raises DatabaseUnavailable)."""
    with db.read() as conn:
        has_table = conn.dialect.has_table(conn, "alembic_version")
        if not has_table:
            return None
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(revision) if revision is not None else None


def _not_ready(rule: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"status": "not ready", "rule": rule, "detail": detail},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the database or its schema; see Retry-After"}},
)
async def readyz(request: Request) -> Any:
    """Readiness: 200 when the database answers and the schema is current, else 503."""
    controller = request.app.state.controller
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            revision = await anyio.to_thread.run_sync(
                database_revision, controller.ctx.db, abandon_on_cancel=True
            )
    except DatabaseUnavailable as exc:
        return _not_ready(UNAVAILABLE_RULE, f"The database is unavailable ({exc.reason}).")
    except TimeoutError:
        return _not_ready(
            UNAVAILABLE_RULE, f"The database did not answer within {READY_TIMEOUT_SECONDS:g} s."
        )
    expected = schema_head()
    if revision != expected:
        return _not_ready(
            "schema-outdated",
            f"The database schema is at revision {revision or 'none'}, this controller needs "
            f"{expected}: it migrates at start.",
        )
    if not getattr(request.app.state, "started", True):
        return _not_ready("starting", "The controller's first-start work is not done yet.")
    return {"status": "ready", "database": controller.ctx.db.dialect, "schema": revision}
