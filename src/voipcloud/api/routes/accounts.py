"""Accounts (administrators only): list, add, change role, disable, delete, reset password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from voipcloud.api.account_schemas import (
    AccountCreate,
    AccountPublic,
    AccountUpdate,
    EndedPublic,
    PasswordReset,
    account_public,
)
from voipcloud.api.deps import CanManageAccounts, ControllerDep
from voipcloud.api.errors import REFUSALS

router = APIRouter(prefix="/accounts", tags=["accounts"], responses=REFUSALS)
Username = Annotated[str, Path(max_length=64)]


@router.get("", response_model=list[AccountPublic])
def list_accounts(_admin: CanManageAccounts, controller: ControllerDep) -> list[AccountPublic]:
    """Every account with its role."""
    return [account_public(a) for a in controller.auth.accounts.list()]


@router.post("", response_model=AccountPublic, status_code=201)
def add_account(
    body: AccountCreate, admin: CanManageAccounts, controller: ControllerDep
) -> AccountPublic:
    """Add an account (the password follows the policy: 422 naming `password`)."""
    added = controller.auth.accounts.add(
        actor=admin,
        username=body.username,
        role=body.role,
        password=body.password,
        disabled=body.disabled,
    )
    return account_public(added)


@router.get("/{username}", response_model=AccountPublic)
def get_account(
    username: Username, _admin: CanManageAccounts, controller: ControllerDep
) -> AccountPublic:
    return account_public(controller.auth.accounts.get(username))


@router.patch("/{username}", response_model=AccountPublic)
def change_account(
    username: Username, body: AccountUpdate, admin: CanManageAccounts, controller: ControllerDep
) -> AccountPublic:
    """Change the role and/or disable (ending its sessions and tokens) or enable; the last
    enabled admin cannot be demoted or disabled (409 `last-admin`)."""
    changed = controller.auth.accounts.update(
        actor=admin, username=username, role=body.role, disabled=body.disabled
    )
    return account_public(changed)


@router.delete("/{username}", status_code=204)
def delete_account(
    username: Username, admin: CanManageAccounts, controller: ControllerDep
) -> Response:
    """Delete an account with its sessions and tokens (not the last enabled admin)."""
    controller.auth.accounts.delete(actor=admin, username=username)
    return Response(status_code=204)


@router.post("/{username}/password", response_model=EndedPublic)
def reset_password(
    username: Username, body: PasswordReset, admin: CanManageAccounts, controller: ControllerDep
) -> EndedPublic:
    """Set another account's password; every session and token of that account ends."""
    change = controller.auth.accounts.reset_password(
        actor=admin, username=username, new_password=body.new_password
    )
    return EndedPublic(ended=change.ended)
