"""Request and response bodies of accounts, passwords and API tokens (API.md names)."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field, StrictBool

from voipcloud.api.schemas import OneLine, Strict
from voipcloud.domain.access import USERNAME_PATTERN, AccountRole, Permission, Principal, TokenScope
from voipcloud.domain.passwords import MIN_LENGTH
from voipcloud.store.accounts import AccountRow, ApiTokenRow

Password = Field(max_length=1024, json_schema_extra={"format": "password", "writeOnly": True})
# a password being set: the policy's length is published (domain/passwords.py; it also refuses
# the username and common passwords, which a schema cannot say)
NewPassword = Field(
    max_length=1024,
    json_schema_extra={"format": "password", "writeOnly": True, "minLength": MIN_LENGTH},
)


class PasswordChange(Strict):
    current_password: str = Password
    new_password: str = NewPassword


class PasswordReset(Strict):
    new_password: str = NewPassword


class AccountCreate(Strict):
    username: OneLine = Field(
        max_length=64,
        examples=["alice"],
        json_schema_extra={"pattern": USERNAME_PATTERN.pattern},
    )
    role: AccountRole
    password: str = NewPassword
    disabled: StrictBool = False


class AccountUpdate(Strict):
    role: AccountRole | None = None
    disabled: StrictBool | None = None


class AccountPublic(BaseModel):
    username: str
    role: AccountRole
    disabled: bool
    created_at: datetime
    updated_at: datetime | None


class MePublic(BaseModel):
    username: str
    role: AccountRole
    scope: TokenScope  # "write" for a session
    token_id: int | None  # the API token presented, if any
    permissions: list[Permission]


class EndedPublic(BaseModel):
    ended: int  # sessions and API tokens ended


class TokenCreate(Strict):
    name: OneLine = Field(max_length=64, examples=["nightly-backup-check"])
    scope: TokenScope
    expires_at: AwareDatetime | None = Field(
        default=None, description="default: 90 days from now; at most 366 days ahead"
    )


class ApiTokenPublic(BaseModel):
    token_id: int
    username: str
    name: str
    scope: TokenScope
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    expired: bool


class ApiTokenCreated(ApiTokenPublic):
    token: str  # shown this once


class ApiTokensPublic(BaseModel):
    items: list[ApiTokenPublic]


def account_public(row: AccountRow) -> AccountPublic:
    return AccountPublic(
        username=row.username,
        role=row.role,
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def token_public(row: ApiTokenRow, now: datetime) -> ApiTokenPublic:
    return ApiTokenPublic(
        token_id=row.id,
        username=row.username,
        name=row.name,
        scope=row.scope,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        expired=row.expires_at <= now,
    )


def me_public(principal: Principal) -> MePublic:
    return MePublic(
        username=principal.username,
        role=principal.role,
        scope=principal.scope,
        token_id=principal.token_id,
        permissions=sorted(principal.permissions),
    )
