"""API tokens for automation: one's own (administrators: everyone's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from voipcloud.api.account_schemas import (
    ApiTokenCreated,
    ApiTokensPublic,
    TokenCreate,
    token_public,
)
from voipcloud.api.deps import ControllerDep, MeReading, MeWriting
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import Whole

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=REFUSALS)


@router.get("", response_model=ApiTokensPublic)
def list_tokens(me: MeReading, controller: ControllerDep) -> ApiTokensPublic:
    """Your API tokens with their last use (administrators: every account's); never the
    tokens themselves."""
    now = controller.ctx.clock()
    return ApiTokensPublic(items=[token_public(t, now) for t in controller.auth.tokens.list(me)])


@router.post("", response_model=ApiTokenCreated, status_code=201)
def create_token(body: TokenCreate, me: MeWriting, controller: ControllerDep) -> ApiTokenCreated:
    """A new API token of your account; `token` is in this answer only. A `read` token only
    reads; a `write` token acts with your role, as it is at each request."""
    row, secret = controller.auth.tokens.create(
        me, name=body.name, scope=body.scope, expires_at=body.expires_at
    )
    public = token_public(row, controller.ctx.clock())
    return ApiTokenCreated(**public.model_dump(), token=secret)


@router.delete("/{token_id}", status_code=204)
def revoke_token(
    token_id: Annotated[Whole, Path(ge=1, le=2**31 - 1)], me: MeWriting, controller: ControllerDep
) -> Response:
    """Revoke one API token (yours; administrators: anyone's); refused from the next request."""
    controller.auth.tokens.revoke(me, token_id)
    return Response(status_code=204)
