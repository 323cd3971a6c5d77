"""Mount the web interface on the FastAPI app: static files, page routers, login redirects."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from voipcloud.api.errors import RETRY_AFTER_SECONDS, as_unavailable, unavailable_answer
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.web.deps import CsrfRefused, LoginRequired, login_url
from voipcloud.web.routes import (
    accounts,
    auth,
    cloud,
    events,
    fleet,
    infrastructure,
    node_import,
    nodes,
    roles,
    rollouts,
    storage,
    wizard,
)
from voipcloud.web.templating import STATIC_DIR, is_htmx, render

PAGE_ROUTERS = (
    auth,
    cloud,
    fleet,
    node_import,
    nodes,
    roles,
    events,
    rollouts,
    infrastructure,
    wizard,
    storage,
    accounts,
)
NOT_PAGES = ("/api/", "/openapi.json", "/docs", "/redoc", "/healthz", "/readyz", "/static/")


async def _answer(result: Response | Awaitable[Response]) -> Response:
    return await result if inspect.isawaitable(result) else result


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, its docs or a script): errors become pages."""
    path = request.url.path
    if path.startswith(NOT_PAGES) or path in ("/api", "/docs", "/redoc"):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    for module in PAGE_ROUTERS:
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if is_htmx(request):  # htmx follows this header with a full page load
            return Response(status_code=200, headers={"HX-Redirect": login_url(exc.next_url)})
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    api_invalid = app.exception_handlers[RequestValidationError]
    api_http = app.exception_handlers[HTTPException]

    @app.exception_handler(RequestValidationError)
    async def _invalid_address(request: Request, exc: RequestValidationError) -> Response:
        if not wants_page(request):
            return await _answer(api_invalid(request, exc))
        return render(
            request,
            "errors/problem.html",
            status_code=404,
            message=f"There is no page at {request.url.path}: check the address, or start "
            "again from Cloud Management.",
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if not wants_page(request) or exc.status_code not in (404, 405):
            return await _answer(api_http(request, exc))
        return render(
            request,
            "errors/problem.html",
            status_code=404,
            message=f"There is no page at {request.url.path}: check the address, or start "
            "again from Cloud Management.",
        )

    @app.exception_handler(CsrfRefused)
    async def _csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return render(
            request,
            "errors/problem.html",
            status_code=403,
            message="The form was refused: its security (CSRF) token is missing or out of "
            "date. Go back, reload the page and try again.",
        )

    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(request: Request, exc: DatabaseUnavailable) -> Response:
        return unavailable_page(request, exc)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> Response:
        return unavailable_page(request, as_unavailable(exc))


def unavailable_page(request: Request, exc: DatabaseUnavailable) -> Response:
    """503: the "database unavailable" page for a browser, the API's JSON for anything else."""
    if not wants_page(request):
        return unavailable_answer(exc)
    return render(
        request,
        "errors/unavailable.html",
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        reason=exc.reason,
        retry_after=RETRY_AFTER_SECONDS,
        retry_here=request.method == "GET" and not is_htmx(request),
    )
