"""What every web page needs: the controller, the signed-in administrator and CSRF checks.

A page module uses them like this::

    from voipcloud.web.deps import ControllerDep, PageRead, PostNodes, web_router
    from voipcloud.web.templating import render

    router = web_router()

    @router.get("/things")
    def things(request: Request, _reader: PageRead, controller: ControllerDep) -> Response:
        return render(request, "things/index.html", things=controller.things.list())

    @router.post("/things")
    def add_thing(request: Request, actor: PostNodes, ...) -> Response: ...

Every page declares the permission it needs (domain/access.py) with one `Page*` (GET) or
`Post*` (form post) alias. Both redirect to the login page when nobody is signed in and answer
a 403 page when the account's role lacks the permission; `Post*` also refuses (403) a request
whose form field `csrf_token` (or `X-CSRF-Token` header, which htmx sends on its own) does not
match the session. Both give the actor string for services. `WebAdmin`/`CsrfChecked` (the
first release's names) need the whole admin role.
Routers made by `web_router()` turn domain errors into HTML pages instead of JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

# the API's: one place for the controller of a request (the pages use both names)
from voipcloud.api.deps import ControllerDep as ControllerDep
from voipcloud.api.deps import get_controller as get_controller
from voipcloud.domain.access import AccessDenied, Permission, Principal
from voipcloud.domain.errors import InvalidInput, NotAuthenticated, NotFound, RuleViolation
from voipcloud.web import sessions


class LoginRequired(Exception):
    """Nobody is signed in: the answer is a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfRefused(Exception):
    """A form without the session's CSRF token: refused with 403."""


def _next_url(request: Request) -> str:
    if request.method != "GET" or request.headers.get("HX-Request"):
        return "/"
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query


def signed_in(request: Request, controller: ControllerDep) -> Principal:
    """The signed-in account (any role); LoginRequired otherwise."""
    token = sessions.unseal(controller, request.cookies.get(sessions.SESSION_COOKIE))
    if token is None:
        raise LoginRequired(_next_url(request))
    try:
        principal = controller.auth.principal(token)
    except NotAuthenticated:
        raise LoginRequired(_next_url(request)) from None
    request.state.admin = principal.username  # the name templates show
    request.state.principal = principal
    request.state.session_token = token
    return principal


SignedIn = Annotated[Principal, Depends(signed_in)]


def csrf_token(request: Request) -> str:
    """The CSRF token of the signed-in session (for forms: use `csrf_field()` in templates)."""
    token: str | None = getattr(request.state, "session_token", None)
    if token is None:
        return ""
    return sessions.csrf_for(get_controller(request), token)


async def _check_csrf(request: Request) -> None:
    sent = request.headers.get(sessions.CSRF_HEADER)
    if not sent:
        form = await request.form()
        value = form.get(sessions.CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sessions.same(sent, csrf_token(request)):
        raise CsrfRefused()


def page(permission: Permission) -> Any:
    """`Depends` for a page (GET) that needs `permission`: the actor string."""

    async def dependency(principal: SignedIn) -> str:  # no I/O: in the event loop
        principal.require(permission)
        return principal.actor

    dependency.permission = permission  # type: ignore[attr-defined]  # for the route audit
    return Depends(dependency)


def posted(permission: Permission) -> Any:
    """`Depends` for a form post that needs `permission`, from our own form (CSRF checked)."""

    async def dependency(request: Request, principal: SignedIn) -> str:
        await _check_csrf(request)
        principal.require(permission)
        return principal.actor

    dependency.permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


# Pages (GET): the permission each needs (domain/access.py).
PageRead = Annotated[str, page(Permission.READ)]
PageSecrets = Annotated[str, page(Permission.READ_SECRETS)]
PageNodes = Annotated[str, page(Permission.NODES)]
PageInfrastructure = Annotated[str, page(Permission.INFRASTRUCTURE)]
PageStorage = Annotated[str, page(Permission.STORAGE)]
PageAccounts = Annotated[str, page(Permission.ACCOUNTS)]
PageOwn = Annotated[str, page(Permission.OWN_ACCOUNT)]
# Form posts: CSRF checked, and the permission.
PostNodes = Annotated[str, posted(Permission.NODES)]
PostInfrastructure = Annotated[str, posted(Permission.INFRASTRUCTURE)]
PostStorage = Annotated[str, posted(Permission.STORAGE)]
PostAccounts = Annotated[str, posted(Permission.ACCOUNTS)]
PostOwn = Annotated[str, posted(Permission.OWN_ACCOUNT)]
# The first release's names: the whole admin role (a page nobody classified stays admin-only).
WebAdmin = Annotated[str, page(Permission.ACCOUNTS)]
CsrfChecked = Annotated[str, posted(Permission.ACCOUNTS)]


def login_url(next_url: str) -> str:
    return "/login" if next_url in ("", "/") else f"/login?next={quote(next_url, safe='')}"


class WebRoute(APIRoute):
    """Answers domain errors raised by a web route as HTML pages, not as the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            from voipcloud.web.templating import render

            try:
                return await original(request)
            except NotFound as exc:
                return render(request, "errors/problem.html", status_code=404, message=exc.message)
            except RuleViolation as exc:
                return render(request, "errors/problem.html", status_code=409, message=exc.message)
            except InvalidInput as exc:
                return render(request, "errors/problem.html", status_code=422, message=str(exc))
            except AccessDenied as exc:
                return render(request, "errors/problem.html", status_code=403, message=exc.message)

        return handler


def web_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for pages: HTML errors, and kept out of the OpenAPI schema."""
    return APIRouter(route_class=WebRoute, include_in_schema=False, **kwargs)
