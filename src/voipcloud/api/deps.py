"""FastAPI dependencies: the controller's services and the signed-in administrator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.context import admin_actor
from voipcloud.services.controller import Controller

_bearer = HTTPBearer(auto_error=False)


def get_controller(request: Request) -> Controller:
    controller: Controller = request.app.state.controller
    return controller


ControllerDep = Annotated[Controller, Depends(get_controller)]


def current_admin(
    controller: ControllerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The actor string of the administrator whose bearer token came with the request."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("Authentication required: send Authorization: Bearer <token>.")
    return admin_actor(controller.auth.authenticate(credentials.credentials))


CurrentAdmin = Annotated[str, Depends(current_admin)]
