"""Mount the web interface on the FastAPI app: static files, page routers, login redirects."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from voipcloud.web.deps import CsrfRefused, LoginRequired, login_url
from voipcloud.web.routes import (
    auth,
    cloud,
    events,
    infrastructure,
    nodes,
    roles,
    storage,
    wizard,
)
from voipcloud.web.templating import STATIC_DIR, is_htmx, render

PAGE_ROUTERS = (auth, cloud, nodes, roles, events, infrastructure, wizard, storage)


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    for module in PAGE_ROUTERS:
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if is_htmx(request):  # htmx follows this header with a full page load
            return Response(status_code=200, headers={"HX-Redirect": login_url(exc.next_url)})
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf_refused(request: Request, _exc: CsrfRefused) -> Response:
        return render(
            request,
            "errors/problem.html",
            status_code=403,
            message="The form was refused: its security (CSRF) token is missing or out of "
            "date. Go back, reload the page and try again.",
        )
