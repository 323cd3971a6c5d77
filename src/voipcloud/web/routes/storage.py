"""Storage Configuration page: a form per resource kind, the probe, and migration progress."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from voipcloud.domain import versions
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.storage import ResourceKind, parse_kind
from voipcloud.services.storage import KindOverview, ProbeResult, StorageService
from voipcloud.web import flash, stale
from voipcloud.web.deps import ControllerDep, PageRead, PostStorage, web_router
from voipcloud.web.forms import GENERAL, FormData, field_errors
from voipcloud.web.templating import render

router = web_router()
PAGE = "/storage"
FIELDS = (
    "backend",
    "path",
    "bucket",
    "region",
    "endpoint_url",
    "prefix",
    "access_key_id",
    "secret_access_key",
    "server_side_encryption",
)
SECRETS = ("access_key_id", "secret_access_key")


def _storage(request: Request, controller: ControllerDep) -> StorageService:
    return controller.storage


def _values(view: KindOverview) -> dict[str, Any]:
    """What the form shows; the S3 keys are write-only, so never."""
    config = view.config
    return {
        "backend": config.backend.value,
        "path": config.local.path,
        "bucket": config.s3.bucket,
        "region": config.s3.region,
        "endpoint_url": config.s3.endpoint_url or "",
        "prefix": config.s3.prefix,
        "access_key_id": "",
        "secret_access_key": "",
        "server_side_encryption": config.s3.server_side_encryption,
        "access_key_hint": f"…{config.s3.access_key_id[-4:]}" if config.s3.access_key_id else "",
        "secret_set": bool(config.s3.secret_access_key),
    }


def _change(form: dict[str, str]) -> dict[str, Any]:
    """The posted form of one kind as a Storage Configuration change."""
    s3: dict[str, Any] = {
        "bucket": form.get("bucket", "").strip(),
        "endpoint_url": form.get("endpoint_url", "").strip() or None,
        "prefix": form.get("prefix", "").strip(),
        "server_side_encryption": form.get("server_side_encryption") == "on",
        # empty: keep the stored keys ("leave empty to keep")
        "access_key_id": form.get("access_key_id", "").strip(),
        "secret_access_key": form.get("secret_access_key", ""),
    }
    if form.get("region", "").strip():
        s3["region"] = form["region"].strip()
    return {
        "backend": form.get("backend", "local"),
        "local": {"path": form.get("path", "").strip()},
        "s3": s3,
    }


def _labels() -> dict[str, str]:
    """The names a stale refusal uses for the version's fields (domain/versions.py)."""
    labels: dict[str, str] = {}
    for kind in ResourceKind:
        of = f" of {kind.label.lower()}"
        labels[f"{kind.value}.backend"] = "Backend" + of
        labels[f"{kind.value}.local.path"] = "Directory" + of
        labels[f"{kind.value}.s3"] = "Amazon S3 settings" + of
        for name, label in (
            ("backend", "Backend"),
            ("path", "Directory"),
            ("bucket", "Bucket"),
            ("region", "Region"),
            ("endpoint_url", "Endpoint URL"),
            ("prefix", "Key prefix"),
        ):
            labels.setdefault(name, label)
    return labels


LABELS = _labels()


def _expected(storage: StorageService, kind: ResourceKind, token: str) -> versions.Expected | None:
    """The version a kind's form was read at, as the whole configuration's expected version.
    The configuration's version is one number per kind; a form only cares about its own
    kind, so a change to another kind since (or a first save that merely stored this kind's
    unchanged defaults) does not refuse it; the check in the write transaction still refuses
    anything that moves after this read."""
    read = stale.expected(token)
    if read is None or read.any or not read.versions:
        return read
    version, digest = read.versions[0]
    current = storage.version()
    index = list(ResourceKind).index(kind)
    mine, now = version.split("."), current.version.split(".")
    if len(mine) != len(now):
        return read
    changed = current.changed_since(digest)
    unchanged_here = mine[index] == now[index] or (
        changed is not None and not any(n.startswith(f"{kind.value}.") for n in changed)
    )
    return versions.Expected(((current.version, digest),)) if unchanged_here else read


def _page(
    request: Request,
    storage: StorageService,
    *,
    posted: tuple[ResourceKind, dict[str, Any], dict[str, str]] | None = None,
    posted_version: str | None = None,
    probe: ProbeResult | None = None,
    status_code: int = 200,
) -> Response:
    """The page; the posted kind keeps what was typed (and the version it was read at, when
    `posted_version` is given: a refused invalid submit must not refresh it)."""
    etag = storage.version().etag
    kinds = []
    for view in storage.overview():
        values, errors, version = _values(view), {}, etag
        if posted and posted[0] is view.config.kind:
            # typed keys are echoed (into password fields) only to ask "save anyway"
            typed_keys = {k: str(posted[1].get(k, "")) if probe else "" for k in SECRETS}
            values = {**values, **posted[1], **typed_keys}
            if posted[1]:  # an unchecked box is absent from the form
                values["server_side_encryption"] = posted[1].get("server_side_encryption") == "on"
            errors = posted[2]
            version = posted_version if posted_version is not None else etag
        kinds.append(
            {
                "view": view,
                "values": values,
                "errors": errors,
                "version": version,
                "probe": probe if posted and posted[0] is view.config.kind else None,
            }
        )
    return render(
        request, "storage/index.html", nav="storage", status_code=status_code, kinds=kinds
    )


@router.get(PAGE)
def storage_page(request: Request, _reader: PageRead, controller: ControllerDep) -> Response:
    """Storage Configuration."""
    return _page(request, _storage(request, controller))


@router.post(PAGE + "/{kind}")
def save_kind(
    request: Request, kind: str, admin: PostStorage, controller: ControllerDep, form: FormData
) -> Response:
    """Save the configuration of one kind; empty key fields keep the stored keys."""
    storage = _storage(request, controller)
    resource_kind = parse_kind(kind)
    version = form.get("version", "")[:200]
    anyway = form.get("save_anyway") == "yes"
    failed: ProbeResult | None = None
    try:
        if form.get("backend") == "s3":  # an S3 configuration is tested before it is saved
            (result,) = storage.test(kinds=[resource_kind], changes={kind: _change(form)})
            if not result.ok and not anyway:
                return _page(
                    request,
                    storage,
                    posted=(resource_kind, dict(form), {}),
                    posted_version=version,
                    probe=result,
                    status_code=409,
                )
            failed = None if result.ok else result
        storage.configure(
            actor=admin,
            changes={kind: _change(form)},
            expected=_expected(storage, resource_kind, version),
        )
    except versions.StaleVersion as exc:
        typed = {
            name: ("on" if form.get(name) == "on" else "off")
            if name == "server_side_encryption"
            else form.get(name, "")
            for name in FIELDS
            if name not in SECRETS and (name == "backend" or form.get(name))
        }
        notice = stale.notice(exc, typed, LABELS)
        return _page(
            request, storage, posted=(resource_kind, {}, {GENERAL: notice}), status_code=409
        )
    except InvalidInput as exc:
        errors = field_errors(exc, fields=set(FIELDS))
        return _page(
            request,
            storage,
            posted=(resource_kind, form, errors),
            posted_version=version,
            status_code=422,
        )
    except RuleViolation as exc:
        posted = (resource_kind, dict(form), {GENERAL: exc.message})
        return _page(request, storage, posted=posted, posted_version=version, status_code=409)
    view = next(v for v in storage.overview() if v.config.kind is resource_kind)
    if failed is not None:
        return flash.redirect(
            request,
            PAGE,
            "warning",
            f"Saved anyway: the storage of {resource_kind.label.lower()} is now "
            f"{view.config.backend.label}, but its test failed ({failed.message}). Until "
            f"this is fixed, storing {resource_kind.value} fails.",
        )
    message = f"Saved the storage of {resource_kind.label.lower()}: {view.config.backend.label}."
    if view.pending:
        message += (
            f" {view.pending} stored {resource_kind.value} are in the other backend: "
            "start the migration below to move them."
        )
    return flash.redirect(request, PAGE, "success", message)


@router.post(PAGE + "/{kind}/test")
def probe_kind(
    request: Request, kind: str, _admin: PostStorage, controller: ControllerDep, form: FormData
) -> Response:
    """Probe the settings in the form (saved keys where left empty); saves nothing."""
    storage = _storage(request, controller)
    resource_kind = parse_kind(kind)
    try:
        results = storage.test(kinds=[resource_kind], changes={kind: _change(form)})
    except InvalidInput as exc:
        return render(
            request, "storage/_probe.html", results=[], errors=field_errors(exc), kind=kind
        )
    return render(request, "storage/_probe.html", results=results, errors={}, kind=kind)


@router.get(PAGE + "/{kind}/migration")
def migration_fragment(
    request: Request, kind: str, _reader: PageRead, controller: ControllerDep
) -> Response:
    """The migration panel of one kind (polled while a migration runs)."""
    storage = _storage(request, controller)
    return _migration(request, storage, parse_kind(kind))


@router.post(PAGE + "/{kind}/migration")
def start_migration(
    request: Request, kind: str, admin: PostStorage, controller: ControllerDep
) -> Response:
    """Start or resume the migration of one kind."""
    storage = _storage(request, controller)
    resource_kind = parse_kind(kind)
    error = None
    try:
        storage.start_migration(actor=admin, kind=resource_kind)
    except RuleViolation as exc:
        error = exc.message
    return _migration(request, storage, resource_kind, error=error)


@router.post(PAGE + "/{kind}/migration/pause")
def pause_migration(
    request: Request, kind: str, _admin: PostStorage, controller: ControllerDep
) -> Response:
    """Pause the running migration of one kind."""
    storage = _storage(request, controller)
    resource_kind = parse_kind(kind)
    storage.pause_migration(resource_kind)
    return _migration(request, storage, resource_kind)


def _migration(
    request: Request, storage: StorageService, kind: ResourceKind, *, error: str | None = None
) -> Response:
    view = next(v for v in storage.overview() if v.config.kind is kind)
    return render(request, "storage/_migration.html", view=view, error=error)
