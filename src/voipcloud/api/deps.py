"""FastAPI dependencies: the controller's services and the signed-in account's permission.

Every `/api/v1` route (but the login and the agent's) declares the one permission it needs
with one of the aliases below; the table of who holds which lives in `domain/access.py`::

    @router.post("/nodes")
    def add_node(body: NodeCreate, actor: CanManageNodes, controller: ControllerDep): ...

The alias gives the actor string for events ("operator:bob"); `Me*` aliases give the whole
`Principal`. Missing or bad credentials: 401; a role or token scope without the permission:
403 `{"detail", "rule"}` (`role-forbidden`, `token-read-only`). `CurrentAdmin` (the name of the
first release) means the whole `admin` role: a route nobody classified stays admin-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voipcloud.domain.access import Permission, Principal
from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.controller import Controller

_bearer = HTTPBearer(auto_error=False)


def get_controller(request: Request) -> Controller:
    controller: Controller = request.app.state.controller
    return controller


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in its
# thread pool, one hand-over to a thread and back for each (and each may wait for the GIL
# while another thread holds it); an `async def` one runs in the event loop at once.
async def _controller(request: Request) -> Controller:
    return get_controller(request)


ControllerDep = Annotated[Controller, Depends(_controller)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("Authentication required: send Authorization: Bearer <token>.")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def principal_needing(permission: Permission) -> Callable[..., Principal]:
    """The dependency that authenticates the request and requires `permission`."""

    def dependency(request: Request, controller: ControllerDep, token: BearerToken) -> Principal:
        principal = controller.auth.principal(token)
        principal.require(permission)
        request.state.principal = principal
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]  # for the route audit
    dependency.__name__ = f"needs_{permission.value.replace('-', '_')}"
    return dependency


def permit(permission: Permission) -> Any:
    """`Depends` giving the actor string of an account holding `permission`."""
    needs = principal_needing(permission)

    # the default, not Annotated: a string annotation could not name the local `needs`
    async def actor(principal: Principal = Depends(needs)) -> str:
        return principal.actor

    return Depends(actor)


CanRead = Annotated[str, permit(Permission.READ)]
CanManageNodes = Annotated[str, permit(Permission.NODES)]
CanManageExtensions = Annotated[str, permit(Permission.EXTENSIONS)]
CanManageInfrastructure = Annotated[str, permit(Permission.INFRASTRUCTURE)]
CanManageStorage = Annotated[str, permit(Permission.STORAGE)]
CanManageAccounts = Annotated[str, permit(Permission.ACCOUNTS)]
CurrentAdmin = Annotated[str, permit(Permission.ACCOUNTS)]  # the whole admin role

MeReading = Annotated[Principal, Depends(principal_needing(Permission.READ))]
MeWriting = Annotated[Principal, Depends(principal_needing(Permission.OWN_ACCOUNT))]
MeAdmin = Annotated[Principal, Depends(principal_needing(Permission.ACCOUNTS))]


def declared_permissions(dependant: Any) -> list[Permission]:
    """The permissions a route's dependency tree declares (the route audit of the tests)."""
    found: list[Permission] = []
    for sub in getattr(dependant, "dependencies", []):
        permission = getattr(sub.call, "permission", None)
        if isinstance(permission, Permission):
            found.append(permission)
        found += declared_permissions(sub)
    return found
