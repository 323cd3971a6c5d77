"""Wire schemas of Storage Configuration and the resource store. Secrets are write-only."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.config import JsonDict

from voipcloud.domain.storage import BackendType, FailureReason, ResourceKind
from voipcloud.services.storage import KindOverview, ProbeResult, Resource
from voipcloud.services.storage_migration import MigrationProgress, MigrationStatus


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What domain/storage.py accepts, published (the domain checks, naming each field at fault).
# Whether a kind's directories differ from the others' and whether an s3 backend has all it
# needs are rules across fields and the stored configuration: tests/integration/
# test_schemathesis.py names them.
_NO_CONTROL = "[^\\u0000-\\u001f\\u007f-\\u009f]"
PATH_PATTERN = f"^/{_NO_CONTROL}*$"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
ENDPOINT_PATTERN = rf"^(?:|https?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?/?)$"
BUCKET_PATTERN = "^(?:|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$"
REGION_PATTERN = "^(?:[a-z]{2}(?:-[a-z0-9]+)+-[0-9]|[a-z0-9][a-z0-9-]{0,30})$"
PREFIX_PATTERN = "^[A-Za-z0-9!_.*'()/-]{0,200}$"
ACCESS_KEY_PATTERN = "^(?:|[A-Za-z0-9+/=._-]{3,128})$"
_EDGE = "[^\\s\\u0000-\\u001f\\u007f-\\u009f]"
SECRET_PATTERN = f"^(?:|{_EDGE}|{_EDGE}{_NO_CONTROL}*{_EDGE})$"


def _pattern(pattern: str) -> JsonDict:
    return {"pattern": pattern}


class LocalSettingsIn(Strict):
    path: str = Field(
        max_length=1024,
        examples=["/var/lib/voipcloud/storage/faxes"],
        json_schema_extra=_pattern(PATH_PATTERN),
    )


class S3SettingsIn(Strict):
    bucket: str | None = Field(
        default=None,
        max_length=63,
        examples=["pbx-faxes"],
        json_schema_extra=_pattern(BUCKET_PATTERN),
    )
    region: str | None = Field(
        default=None,
        max_length=32,
        examples=["eu-west-1"],
        json_schema_extra=_pattern(REGION_PATTERN),
    )
    endpoint_url: str | None = Field(
        default=None,
        max_length=255,
        description="S3-compatible stores only; empty for AWS",
        json_schema_extra=_pattern(ENDPOINT_PATTERN),
    )
    prefix: str | None = Field(
        default=None,
        max_length=200,
        examples=["faxes"],
        json_schema_extra=_pattern(PREFIX_PATTERN),
    )
    access_key_id: str | None = Field(
        default=None,
        max_length=128,
        description="write-only; leave empty to keep",
        json_schema_extra=_pattern(ACCESS_KEY_PATTERN),
    )
    secret_access_key: str | None = Field(
        default=None,
        max_length=256,
        description="write-only; leave empty to keep",
        json_schema_extra=_pattern(SECRET_PATTERN),
    )
    server_side_encryption: StrictBool | None = Field(
        default=None, description="JSON true or false only"
    )


class KindSettingsIn(Strict):
    backend: BackendType | None = None
    local: LocalSettingsIn | None = None
    s3: S3SettingsIn | None = None


class StorageUpdate(Strict):
    """Kinds left out keep their configuration."""

    faxes: KindSettingsIn | None = None
    recordings: KindSettingsIn | None = None
    voicemail: KindSettingsIn | None = None

    def changes(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


class StorageTest(Strict):
    kinds: list[ResourceKind] | None = Field(default=None, description="default: every kind")
    config: StorageUpdate | None = Field(
        default=None, description="test these unsaved settings (secrets left empty: the saved)"
    )


class LocalSettingsPublic(BaseModel):
    path: str


class S3SettingsPublic(BaseModel):
    bucket: str
    region: str
    endpoint_url: str | None
    prefix: str
    server_side_encryption: bool
    access_key_id_hint: str | None = Field(description="last four characters only")
    secret_access_key_set: bool


class UsagePublic(BaseModel):
    backend: BackendType
    count: int
    bytes: int


class MigrationPublic(BaseModel):
    kind: ResourceKind
    status: MigrationStatus
    source: BackendType
    target: BackendType
    total: int
    done: int
    failed: int
    percent: float
    bytes_total: int
    bytes_done: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class KindStoragePublic(BaseModel):
    kind: ResourceKind
    label: str
    backend: BackendType
    local: LocalSettingsPublic
    s3: S3SettingsPublic
    usage: list[UsagePublic]
    pending_migration: int = Field(description="resources held by the inactive backend")
    migration: MigrationPublic | None


class StoragePublic(BaseModel):
    faxes: KindStoragePublic
    recordings: KindStoragePublic
    voicemail: KindStoragePublic


class ProbePublic(BaseModel):
    kind: ResourceKind
    backend: BackendType
    ok: bool
    reason: FailureReason | None
    message: str
    milliseconds: float


class StorageTestPublic(BaseModel):
    ok: bool
    results: list[ProbePublic]


class ResourcePublic(BaseModel):
    kind: ResourceKind
    key: str
    content_type: str
    size: int
    sha256: str
    backend: BackendType
    created_at: datetime
    updated_at: datetime


class ResourcesPublic(BaseModel):
    items: list[ResourcePublic]
    total: int


# --- conversions --------------------------------------------------------------------------


def migration_public(progress: MigrationProgress) -> MigrationPublic:
    return MigrationPublic(
        kind=progress.kind,
        status=progress.status,
        source=progress.source,
        target=progress.target,
        total=progress.total,
        done=progress.done,
        failed=progress.failed,
        percent=progress.percent,
        bytes_total=progress.bytes_total,
        bytes_done=progress.bytes_done,
        last_error=progress.last_error,
        started_at=progress.started_at,
        updated_at=progress.updated_at,
        finished_at=progress.finished_at,
    )


def kind_public(view: KindOverview) -> KindStoragePublic:
    config = view.config
    s3 = config.s3
    return KindStoragePublic(
        kind=config.kind,
        label=config.kind.label,
        backend=config.backend,
        local=LocalSettingsPublic(path=config.local.path),
        s3=S3SettingsPublic(
            bucket=s3.bucket,
            region=s3.region,
            endpoint_url=s3.endpoint_url,
            prefix=s3.prefix,
            server_side_encryption=s3.server_side_encryption,
            access_key_id_hint=f"…{s3.access_key_id[-4:]}" if s3.access_key_id else None,
            secret_access_key_set=bool(s3.secret_access_key),
        ),
        usage=[
            UsagePublic(backend=backend, count=count, bytes=size)
            for backend, (count, size) in sorted(view.usage.items())
        ],
        pending_migration=view.pending,
        migration=migration_public(view.migration) if view.migration else None,
    )


def storage_public(views: list[KindOverview]) -> StoragePublic:
    by_kind = {view.config.kind.value: kind_public(view) for view in views}
    return StoragePublic.model_validate(by_kind)


def probe_public(results: list[ProbeResult]) -> StorageTestPublic:
    return StorageTestPublic(
        ok=all(r.ok for r in results),
        results=[
            ProbePublic(
                kind=r.kind,
                backend=r.backend,
                ok=r.ok,
                reason=r.reason,
                message=r.message,
                milliseconds=r.milliseconds,
            )
            for r in results
        ],
    )


def resource_public(resource: Resource) -> ResourcePublic:
    return ResourcePublic(
        kind=ResourceKind(resource.kind),
        key=resource.key,
        content_type=resource.content_type,
        size=resource.size,
        sha256=resource.sha256,
        backend=BackendType(resource.backend),
        created_at=resource.created_at,
        updated_at=resource.updated_at,
    )
