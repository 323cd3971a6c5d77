"""Signing in and out, and one's own account: `/auth/token`, `/auth/me`, `/auth/password`,
`/auth/logout-all`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from voipcloud.api.account_schemas import EndedPublic, MePublic, PasswordChange, me_public
from voipcloud.api.deps import BearerToken, ControllerDep, MeReading, MeWriting
from voipcloud.api.errors import REFUSALS
from voipcloud.api.schemas import TokenPublic, TokenRequest
from voipcloud.services.auth import LoginThrottled

router = APIRouter(prefix="/auth", tags=["auth"])
THROTTLED: dict[int | str, dict[str, object]] = {
    429: {"description": "Too many failed attempts from this address; see Retry-After"}
}


def client_address(request: Request) -> str:
    """The peer of the connection (the controller serves without proxy headers)."""
    return request.client.host if request.client else "unknown"


def throttled(exc: LoginThrottled) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc), "rule": "login-throttled"},
        status_code=429,
        headers={"Retry-After": str(exc.wait_seconds)},
    )


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={401: {"description": "Wrong username or password"}, **THROTTLED},
)
def issue_token(
    body: TokenRequest, request: Request, controller: ControllerDep
) -> TokenPublic | JSONResponse:
    """Exchange an account's username and password for a short-lived session token.
    Repeated wrong passwords from one address answer 429 with Retry-After (docs/security.md)."""
    try:
        token, ttl = controller.auth.issue_token(
            body.username, body.password, source=client_address(request), via="API"
        )
    except LoginThrottled as exc:
        return throttled(exc)
    return TokenPublic(access_token=token, expires_in=ttl)


@router.delete("/token", status_code=204, responses=REFUSALS)
def revoke_token(_me: MeReading, controller: ControllerDep, token: BearerToken) -> Response:
    """Log out: end the session (or API token) used for this request, and only that one."""
    controller.auth.revoke(token)
    return Response(status_code=204)


@router.post("/logout-all", response_model=EndedPublic, responses=REFUSALS)
def logout_everywhere(me: MeReading, controller: ControllerDep) -> EndedPublic:
    """Log out everywhere: end every session and API token of the signed-in account, this
    one included."""
    return EndedPublic(ended=controller.auth.end_everywhere(me))


@router.get("/me", response_model=MePublic, responses=REFUSALS)
def who_am_i(me: MeReading) -> MePublic:
    """The signed-in account, its role, and what this session or token may do."""
    return me_public(me)


@router.post("/password", response_model=EndedPublic, responses={**REFUSALS, **THROTTLED})
def change_password(
    body: PasswordChange,
    request: Request,
    me: MeWriting,
    controller: ControllerDep,
    token: BearerToken,
) -> EndedPublic | JSONResponse:
    """Change your own password (the current one is required; a wrong one counts as a
    failed login). Ends your other sessions and tokens; this one stays."""
    try:
        change = controller.auth.accounts.change_own(
            me,
            current_password=body.current_password,
            new_password=body.new_password,
            session_token=token,
            source=client_address(request),
        )
    except LoginThrottled as exc:
        return throttled(exc)
    return EndedPublic(ended=change.ended)
