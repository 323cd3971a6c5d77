"""Sign in and sign out of the web interface (the system administrator only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response

from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.auth import ADMIN_USERNAME, LoginThrottled
from voipcloud.web import flash, sessions
from voipcloud.web.deps import ControllerDep, PostOwn, web_router
from voipcloud.web.forms import local_url
from voipcloud.web.templating import render

router = web_router()


def client_address(request: Request) -> str:
    """The peer of the connection (the controller serves without proxy headers)."""
    return request.client.host if request.client else "unknown"


def _safe_next(next_url: str | None) -> str:
    return local_url(next_url)


def _login_page(
    request: Request,
    *,
    next_url: str,
    error: str | None = None,
    status_code: int = 200,
    username: str = ADMIN_USERNAME,
    retry_after: int | None = None,
) -> Response:
    token = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or sessions.new_login_csrf()
    response = render(
        request,
        "auth/login.html",
        status_code=status_code,
        login_csrf=token,
        next_url=next_url,
        error=error,
        username=username,
    )
    response.set_cookie(
        sessions.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login"
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.get("/login")
def login_form(request: Request, controller: ControllerDep, next: str | None = None) -> Response:
    """The sign-in page."""
    token = sessions.unseal(controller, request.cookies.get(sessions.SESSION_COOKIE))
    if token is not None:
        try:
            controller.auth.authenticate(token)
            return flash.redirect(request, _safe_next(next))
        except NotAuthenticated:
            pass
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    controller: ControllerDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """Check the password; on success set the session cookie and go where the admin was going."""
    next_url = _safe_next(next)
    if not sessions.same(csrf_token, request.cookies.get(sessions.LOGIN_CSRF_COOKIE)):
        return _login_page(
            request,
            next_url=next_url,
            status_code=403,
            error="The sign-in form was out of date (its security token did not match). "
            "Please try again.",
        )
    try:
        token, ttl = controller.auth.issue_token(
            username.strip(), password, source=client_address(request), via="web interface"
        )
    except LoginThrottled as exc:  # too many failures from this address: 429, not checked
        return _login_page(
            request,
            next_url=next_url,
            status_code=429,
            error=str(exc),
            username=username[:64],
            retry_after=exc.wait_seconds,
        )
    except NotAuthenticated as exc:
        return _login_page(
            request, next_url=next_url, status_code=401, error=str(exc), username=username[:64]
        )
    response = flash.redirect(request, next_url)
    response.set_cookie(
        sessions.SESSION_COOKIE,
        sessions.seal(controller, token),
        max_age=ttl,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, _me: PostOwn, controller: ControllerDep) -> Response:
    """End the session: the token behind the cookie is revoked, not only forgotten."""
    controller.auth.revoke(request.state.session_token)
    response = flash.redirect(request, "/login", "info", "You are signed out.")
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response
