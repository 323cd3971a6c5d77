"""Storage Configuration and the resource store (SPEC.md section 7).

The configuration of each resource kind lives in `storage_config` (S3 keys encrypted with the
secret box). Resources are written through the kind's active backend and recorded, with their
content type, size and sha256, in `storage_resources`, which also says which backend holds
each one; `StorageMigrations` moves them when the active backend changes.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from voipcloud.domain import versions
from voipcloud.domain.errors import (
    FieldError,
    InvalidInput,
    NotFound,
    RuleViolation,
    VoipcloudError,
)
from voipcloud.domain.model import Page
from voipcloud.domain.roles import RESOURCE_ACCESS, ResourceAccess, resource_access
from voipcloud.domain.storage import (
    BackendFailure,
    BackendType,
    FailureReason,
    KindConfig,
    LocalSettings,
    ResourceKind,
    S3Settings,
    apply_change,
    check_content_type,
    check_key,
    check_location_change,
    default_config,
    placement_problem,
    placement_refused,
)
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.storage_backends import (
    CHUNK,
    Backend,
    LocalBackend,
    S3Backend,
    S3Tuning,
    digest,
)
from voipcloud.services.storage_migration import KeyLocks, MigrationProgress, StorageMigrations
from voipcloud.store import events, infrastructure
from voipcloud.store import nodes as node_rows
from voipcloud.store import storage as rows
from voipcloud.store.storage import ConfigRow, ResourceRow

PROBE_BYTES = 64 * 1024
SHA256_HEX = 64

Resource = ResourceRow


@dataclass(frozen=True, slots=True)
class KindOverview:
    config: KindConfig
    usage: dict[BackendType, tuple[int, int]]  # backend → (count, bytes)
    migration: MigrationProgress | None

    @property
    def pending(self) -> int:
        """Resources held by a backend other than the active one."""
        return sum(n for b, (n, _) in self.usage.items() if b is not self.config.backend)


class ResourceAccessDenied(VoipcloudError):
    """A node's roles do not reach stored resources this way (403)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    kind: ResourceKind
    backend: BackendType
    ok: bool
    reason: FailureReason | None
    message: str
    milliseconds: float


class StorageService:
    def __init__(
        self, ctx: Context, *, data_dir: Path | None = None, tuning: S3Tuning | None = None
    ) -> None:
        self.ctx = ctx
        self.data_dir = data_dir or ctx.data_dir
        self.tuning = tuning or S3Tuning.from_env()
        self.locks = KeyLocks()
        self.migrations = StorageMigrations(ctx, self)

    def bind_data_dir(self, data_dir: Path) -> None:
        """The default local directories are under the data dir (`<data dir>/storage/<kind>`)."""
        if self.data_dir is None:
            self.data_dir = data_dir.resolve()

    @property
    def storage_root(self) -> str:
        return str(self._data_dir() / "storage")

    def _data_dir(self) -> Path:
        return self.data_dir or Path("./voipcloud-data").resolve()

    # --- where local directories may be -------------------------------------------------

    def placement(
        self, kind: ResourceKind, paths: dict[ResourceKind, str]
    ) -> tuple[Path, str | None]:
        """The kind's local directory with its symbolic links resolved, and why it may not be
        used (None: it may). `paths` holds every kind's configured local directory."""
        data_dir = self._data_dir()
        resolved = {k: Path(p).resolve() for k, p in paths.items()}
        problem = placement_problem(
            kind,
            PurePosixPath(resolved[kind]),
            data_dir=PurePosixPath(data_dir.resolve()),
            storage_area=PurePosixPath((data_dir / "storage").resolve()),
            others={k: PurePosixPath(p) for k, p in resolved.items() if k is not kind},
        )
        return resolved[kind], problem

    def _placement_errors(
        self, current: dict[ResourceKind, KindConfig], proposed: dict[ResourceKind, KindConfig]
    ) -> list[FieldError]:
        """Refuse, at save, a local directory that moved (or became active) to a place it
        may not be."""
        paths = {kind: config.local.path for kind, config in proposed.items()}
        errors = []
        for kind, after in proposed.items():
            before = current[kind]
            activated = after.backend is BackendType.LOCAL and before.backend is not after.backend
            if after.local == before.local and not activated:
                continue
            resolved, problem = self.placement(kind, paths)
            if problem:
                shown = after.local.path
                if str(resolved) != shown:
                    shown += f" (resolves to {resolved})"
                errors.append(
                    FieldError(
                        ("body", kind.value, "local", "path"),
                        f"cannot hold {kind.value}: {shown} {problem}",
                    )
                )
        return errors

    def _local_paths(self) -> dict[ResourceKind, str]:
        with self.ctx.db.read() as conn:
            stored = rows.configs(conn)
        return {
            kind: stored[kind.value].local_path
            if kind.value in stored
            else default_config(kind, self.storage_root).local.path
            for kind in ResourceKind
        }

    # --- configuration ------------------------------------------------------------------

    def configuration(self) -> dict[ResourceKind, KindConfig]:
        with self.ctx.db.read() as conn:
            stored = rows.configs(conn)
        return {kind: self._config(kind, stored.get(kind.value)) for kind in ResourceKind}

    def config(self, kind: ResourceKind) -> KindConfig:
        """One kind's configuration: only its S3 keys are decrypted (every resource request
        asks for it)."""
        with self.ctx.db.read() as conn:
            stored = rows.configs(conn)
        return self._config(kind, stored.get(kind.value))

    def _config(self, kind: ResourceKind, row: ConfigRow | None) -> KindConfig:
        if row is None:
            return default_config(kind, self.storage_root)
        s3 = S3Settings(
            bucket=row.s3.get("bucket", ""),
            region=row.s3.get("region", "us-east-1"),
            endpoint_url=row.s3.get("endpoint_url"),
            prefix=row.s3.get("prefix", ""),
            server_side_encryption=bool(row.s3.get("server_side_encryption", False)),
            access_key_id=self._decrypt(row.access_key_encrypted),
            secret_access_key=self._decrypt(row.secret_key_encrypted),
        )
        return KindConfig(
            kind=kind,
            backend=BackendType(row.backend),
            local=LocalSettings(path=row.local_path),
            s3=s3,
        )

    def _decrypt(self, token: bytes | None) -> str:
        return (self.ctx.box.decrypt(token) or "") if token else ""

    def overview(self) -> list[KindOverview]:
        configs = self.configuration()
        with self.ctx.db.read() as conn:
            usage = rows.usage(conn)
        return [
            KindOverview(
                config=configs[kind],
                usage={BackendType(b): v for b, v in usage.get(kind.value, {}).items()},
                migration=self.migrations.progress(kind),
            )
            for kind in ResourceKind
        ]

    def candidate(self, changes: dict[str, Any]) -> dict[ResourceKind, KindConfig]:
        """The configuration `changes` would give, validated, without saving it."""
        unknown = sorted(set(changes) - {k.value for k in ResourceKind})
        if unknown:
            raise InvalidInput.one(("body", unknown[0]), "is not a resource kind")
        current = self.configuration()
        proposed = {
            kind: apply_change(config, changes[kind.value])
            if changes.get(kind.value) is not None
            else config
            for kind, config in current.items()
        }
        errors = self._placement_errors(current, proposed)
        if errors:
            raise InvalidInput(errors)
        return proposed

    def version(self) -> versions.Snapshot:
        """The configuration as read now, with its version (the API's ETag)."""
        with self.ctx.db.read() as conn:
            return self._snapshot(rows.configs(conn))

    def _snapshot(self, stored: dict[str, ConfigRow]) -> versions.Snapshot:
        """Version: each kind's row version, dotted; fields: what the page shows of each
        kind (never the keys: only whether they are set)."""
        fields: dict[str, Any] = {}
        numbers = []
        for kind in ResourceKind:
            row = stored.get(kind.value)
            numbers.append(str(row.row_version if row else 0))
            config = self._config(kind, row) if row else default_config(kind, self.storage_root)
            s3 = config.s3
            fields[f"{kind.value}.backend"] = config.backend.value
            fields[f"{kind.value}.local.path"] = config.local.path
            fields[f"{kind.value}.s3"] = (
                s3.bucket,
                s3.region,
                s3.endpoint_url,
                s3.prefix,
                s3.server_side_encryption,
                bool(row and row.access_key_encrypted),
                bool(row and row.secret_key_encrypted),
            )
        return versions.Snapshot.of("the Storage Configuration", ".".join(numbers), fields)

    def configure(
        self,
        *,
        actor: str,
        changes: dict[str, Any],
        expected: versions.Expected | None = None,
    ) -> list[KindOverview]:
        """Apply a change to one or more kinds, all or nothing. `expected` (If-Match, a
        form's version): refused with StaleVersion when any kind changed since; each save is
        a compare-and-set on the version read here."""
        proposed = self.candidate(changes)
        now = self.ctx.clock()
        with self.ctx.db.write() as conn:
            infrastructure.lock(conn)  # serializes configuration changes, even the first
            stored = rows.configs(conn)
            versions.check(expected, self._snapshot(stored))
            usage = rows.usage(conn)
            for kind, after in proposed.items():
                before = self._config(kind, stored.get(kind.value))
                if after == before and kind.value in stored:
                    continue
                if self.migrations.running(kind):
                    raise RuleViolation(
                        "storage-migration-running",
                        f"A migration of {kind.value} to {before.backend.label} is running; "
                        "pause it (or let it finish) before changing the storage of "
                        f"{kind.value}.",
                    )
                in_use = {BackendType(b): n for b, (n, _) in usage.get(kind.value, {}).items()}
                check_location_change(before, after, stored_in=in_use)
                version = stored[kind.value].row_version if kind.value in stored else 0
                if not rows.save_config(conn, self._row(after, version), now=now):
                    raise RuleViolation(
                        "concurrent-change",
                        f"The storage of {kind.value} was changed by another request at the "
                        "same time; reload the page and try again.",
                    )
                events.append(
                    conn,
                    at=now,
                    actor=actor,
                    node_id=None,
                    operation="configure-storage",
                    reason=_describe_change(before, after),
                )
        return self.overview()

    def _row(self, config: KindConfig, version: int = 0) -> ConfigRow:
        s3 = config.s3
        return ConfigRow(
            kind=config.kind.value,
            backend=config.backend.value,
            local_path=config.local.path,
            s3={
                "bucket": s3.bucket,
                "region": s3.region,
                "endpoint_url": s3.endpoint_url,
                "prefix": s3.prefix,
                "server_side_encryption": s3.server_side_encryption,
            },
            access_key_encrypted=self.ctx.box.encrypt(s3.access_key_id)
            if s3.access_key_id
            else None,
            secret_key_encrypted=self.ctx.box.encrypt(s3.secret_access_key)
            if s3.secret_access_key
            else None,
            row_version=version,
        )

    # --- backends -----------------------------------------------------------------------

    def backend(
        self,
        config: KindConfig,
        which: BackendType | None = None,
        *,
        paths: dict[ResourceKind, str] | None = None,
    ) -> Backend:
        """The backend that holds (or will hold) the kind's resources. A local directory is
        checked again here, on every use, with its symbolic links resolved: the disk may have
        changed since it was saved. `paths`: every kind's local directory (default: saved)."""
        which = which or config.backend
        if which is BackendType.LOCAL:
            paths = {**(paths or self._local_paths()), config.kind: config.local.path}
            resolved, problem = self.placement(config.kind, paths)
            if problem:
                raise BackendFailure(
                    FailureReason.PATH_NOT_ALLOWED,
                    placement_refused(config.kind, config.local.path, str(resolved), problem),
                )
            return LocalBackend(resolved, kind=config.kind)
        if not config.s3.configured:
            raise BackendFailure(
                FailureReason.NOT_CONFIGURED,
                f"S3 storage of {config.kind.value} is not configured: set the bucket, region, "
                "access key ID and secret key in Storage Configuration.",
            )
        return S3Backend(config.s3, kind=config.kind, tuning=self.tuning)

    def test(
        self, *, kinds: list[ResourceKind] | None = None, changes: dict[str, Any] | None = None
    ) -> list[ProbeResult]:
        """A real write, read-back with checksum comparison and delete, per kind."""
        configs = self.candidate(changes) if changes else self.configuration()
        paths = {kind: config.local.path for kind, config in configs.items()}
        return [self._probe(configs[kind], paths) for kind in kinds or list(ResourceKind)]

    def _probe(self, config: KindConfig, paths: dict[ResourceKind, str]) -> ProbeResult:
        started = time.monotonic()
        payload = secrets.token_bytes(PROBE_BYTES)
        key = f".voipcloud-probe/{secrets.token_hex(8)}"

        def result(reason: FailureReason | None, message: str) -> ProbeResult:
            elapsed = (time.monotonic() - started) * 1000
            return ProbeResult(
                config.kind, config.backend, reason is None, reason, message, round(elapsed, 1)
            )

        try:
            backend = self.backend(config, paths=paths)
            with tempfile.TemporaryFile() as probe:
                probe.write(payload)
                probe.seek(0)
                backend.put(key, probe, size=PROBE_BYTES, content_type="application/octet-stream")
            try:
                read_back, _ = digest(backend.open(key))
            finally:
                backend.delete(key)
        except (BackendFailure, NotFound) as exc:
            reason = exc.reason if isinstance(exc, BackendFailure) else FailureReason.IO_ERROR
            return result(reason, exc.message)
        if read_back != hashlib.sha256(payload).hexdigest():
            return result(
                FailureReason.CHECKSUM_MISMATCH,
                f"The storage of {config.kind.value} ({config.backend.label}) returned different "
                "bytes than were written (sha256 mismatch). Check the store's health.",
            )
        return result(
            None,
            f"Wrote, read back (sha256 verified) and deleted a {PROBE_BYTES // 1024} KiB probe "
            f"object in the storage of {config.kind.value} ({config.backend.label}).",
        )

    # --- who may reach resources ---------------------------------------------------------

    def authorize_node(self, node_id: int, kind: str, *, write: bool) -> None:
        """A node reaches stored resources only through its roles (RESOURCE_ACCESS)."""
        with self.ctx.db.read() as conn:
            codes = node_rows.roles_of(conn, [node_id]).get(node_id, [])
        if resource_access(codes).allows(write=write):
            return
        granted = ", ".join(
            f"{code} ({'read and write' if a is ResourceAccess.READ_WRITE else 'read'})"
            for code, a in RESOURCE_ACCESS.items()
        )
        raise ResourceAccessDenied(
            f"Node {node_id} carries {', '.join(codes) or 'no roles'}: none of its roles may "
            f"{'write' if write else 'read'} {kind}. Stored resources are for the roles "
            f"{granted}."
        )

    # --- resources ----------------------------------------------------------------------

    def put(
        self,
        *,
        kind: ResourceKind,
        key: str,
        content: BinaryIO,
        content_type: str | None = None,
        expected_sha256: str | None = None,
        actor: str = CONTROLLER_ACTOR,
        node_id: int | None = None,
    ) -> Resource:
        """Store `content` (a seekable file, read in chunks) as the resource `key`; an event
        names the actor (and the node, when a node stored it)."""
        check_key(key)
        content_type = check_content_type(content_type)
        start = content.tell()
        sha256, size = digest(iter(lambda: content.read(CHUNK), b""))
        if expected_sha256 is not None and expected_sha256.lower() != sha256:
            raise InvalidInput.one(
                ("header", "x-checksum-sha256"),
                f"does not match the content received (sha256 {sha256}); resend the resource",
            )
        content.seek(start)
        with self.locks.hold(kind, key):
            return self._put(kind, key, content, content_type, sha256, size, actor, node_id)

    def _put(
        self,
        kind: ResourceKind,
        key: str,
        content: BinaryIO,
        content_type: str,
        sha256: str,
        size: int,
        actor: str,
        node_id: int | None,
    ) -> Resource:
        config = self.config(kind)
        backend = self.backend(config)
        backend.put(key, content, size=size, content_type=content_type)
        now = self.ctx.clock()
        with self.ctx.db.write() as conn:
            existing = rows.resource(conn, kind.value, key)
            stale = (
                existing.backend if existing and existing.backend != backend.type.value else None
            )
            rows.upsert(
                conn,
                kind=kind.value,
                key=key,
                backend=backend.type.value,
                stale_backend=stale or (existing.stale_backend if existing else None),
                content_type=content_type,
                size=size,
                sha256=sha256,
                now=now,
            )
            stored = rows.resource(conn, kind.value, key)
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=node_id,
                operation="store-resource",
                reason=f"{kind.value}/{key}: {size} bytes, sha256 {sha256}"
                + (" (replaced)" if existing else ""),
            )
        assert stored is not None
        if stale:
            self.drop_stale(config, stored)
        return stored

    def drop_stale(self, config: KindConfig, resource: Resource) -> None:
        """Delete the old copy of a resource that now lives elsewhere."""
        if resource.stale_backend is None:
            return
        stale = BackendType(resource.stale_backend)
        self.backend(config, stale).delete(resource.key)
        with self.ctx.db.write() as conn:
            rows.clear_stale(conn, kind=resource.kind, key=resource.key, stale_backend=stale.value)

    def resource(self, *, kind: ResourceKind, key: str) -> Resource:
        with self.ctx.db.read() as conn:
            found = rows.resource(conn, kind.value, key)
        if found is None:
            raise NotFound(f"No {kind.value} resource is stored under the key {key}.")
        return found

    def open(self, *, kind: ResourceKind, key: str) -> tuple[Resource, Iterator[bytes]]:
        """The resource and its bytes, streamed from the backend that holds it."""
        check_key(key)
        found = self.resource(kind=kind, key=key)
        backend = self.backend(self.config(kind), BackendType(found.backend))
        return found, backend.open(key, size=found.size)

    def list(
        self, *, kind: ResourceKind, prefix: str = "", limit: int = 100, offset: int = 0
    ) -> Page[Resource]:
        with self.ctx.db.read() as conn:
            items, total = rows.page(conn, kind.value, prefix=prefix, limit=limit, offset=offset)
        return Page(items=items, total=total)

    def delete(
        self,
        *,
        kind: ResourceKind,
        key: str,
        actor: str = CONTROLLER_ACTOR,
        node_id: int | None = None,
    ) -> None:
        """Delete the bytes first (a stale copy before the live one): a failure leaves the
        resource whole and listed. Waits for a migration moving this very resource, so no
        copy is left behind in either place."""
        check_key(key)
        with self.locks.hold(kind, key):
            found = self.resource(kind=kind, key=key)
            config = self.config(kind)
            if found.stale_backend:
                self.backend(config, BackendType(found.stale_backend)).delete(key)
            self.backend(config, BackendType(found.backend)).delete(key)
            with self.ctx.db.write() as conn:
                rows.remove(conn, kind.value, key)
                events.append(
                    conn,
                    at=self.ctx.clock(),
                    actor=actor,
                    node_id=node_id,
                    operation="delete-resource",
                    reason=f"{kind.value}/{key}: {found.size} bytes, sha256 {found.sha256}",
                )

    # --- migration ----------------------------------------------------------------------

    def start_migration(self, *, actor: str, kind: ResourceKind) -> MigrationProgress:
        return self.migrations.start(actor=actor, kind=kind)

    def migration(self, kind: ResourceKind) -> MigrationProgress | None:
        return self.migrations.progress(kind)

    def pause_migration(self, kind: ResourceKind) -> MigrationProgress | None:
        return self.migrations.pause(kind)


def _describe_change(before: KindConfig, after: KindConfig) -> str:
    parts = []
    if before.backend != after.backend:
        parts.append(f"backend {before.backend.value} -> {after.backend.value}")
    if before.local != after.local:
        parts.append(f"local path {after.local.path}")
    if _without_keys(before.s3) != _without_keys(after.s3):
        parts.append(f"S3 bucket {after.s3.bucket} prefix {after.s3.prefix or '-'}")
    if (before.s3.access_key_id, before.s3.secret_access_key) != (
        after.s3.access_key_id,
        after.s3.secret_access_key,
    ):
        parts.append("S3 credentials changed")
    return f"storage of {after.kind.value}: " + ("; ".join(parts) or "saved")


def _without_keys(s3: S3Settings) -> S3Settings:
    return replace(s3, access_key_id="", secret_access_key="")
