"""Domain errors to HTTP answers: 401, 404, 409 naming the rule, 422 naming each field, 503
with `Retry-After` when the database is unavailable. Every error body is JSON
`{"detail", "rule"?}`; these are handled answers, so the keep-alive connection stays open."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match

from voipcloud.domain.access import AccessDenied
from voipcloud.domain.errors import (
    DatabaseUnavailable,
    InvalidInput,
    NodeGone,
    NotAuthenticated,
    NotFound,
    RuleViolation,
)
from voipcloud.store.errors import classify

# seconds a client should wait before trying again when the database is unavailable
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_RULE = "database-unavailable"

# FastAPI's answer when a body cannot be decoded at all (not UTF-8, nested too deep).
_UNPARSABLE_BODY = "There was an error parsing the body"


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an answer that echoes the input (a 422 naming a field,
    a 404 naming a path) can be sent even when the input holds a lone surrogate."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def unavailable_answer(exc: DatabaseUnavailable) -> JSONResponse:
    """503 in the API's error shape: nothing was changed, try again after Retry-After."""
    return JSONResponse(
        {
            "detail": f"The database is unavailable ({exc.reason}): nothing was changed; "
            f"try again in {RETRY_AFTER_SECONDS} seconds.",
            "rule": UNAVAILABLE_RULE,
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def as_unavailable(exc: Exception) -> DatabaseUnavailable:
    """A pool timeout (no connection freed in time) as the outage it is."""
    found = classify(exc)
    return found if isinstance(found, DatabaseUnavailable) else DatabaseUnavailable("too busy")


_REFUSES_ONLY = "voipcloud_refuses_only"
F = TypeVar("F", bound=Callable[..., Any])


def refuses_only(endpoint: F) -> F:
    """Marks an endpoint that exists only to answer 405 at a path another route would take for
    its own (`/nodes/summary`, not a `/nodes/{node_id}`): not a method that path answers."""
    setattr(endpoint, _REFUSES_ONLY, True)
    return endpoint


def allowed_methods(request: Request) -> list[str]:
    """Every method the path answers: those of the routes of the first path (in the routers'
    order, which is the order a request is matched in) that matches it. Starlette's own 405
    names only the first route that matched the path, and FastAPI has one route per method;
    a later path that matches too (`/nodes/{node_id}` for `/nodes/summary`) is another
    resource. The routes of the included routers, each with its effective path
    (`iter_route_contexts`): the application's own list holds the routers."""
    first: str | None = None
    found: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        methods = route.methods
        if not methods or getattr(route.endpoint, _REFUSES_ONLY, False):
            continue
        if first not in (None, route.path_format):
            continue
        if route.matches(request.scope)[0] != Match.NONE:
            first = route.path_format
            found.update(methods)
    return sorted(found)


def _method_not_allowed(request: Request) -> JSONResponse:
    """405 with `Allow` listing all the methods of the path (RFC 9110 15.5.6)."""
    allow = allowed_methods(request)
    return JSONResponse(
        {"detail": f"Method Not Allowed; this path answers {', '.join(allow)}"},
        status_code=405,
        headers={"Allow": ", ".join(allow)},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # each field at fault and what is wrong, never the value sent: it may be a secret
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return _AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            detail = [
                {
                    "type": "json_invalid",
                    "loc": ["body"],
                    "msg": "the body is not decodable JSON (UTF-8, nested at most a few "
                    "hundred levels)",
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        if exc.status_code == 405:
            return _method_not_allowed(request)
        return await http_exception_handler(request, exc)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return _AsciiJSONResponse({"detail": exc.message}, status_code=404)

    @app.exception_handler(RuleViolation)
    async def _rule(_request: Request, exc: RuleViolation) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "rule": exc.rule}, status_code=409)

    @app.exception_handler(InvalidInput)
    async def _invalid(_request: Request, exc: InvalidInput) -> JSONResponse:
        detail = [{"type": e.type, "loc": list(e.loc), "msg": e.message} for e in exc.errors]
        return _AsciiJSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(AccessDenied)
    async def _forbidden(_request: Request, exc: AccessDenied) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "rule": exc.rule}, status_code=403)

    @app.exception_handler(NodeGone)
    async def _gone(_request: Request, exc: NodeGone) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(_request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return unavailable_answer(exc)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, exc: PoolTimeout) -> JSONResponse:
        return unavailable_answer(as_unavailable(exc))

    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(_request: Request, exc: NotAuthenticated) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )


REFUSALS: dict[int | str, dict[str, object]] = {
    401: {"description": "Not authenticated", "model": None},
    403: {"description": "The account's role or the token's scope forbids it; `rule` says which"},
    404: {"description": "No such node, role or extension"},
    409: {"description": "Not allowed in the current state; `rule` names the rule"},
    422: {"description": "Invalid input; each entry names a field at fault"},
    503: {"description": "The database is unavailable; nothing changed; see Retry-After"},
}
