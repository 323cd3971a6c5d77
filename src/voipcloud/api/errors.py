"""Domain errors to HTTP answers: 401, 404, 409 naming the rule, 422 naming each field."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from voipcloud.domain.errors import (
    InvalidInput,
    NodeGone,
    NotAuthenticated,
    NotFound,
    RuleViolation,
)


def install(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=404)

    @app.exception_handler(RuleViolation)
    async def _rule(_request: Request, exc: RuleViolation) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "rule": exc.rule}, status_code=409)

    @app.exception_handler(InvalidInput)
    async def _invalid(_request: Request, exc: InvalidInput) -> JSONResponse:
        detail = [{"type": e.type, "loc": list(e.loc), "msg": e.message} for e in exc.errors]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(NodeGone)
    async def _gone(_request: Request, exc: NodeGone) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(_request: Request, exc: NotAuthenticated) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )


REFUSALS: dict[int | str, dict[str, object]] = {
    401: {"description": "Not authenticated", "model": None},
    404: {"description": "No such node, role or extension"},
    409: {"description": "Not allowed in the current state; `rule` names the rule"},
    422: {"description": "Invalid input; each entry names a field at fault"},
}
