"""Administrator authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voipcloud.api.deps import ControllerDep, CurrentAdmin
from voipcloud.api.schemas import TokenPublic, TokenRequest
from voipcloud.services.auth import LoginThrottled

router = APIRouter(prefix="/auth", tags=["auth"])


def client_address(request: Request) -> str:
    """The peer of the connection (the controller serves without proxy headers)."""
    return request.client.host if request.client else "unknown"


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={
        401: {"description": "Wrong username or password"},
        429: {"description": "Too many failed attempts from this address; see Retry-After"},
    },
)
def issue_token(
    body: TokenRequest, request: Request, controller: ControllerDep
) -> TokenPublic | JSONResponse:
    """Exchange the administrator's username and password for an expiring bearer token.
    Repeated wrong passwords from one address answer 429 with Retry-After (docs/security.md)."""
    try:
        token, ttl = controller.auth.issue_token(
            body.username, body.password, source=client_address(request), via="API"
        )
    except LoginThrottled as exc:
        return JSONResponse(
            {"detail": str(exc), "rule": "login-throttled"},
            status_code=429,
            headers={"Retry-After": str(exc.wait_seconds)},
        )
    return TokenPublic(access_token=token, expires_in=ttl)


@router.delete("/token", status_code=204)
def revoke_token(
    _admin: CurrentAdmin,
    controller: ControllerDep,
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(HTTPBearer())],
) -> Response:
    """Revoke the token used for this request (log out)."""
    controller.auth.revoke(credentials.credentials)
    return Response(status_code=204)
