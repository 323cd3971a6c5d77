"""Administrator authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voipcloud.api.deps import ControllerDep, CurrentAdmin
from voipcloud.api.schemas import TokenPublic, TokenRequest

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenPublic)
def issue_token(body: TokenRequest, controller: ControllerDep) -> TokenPublic:
    """Exchange the administrator's username and password for an expiring bearer token."""
    token, ttl = controller.auth.issue_token(body.username, body.password)
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
