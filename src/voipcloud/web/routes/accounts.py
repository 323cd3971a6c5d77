"""My account (password, API tokens, log out everywhere) and Accounts (administrators only).

Passwords posted are never rendered back; a new API token is shown once, on the page that
answers its creation, never through a redirect or a cookie.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Form, Path, Request, Response

from voipcloud.domain.access import (
    ROLE_SUMMARY,
    AccountRole,
    Principal,
    TokenScope,
    describe,
)
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.passwords import MIN_LENGTH
from voipcloud.services.auth import LoginThrottled
from voipcloud.web import flash, sessions
from voipcloud.web.deps import (
    ControllerDep,
    PageAccounts,
    PageRead,
    PostAccounts,
    PostOwn,
    web_router,
)
from voipcloud.web.forms import field_errors
from voipcloud.web.routes.auth import client_address
from voipcloud.web.templating import render

router = web_router()
Text = Annotated[str, Form(max_length=1024)]
Username = Annotated[str, Path(max_length=64)]
POLICY = f"At least {MIN_LENGTH} characters, not the username, not a commonly used password."


def _me(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _account_page(
    request: Request, controller: ControllerDep, *, status_code: int = 200, **extra: Any
) -> Response:
    me = _me(request)
    tokens = [t for t in controller.auth.tokens.list(me) if t.account_id == me.account_id]
    return render(
        request,
        "accounts/mine.html",
        status_code=status_code,
        nav="account",
        me=me,
        role_summary=ROLE_SUMMARY[me.role],
        permissions=[describe(p) for p in sorted(me.permissions)],
        tokens=tokens,
        now=controller.ctx.clock(),
        policy=POLICY,
        password_errors=extra.pop("password_errors", {}),
        token_errors=extra.pop("token_errors", {}),
        token_form=extra.pop("token_form", {}),
        **extra,
    )


@router.get("/account")
def my_account(request: Request, _reader: PageRead, controller: ControllerDep) -> Response:
    """My account: role, change password, API tokens, log out everywhere."""
    return _account_page(request, controller)


@router.post("/account/password")
def change_my_password(
    request: Request,
    _me_actor: PostOwn,
    controller: ControllerDep,
    current_password: Text = "",
    new_password: Text = "",
    confirm_password: Text = "",
) -> Response:
    if new_password != confirm_password:
        errors = {"confirm_password": "does not match the new password"}
        return _account_page(request, controller, status_code=422, password_errors=errors)
    try:
        change = controller.auth.accounts.change_own(
            _me(request),
            current_password=current_password,
            new_password=new_password,
            session_token=request.state.session_token,
            source=client_address(request),
        )
    except LoginThrottled as exc:
        errors = {"current_password": str(exc)}
        page = _account_page(request, controller, status_code=429, password_errors=errors)
        page.headers["Retry-After"] = str(exc.wait_seconds)
        return page
    except InvalidInput as exc:
        return _account_page(
            request, controller, status_code=422, password_errors=field_errors(exc)
        )
    return flash.redirect(
        request,
        "/account",
        "success",
        f"Password changed. {change.ended} other sessions and API tokens were ended.",
    )


@router.post("/account/tokens")
def create_my_token(
    request: Request,
    _me_actor: PostOwn,
    controller: ControllerDep,
    name: Annotated[str, Form(max_length=64)] = "",
    scope: Annotated[str, Form(max_length=8)] = "read",
    days: Annotated[str, Form(max_length=4)] = "90",
) -> Response:
    form = {"name": name, "scope": scope, "days": days}
    errors: dict[str, str] = {}
    if scope not in ("read", "write"):
        errors["scope"] = "choose read or write"
    if not days.isascii() or not days.isdigit() or not 1 <= int(days) <= 366:
        errors["days"] = "a whole number of days from 1 to 366"
    if not errors:
        try:
            row, secret = controller.auth.tokens.create(
                _me(request),
                name=name,
                scope=TokenScope(scope),
                expires_at=controller.ctx.clock() + timedelta(days=int(days)),
            )
        except InvalidInput as exc:
            errors = field_errors(exc)
        except RuleViolation as exc:
            errors = {"name": exc.message}
        else:
            return _account_page(request, controller, status_code=201, new_token=(row, secret))
    return _account_page(request, controller, status_code=422, token_errors=errors, token_form=form)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_my_token(
    request: Request,
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _me_actor: PostOwn,
    controller: ControllerDep,
    next: Annotated[str, Form(max_length=16)] = "/account",
) -> Response:
    controller.auth.tokens.revoke(_me(request), token_id)
    back = "/accounts" if next == "/accounts" else "/account"
    return flash.redirect(request, back, "success", f"API token {token_id} revoked.")


@router.post("/account/logout-everywhere")
def logout_everywhere(request: Request, _me_actor: PostOwn, controller: ControllerDep) -> Response:
    ended = controller.auth.end_everywhere(_me(request))
    response = flash.redirect(
        request, "/login", "info", f"You are signed out everywhere ({ended} sessions and tokens)."
    )
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


# --- Accounts (administrators) -----------------------------------------------------------


def _accounts_page(
    request: Request, controller: ControllerDep, *, status_code: int = 200, **extra: Any
) -> Response:
    me = _me(request)
    return render(
        request,
        "accounts/index.html",
        status_code=status_code,
        nav="accounts",
        accounts=controller.auth.accounts.list(),
        tokens=controller.auth.tokens.list(me),
        now=controller.ctx.clock(),
        roles=list(AccountRole),
        role_summary=ROLE_SUMMARY,
        policy=POLICY,
        add_errors=extra.pop("add_errors", {}),
        add_form=extra.pop("add_form", {}),
        **extra,
    )


@router.get("/accounts")
def accounts_page(request: Request, _admin: PageAccounts, controller: ControllerDep) -> Response:
    """Every account: role, enabled, password reset, delete; every API token."""
    return _accounts_page(request, controller)


@router.post("/accounts")
def add_account(
    request: Request,
    admin: PostAccounts,
    controller: ControllerDep,
    username: Annotated[str, Form(max_length=64)] = "",
    role: Annotated[str, Form(max_length=16)] = "viewer",
    password: Text = "",
) -> Response:
    form = {"username": username, "role": role}
    if role not in {r.value for r in AccountRole}:
        return _accounts_page(
            request,
            controller,
            status_code=422,
            add_errors={"role": "choose admin, operator or viewer"},
            add_form=form,
        )
    try:
        controller.auth.accounts.add(
            actor=admin, username=username.strip(), role=AccountRole(role), password=password
        )
    except InvalidInput as exc:
        return _accounts_page(
            request, controller, status_code=422, add_errors=field_errors(exc), add_form=form
        )
    except RuleViolation as exc:
        return _accounts_page(
            request,
            controller,
            status_code=409,
            add_errors={"username": exc.message},
            add_form=form,
        )
    return flash.redirect(
        request, "/accounts", "success", f"Account {username.strip()} added as {role}."
    )


@router.post("/accounts/{username}")
def change_account(
    request: Request,
    username: Username,
    admin: PostAccounts,
    controller: ControllerDep,
    role: Annotated[str | None, Form(max_length=16)] = None,
    disabled: Annotated[str | None, Form(max_length=5)] = None,
) -> Response:
    """Change the role (field `role`) or disable/enable (field `disabled`: yes/no)."""
    new_role = AccountRole(role) if role in {r.value for r in AccountRole} else None
    if role is not None and new_role is None:
        return flash.redirect(request, "/accounts", "error", "Choose admin, operator or viewer.")
    flag = {"yes": True, "no": False}.get(disabled or "")
    try:
        changed = controller.auth.accounts.update(
            actor=admin, username=username, role=new_role, disabled=flag
        )
    except RuleViolation as exc:
        return flash.redirect(request, "/accounts", "error", exc.message)
    state = "disabled" if changed.disabled else "enabled"
    return flash.redirect(
        request,
        "/accounts",
        "success",
        f"Account {changed.username}: {changed.role.value}, {state}.",
    )


@router.post("/accounts/{username}/password")
def reset_password(
    request: Request,
    username: Username,
    admin: PostAccounts,
    controller: ControllerDep,
    new_password: Text = "",
) -> Response:
    try:
        change = controller.auth.accounts.reset_password(
            actor=admin, username=username, new_password=new_password
        )
    except InvalidInput as exc:
        message = "; ".join(e.message for e in exc.errors)
        return flash.redirect(
            request, "/accounts", "error", f"Password of {username} not reset: {message}."
        )
    return flash.redirect(
        request,
        "/accounts",
        "success",
        f"Password of {username} reset; {change.ended} sessions and API tokens ended.",
    )


@router.post("/accounts/{username}/delete")
def delete_account(
    request: Request, username: Username, admin: PostAccounts, controller: ControllerDep
) -> Response:
    try:
        controller.auth.accounts.delete(actor=admin, username=username)
    except RuleViolation as exc:
        return flash.redirect(request, "/accounts", "error", exc.message)
    return flash.redirect(request, "/accounts", "success", f"Account {username} deleted.")
