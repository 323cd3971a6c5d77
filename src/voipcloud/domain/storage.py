"""Storage Configuration as data: resource kinds, backends, their settings and validation.

Each resource kind (incoming faxes, recorded calls, voicemail messages) keeps the settings of
both backends, local and S3, and names the active one. New resources go to the active backend;
every stored resource remembers the backend that holds it, so switching the active backend
loses nothing and a migration can move the resources over one by one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from voipcloud.domain.errors import FieldError, InvalidInput, RuleViolation


class ResourceKind(StrEnum):
    FAXES = "faxes"
    RECORDINGS = "recordings"
    VOICEMAIL = "voicemail"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    ResourceKind.FAXES: "Incoming faxes",
    ResourceKind.RECORDINGS: "Recorded calls",
    ResourceKind.VOICEMAIL: "Voicemail messages",
}


class BackendType(StrEnum):
    LOCAL = "local"
    S3 = "s3"

    @property
    def label(self) -> str:
        return "Local storage" if self is BackendType.LOCAL else "Amazon S3"


@dataclass(frozen=True, slots=True)
class LocalSettings:
    path: str  # absolute directory


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None  # S3-compatible stores; None means AWS
    prefix: str = ""
    access_key_id: str = ""  # write-only: encrypted at rest, shown only as a hint
    secret_access_key: str = ""  # write-only: encrypted at rest, never shown
    server_side_encryption: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.bucket and self.access_key_id and self.secret_access_key)

    def location(self) -> tuple[str | None, str, str]:
        """What decides where objects are; changing it strands the objects already there."""
        return (self.endpoint_url, self.bucket, self.prefix)


@dataclass(frozen=True, slots=True)
class KindConfig:
    kind: ResourceKind
    backend: BackendType
    local: LocalSettings
    s3: S3Settings = field(default_factory=S3Settings)


def default_config(kind: ResourceKind, storage_root: str) -> KindConfig:
    path = str(PurePosixPath(storage_root) / kind.value)
    return KindConfig(kind=kind, backend=BackendType.LOCAL, local=LocalSettings(path=path))


# --- validation of a change to one kind ---------------------------------------------------

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d$|^[a-z0-9][a-z0-9\-]{0,30}$")
ENDPOINT = re.compile(r"^https?://[^\s/?#]+(:\d{1,5})?/?$")
PREFIX = re.compile(r"^[A-Za-z0-9!\-_.*'()/]{0,200}$")
ACCESS_KEY = re.compile(r"^[A-Za-z0-9+/=._\-]{3,128}$")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-]{1,63}(?<!-)", re.ASCII)
MAX_SECRET = 256
MAX_PATH = 1024


def apply_change(current: KindConfig, change: dict[str, Any]) -> KindConfig:
    """The kind's configuration after `change` (the PUT body for this kind), or InvalidInput.

    Secrets left empty or absent keep their stored value ("leave empty to keep").
    """
    loc = ("body", current.kind.value)
    errors: list[FieldError] = []
    backend = current.backend
    if "backend" in change:
        try:
            backend = BackendType(change["backend"])
        except ValueError:
            errors.append(FieldError((*loc, "backend"), "must be 'local' or 's3'"))
    local = current.local
    if change.get("local") is not None:
        path = str(change["local"].get("path") or "").strip()
        if not path.startswith("/") or len(path) > MAX_PATH or _has_control(path):
            errors.append(
                FieldError(
                    (*loc, "local", "path"),
                    "must be an absolute directory path without control characters",
                )
            )
        else:
            local = LocalSettings(path=path)
    s3 = current.s3
    if change.get("s3") is not None:
        s3, s3_errors = _apply_s3(current.s3, change["s3"], (*loc, "s3"))
        errors += s3_errors
    if not errors and backend is BackendType.S3:
        errors += _require_s3(s3, (*loc, "s3"))
    if errors:
        raise InvalidInput(errors)
    return replace(current, backend=backend, local=local, s3=s3)


def _apply_s3(
    current: S3Settings, change: dict[str, Any], loc: tuple[str, ...]
) -> tuple[S3Settings, list[FieldError]]:
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    checks = {
        "bucket": (BUCKET, "must be an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'"),
        "region": (REGION, "must be a region name such as eu-west-1"),
        "prefix": (PREFIX, "must be at most 200 URL-safe characters"),
    }
    for name, (pattern, message) in checks.items():
        if name in change and change[name] is not None:
            value = str(change[name]).strip()
            if name == "prefix":
                value = value.strip("/")
            # an empty bucket means "not set": required only while the backend is s3
            if not (name == "bucket" and value == "") and not pattern.match(value):
                errors.append(FieldError((*loc, name), message))
            values[name] = value
    if "endpoint_url" in change:
        endpoint = str(change["endpoint_url"] or "").strip() or None
        if endpoint is not None and not valid_endpoint(endpoint):
            errors.append(
                FieldError((*loc, "endpoint_url"), "must be an http(s)://host[:port] URL")
            )
        values["endpoint_url"] = endpoint.rstrip("/") if endpoint else None
    if "server_side_encryption" in change:
        sse = change["server_side_encryption"]
        if not isinstance(sse, bool):
            errors.append(FieldError((*loc, "server_side_encryption"), "must be true or false"))
        values["server_side_encryption"] = bool(sse)
    access_key = str(change.get("access_key_id") or "").strip()
    if access_key:  # empty: keep the stored one
        if not ACCESS_KEY.match(access_key):
            errors.append(FieldError((*loc, "access_key_id"), "must be 3-128 key characters"))
        values["access_key_id"] = access_key
    secret = str(change.get("secret_access_key") or "")
    if secret:  # empty: keep the stored one
        if len(secret) > MAX_SECRET or secret.strip() != secret or _has_control(secret):
            errors.append(
                FieldError(
                    (*loc, "secret_access_key"),
                    f"must be at most {MAX_SECRET} characters without surrounding spaces "
                    "or control characters",
                )
            )
        values["secret_access_key"] = secret
    return replace(current, **values), errors


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


def valid_endpoint(value: str) -> bool:
    """http(s)://host[:port] with a DNS name or an IP address, nothing else."""
    if len(value) > 255 or not value.isascii() or not ENDPOINT.match(value):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a bracket left open, a port that is not a number or out of range
        return False
    host = parts.hostname or ""
    if parts.username is not None or parts.query or parts.fragment or parts.path not in {"", "/"}:
        return False
    if port is not None and not 0 < port < 65536:
        return False
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return all(HOST_LABEL.fullmatch(label) for label in host.split("."))


def _require_s3(s3: S3Settings, loc: tuple[str, ...]) -> list[FieldError]:
    return [
        FieldError((*loc, name), "is required when the backend is s3", "missing")
        for name in ("bucket", "region", "access_key_id", "secret_access_key")
        if not getattr(s3, name)
    ]


def check_location_change(
    before: KindConfig, after: KindConfig, *, stored_in: dict[BackendType, int]
) -> None:
    """Refuse to move a backend's location while resources still live there."""
    moved = {
        BackendType.LOCAL: before.local.path != after.local.path,
        BackendType.S3: before.s3.location() != after.s3.location() and before.s3.configured,
    }
    for backend, changed in moved.items():
        count = stored_in.get(backend, 0)
        if changed and count:
            other = BackendType.S3 if backend is BackendType.LOCAL else BackendType.LOCAL
            raise RuleViolation(
                "storage-location-in-use",
                f"{count} {before.kind.label.lower()} are stored in the current "
                f"{backend.label} location of {before.kind.value}; its location cannot change "
                f"while they are there. Migrate them to {other.label} first, or delete them.",
            )


# --- where a local directory may be --------------------------------------------------------

STORAGE_AREA = "storage"  # <data dir>/storage: the only part of the data dir for resources
# Directories of the operating system: a controller running as root must not write there.
SYSTEM_DIRECTORIES = tuple(
    PurePosixPath(p)
    for p in (
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
        "/proc", "/run", "/sbin", "/sys", "/usr",
    )
)  # fmt: skip


def _within(path: PurePosixPath, parent: PurePosixPath) -> bool:
    """`path` is `parent` or inside it."""
    return path == parent or parent in path.parents


def placement_problem(
    kind: ResourceKind,
    directory: PurePosixPath,
    *,
    data_dir: PurePosixPath,
    storage_area: PurePosixPath,
    others: dict[ResourceKind, PurePosixPath],
) -> str | None:
    """Why a kind's local directory may not be used, or None. Every path is absolute with its
    symbolic links resolved (the caller resolves them, at save and again at use).

    The data dir holds the controller's key, database and certificates: a storage directory
    is never the data dir, a parent of it, or inside it (but for `<data dir>/storage/...`, the
    storage area). No two kinds share a directory: neither equal, nor one inside the other.
    """
    if _within(data_dir, directory):
        what = "is" if directory == data_dir else "contains"
        return f"{what} the controller's data directory {data_dir}"
    in_storage_area = directory != storage_area and _within(directory, storage_area)
    if _within(directory, data_dir) and not in_storage_area:
        return (
            f"is inside the controller's data directory {data_dir}; only its storage area "
            f"{storage_area}/<kind> may hold resources"
        )
    if not in_storage_area:
        for system in SYSTEM_DIRECTORIES:
            if _within(directory, system):
                return f"is in the system directory {system}"
    for other, path in sorted(others.items()):
        if other is kind:
            continue
        if _within(directory, path) or _within(path, directory):
            relation = (
                "is"
                if directory == path
                else "is inside"
                if _within(directory, path)
                else "contains"
            )
            return (
                f"{relation} the local directory of {other.value} ({path}); "
                "each kind needs a directory of its own"
            )
    return None


def placement_refused(kind: ResourceKind, configured: str, resolved: str, problem: str) -> str:
    """The message of a refusal at use (the configuration was saved, the disk changed since)."""
    shown = configured if configured == resolved else f"{configured} (resolves to {resolved})"
    return (
        f"The local directory of {kind.value}, {shown}, {problem}: nothing was read or "
        "written. Choose another directory in Storage Configuration."
    )


# --- resource keys ------------------------------------------------------------------------

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")
MAX_KEY = 512
CONTENT_TYPE = re.compile(r"[\w.+\-]+/[\w.+\-]+( *;[\x20-\x7e]*)?", re.ASCII)


def check_key(key: str) -> str:
    """Resource keys are relative paths such as `1001/2026-11-24T10-00-00.wav`."""
    if len(key) > MAX_KEY or not KEY.fullmatch(key) or ".." in key.split("/"):
        raise InvalidInput.one(
            ("path", "key"),
            f"must be at most {MAX_KEY} characters: segments of letters, digits, '.', '_', "
            "'-' separated by '/', each starting with a letter or digit",
        )
    return key


def check_content_type(value: str | None) -> str:
    value = (value or "application/octet-stream").strip()
    if len(value) > 255 or not CONTENT_TYPE.fullmatch(value):
        raise InvalidInput.one(("header", "content-type"), "must be a media type such as audio/wav")
    return value


# Served as they are: media a browser plays or shows without running anything. Every other
# type is served as application/octet-stream; every answer is an attachment with nosniff.
SAFE_CONTENT_TYPES = frozenset(
    {
        "application/pdf",
        "audio/aac", "audio/basic", "audio/flac", "audio/mp4", "audio/mpeg", "audio/ogg",
        "audio/opus", "audio/vnd.wave", "audio/wav", "audio/wave", "audio/webm", "audio/x-wav",
        "image/gif", "image/jpeg", "image/png", "image/tiff",
        "video/mp4", "video/webm",
    }
)  # fmt: skip


def served_content_type(stored: str) -> str:
    """The Content-Type a stored resource is served with: its media type (without
    parameters) when it is on the safe list, else application/octet-stream."""
    media = stored.split(";", 1)[0].strip().lower()
    return media if media in SAFE_CONTENT_TYPES else "application/octet-stream"


def parse_kind(value: str) -> ResourceKind:
    try:
        return ResourceKind(value)
    except ValueError:
        raise InvalidInput.one(
            ("path", "kind"), f"must be one of {', '.join(k.value for k in ResourceKind)}"
        ) from None


# --- backend failures ---------------------------------------------------------------------


class FailureReason(StrEnum):
    BAD_CREDENTIALS = "bad-credentials"
    NO_SUCH_BUCKET = "no-such-bucket"
    ACCESS_DENIED = "access-denied"
    UNREACHABLE = "endpoint-unreachable"
    TIMEOUT = "timeout"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    NOT_CONFIGURED = "not-configured"
    IO_ERROR = "io-error"
    PATH_NOT_ALLOWED = "path-not-allowed"


class BackendFailure(RuleViolation):
    """A storage backend refused or failed; the message says what to check (409)."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(f"storage-{reason.value}", message)
        self.reason = reason
