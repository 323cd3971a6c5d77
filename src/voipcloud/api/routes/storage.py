"""REST routes: Storage Configuration, stored resources and their migration."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from voipcloud.api.deps import CanManageStorage, CanRead, get_controller
from voipcloud.api.errors import REFUSALS
from voipcloud.api.params import Whole
from voipcloud.api.storage_schemas import (
    MigrationPublic,
    ResourcePublic,
    ResourcesPublic,
    StoragePublic,
    StorageTest,
    StorageTestPublic,
    StorageUpdate,
    migration_public,
    probe_public,
    resource_public,
    storage_public,
)
from voipcloud.api.versions import STALE_RESPONSE, IfMatch, set_etag
from voipcloud.domain.access import Permission
from voipcloud.domain.errors import NotAuthenticated, NotFound
from voipcloud.domain.filters import MAX_OFFSET
from voipcloud.domain.storage import KEY, MAX_KEY, ResourceKind, served_content_type
from voipcloud.services.context import node_actor
from voipcloud.services.storage import ResourceAccessDenied, StorageService

router = APIRouter(prefix="/storage", tags=["storage"], responses=REFUSALS)
SPOOL_IN_MEMORY = 1024 * 1024  # request bodies above this spool to a temporary file
_bearer = HTTPBearer(auto_error=False)
log = logging.getLogger("voipcloud.storage")


# the kind as the caller spelled it: the credential is checked (401/403) before the kind (422)
KindName = Annotated[
    str,
    Path(
        description="faxes, recordings or voicemail",
        json_schema_extra={"enum": [k.value for k in ResourceKind]},
    ),
]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for a resource: an administrator, or a node (through its roles)."""

    actor: str
    node_id: int | None = None


def _caller(
    request: Request,
    kind: str,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    write: bool,
) -> Caller:
    """An administrator (full access), or a node with the agent credential its agent got when
    it joined: it reaches the resources only as far as its roles do (RESOURCE_ACCESS)."""
    controller = get_controller(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("Authentication required: send Authorization: Bearer <token>.")
    try:
        principal = controller.auth.principal(credentials.credentials)
    except NotAuthenticated:
        node_id = controller.agents.authenticate(credentials.credentials)
    else:  # an account: reading is `read`, writing is `storage` (domain/access.py)
        principal.require(Permission.STORAGE if write else Permission.READ)
        return Caller(principal.actor)
    try:
        controller.storage.authorize_node(node_id, kind, write=write)
    except ResourceAccessDenied as exc:
        log.warning("refused: %s %s %s", node_actor(node_id), request.method, request.url.path)
        raise HTTPException(status_code=403, detail=str(exc)) from None
    if not write:
        log.info("%s %s %s", node_actor(node_id), request.method, request.url.path)
    return Caller(node_actor(node_id), node_id)


def resource_reader(
    request: Request,
    kind: KindName,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return _caller(request, kind, credentials, write=False)


def resource_writer(
    request: Request,
    kind: KindName,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return _caller(request, kind, credentials, write=True)


resource_reader.permission = Permission.READ  # type: ignore[attr-defined]  # route audit
resource_writer.permission = Permission.STORAGE  # type: ignore[attr-defined]
Reader = Annotated[Caller, Depends(resource_reader)]
Writer = Annotated[Caller, Depends(resource_writer)]


def get_storage(request: Request) -> StorageService:
    return get_controller(request).storage


StorageDep = Annotated[StorageService, Depends(get_storage)]
KindPath = Annotated[ResourceKind, Path(description="faxes, recordings or voicemail")]
KeyPath = Annotated[
    str,
    Path(
        max_length=MAX_KEY,
        examples=["1001/2026-11-24T10-00-00.wav"],
        json_schema_extra={"pattern": KEY.pattern},  # checked by domain.storage.check_key
    ),
]


@router.get("", response_model=StoragePublic)
def get_configuration(_reader: CanRead, storage: StorageDep, response: Response) -> StoragePublic:
    """Storage Configuration of every resource kind; secrets are never returned. `ETag`: its
    version, for `If-Match`."""
    set_etag(response, storage.version())
    return storage_public(storage.overview())


@router.put("", response_model=StoragePublic, responses=STALE_RESPONSE)
def set_configuration(
    body: StorageUpdate,
    admin: CanManageStorage,
    storage: StorageDep,
    expected: IfMatch,
    response: Response,
) -> StoragePublic:
    """Change the configuration of one or more kinds; secrets left empty keep their value.
    With `If-Match`: only if no kind changed since that version (412 otherwise)."""
    result = storage_public(
        storage.configure(actor=admin, changes=body.changes(), expected=expected)
    )
    set_etag(response, storage.version())
    return result


@router.post("/test", response_model=StorageTestPublic)
def probe_configuration(
    _admin: CanManageStorage, storage: StorageDep, body: StorageTest | None = None
) -> StorageTestPublic:
    """Write, read back (sha256 compared) and delete a probe object, per kind."""
    body = body or StorageTest()
    changes = body.config.changes() if body.config else None
    return probe_public(storage.test(kinds=body.kinds, changes=changes))


@router.get("/{kind}/resources", response_model=ResourcesPublic)
def list_resources(
    kind: KindPath,
    _user: Reader,
    storage: StorageDep,
    prefix: Annotated[str, Query(max_length=512)] = "",
    limit: Annotated[Whole, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Whole, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ResourcesPublic:
    """Stored resources of a kind, by key; `prefix=1001/` lists one extension's voicemail."""
    page = storage.list(kind=kind, prefix=prefix, limit=limit, offset=offset)
    return ResourcesPublic(items=[resource_public(r) for r in page.items], total=page.total)


@router.put(
    "/{kind}/resources/{key:path}",
    response_model=ResourcePublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the resource's bytes; its Content-Type header (any media type, "
            "application/octet-stream when absent) is stored with it",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_resource(
    kind: KindPath,
    key: KeyPath,
    request: Request,
    user: Writer,
    storage: StorageDep,
    # the body's media type: OpenAPI describes it with the request body, not as a parameter
    content_type: Annotated[str | None, Header(max_length=255, include_in_schema=False)] = None,
    x_checksum_sha256: Annotated[
        str | None,
        Header(
            max_length=64,
            description="optional: the SHA-256 of the body (hex); refused if it differs",
            # published as a string (absent when not sent), never as null
            json_schema_extra={"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"},
        ),
    ] = None,
) -> ResourcePublic | JSONResponse:
    """Store the request body as a resource (streamed through a temporary file)."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        pending = bytearray()
        try:
            async for chunk in request.stream():
                pending += chunk
                if len(pending) >= SPOOL_IN_MEMORY:  # write to disk off the event loop
                    await run_in_threadpool(spool.write, bytes(pending))
                    pending.clear()
        except ClientDisconnect:  # the client left, or the body passed the upload limit
            return JSONResponse(
                status_code=413,
                content={
                    "detail": "The upload was cut off (larger than the upload limit, "
                    "or the client went away); nothing was stored."
                },
            )
        spool.write(pending)
        spool.seek(0)
        stored = await run_in_threadpool(
            lambda: storage.put(
                kind=kind,
                key=key,
                content=spool,  # type: ignore[arg-type]
                content_type=content_type,
                expected_sha256=x_checksum_sha256,
                actor=user.actor,
                node_id=user.node_id,
            )
        )
    return resource_public(stored)


@router.get(
    "/{kind}/resources/{key:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_resource(
    kind: KindPath, key: KeyPath, _user: Reader, storage: StorageDep
) -> StreamingResponse:
    """The resource's bytes, streamed from the backend that holds it."""
    resource, chunks = storage.open(kind=kind, key=key)
    return StreamingResponse(
        _closing(chunks),
        media_type=served_content_type(resource.content_type),
        headers={
            "Content-Length": str(resource.size),
            "ETag": f'"{resource.sha256}"',
            "X-Checksum-Sha256": resource.sha256,
            # a browser never renders a stored resource as a page of this site
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{key.rsplit("/", 1)[-1]}"',
        },
    )


def _closing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()


@router.delete("/{kind}/resources/{key:path}", status_code=204)
def delete_resource(kind: KindPath, key: KeyPath, user: Writer, storage: StorageDep) -> Response:
    """Delete a resource from its backend, then from the table."""
    storage.delete(kind=kind, key=key, actor=user.actor, node_id=user.node_id)
    return Response(status_code=204)


@router.post("/{kind}/migration", response_model=MigrationPublic, status_code=202)
def start_migration(
    kind: KindPath, admin: CanManageStorage, storage: StorageDep
) -> MigrationPublic:
    """Start or resume moving the kind's resources to its active backend."""
    return migration_public(storage.start_migration(actor=admin, kind=kind))


@router.get("/{kind}/migration", response_model=MigrationPublic)
def get_migration(kind: KindPath, _reader: CanRead, storage: StorageDep) -> MigrationPublic:
    """The progress of the kind's latest migration."""
    progress = storage.migration(kind)
    if progress is None:
        raise NotFound(f"No migration of {kind.value} has been started.")
    return migration_public(progress)


@router.post("/{kind}/migration/pause", response_model=MigrationPublic)
def pause_migration(
    kind: KindPath, _admin: CanManageStorage, storage: StorageDep
) -> MigrationPublic:
    """Stop the running migration after its current object; start it again to resume."""
    progress = storage.pause_migration(kind)
    if progress is None:
        raise NotFound(f"No migration of {kind.value} has been started.")
    return migration_public(progress)
