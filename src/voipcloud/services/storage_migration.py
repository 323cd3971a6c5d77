"""Moving a resource kind's stored resources to its active backend, resumably.

Per object, in key order:
1. copy: stream it from the backend that holds it into the active one, hashing on the way;
2. verify: read the new copy back and compare its sha256 with the recorded one;
3. switch: point the row at the new copy and mark the old one stale (compare-and-set on the
   old backend and the checksum, so a resource rewritten meanwhile is left alone);
4. clean: delete the stale copy, then clear the mark.
Nothing is deleted from the old place before step 3, and every step is recorded in the table,
so a migration interrupted anywhere (pause, crash, kill) resumes where it stopped: rows still
on the old backend are copied again, rows with a stale mark are cleaned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from voipcloud.domain.errors import NotFound, RuleViolation
from voipcloud.domain.storage import (
    BackendFailure,
    BackendType,
    FailureReason,
    KindConfig,
    ResourceKind,
)
from voipcloud.services import cluster
from voipcloud.services.context import CONTROLLER_ACTOR, Context
from voipcloud.services.storage_backends import ChunkReader, digest
from voipcloud.store import events
from voipcloud.store import storage as rows
from voipcloud.store.storage import ResourceRow

if TYPE_CHECKING:
    from voipcloud.services.storage import StorageService

log = logging.getLogger("voipcloud.storage")
BATCH = 64
WORKERS = 4  # objects moved at the same time
MAX_CONSECUTIVE_FAILURES = 5
BUSY_WAIT = 30.0  # seconds a writer waits for another writer of the same resource


class KeyLocks:
    """One writer at a time per resource in this controller: a put, a delete and the
    migration's move of the same key exclude each other, so a delete during a migration
    never leaves a copy behind and a put is never overwritten by an older copy."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: set[tuple[str, str]] = set()

    @contextmanager
    def hold(self, kind: ResourceKind, key: str, *, wait: float = BUSY_WAIT) -> Iterator[None]:
        name = (kind.value, key)
        deadline = time.monotonic() + wait
        with self._cond:
            while name in self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuleViolation(
                        "storage-resource-busy",
                        f"The {kind.value} resource {key} is being written, deleted or moved "
                        "by the migration right now; try again in a moment.",
                    )
                self._cond.wait(left)
            self._busy.add(name)
        try:
            yield
        finally:
            with self._cond:
                self._busy.discard(name)
                self._cond.notify_all()


class MigrationStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # stopped on request; start again to resume
    INTERRUPTED = "interrupted"  # the controller stopped while it ran; start again to resume
    COMPLETED = "completed"
    FAILED = "failed"  # some objects could not be moved; the error says why; resumable


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    kind: ResourceKind
    status: MigrationStatus
    source: BackendType
    target: BackendType
    total: int
    done: int
    failed: int
    bytes_total: int
    bytes_done: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 1)


class StorageMigrations:
    def __init__(self, ctx: Context, storage: StorageService) -> None:
        self.ctx = ctx
        self.storage = storage
        self._lock = threading.Lock()
        self._workers: dict[ResourceKind, tuple[threading.Thread, threading.Event]] = {}

    def running(self, kind: ResourceKind) -> bool:
        """Running here, or (several controllers on one PostgreSQL) on another controller."""
        worker = self._workers.get(kind)
        if worker is not None and worker[0].is_alive():
            return True
        return cluster.held_anywhere(self.ctx.db, _lock_key(kind))

    def progress(self, kind: ResourceKind) -> MigrationProgress | None:
        # Ask whether the worker lives *before* reading its row: a worker that ends between
        # the two has written its final status first, so a finished run is never taken for
        # an interrupted one.
        alive = self.running(kind)
        with self.ctx.db.read() as conn:
            row = rows.migration(conn, kind.value)
        if row is None:
            return None
        status = MigrationStatus(row["status"])
        if status is MigrationStatus.RUNNING and not alive:
            status = MigrationStatus.INTERRUPTED
        return MigrationProgress(
            kind=kind,
            status=status,
            source=BackendType(row["source"]),
            target=BackendType(row["target"]),
            total=row["total"],
            done=row["done"],
            failed=row["failed"],
            bytes_total=row["bytes_total"],
            bytes_done=row["bytes_done"],
            last_error=row["last_error"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )

    def start(self, *, actor: str, kind: ResourceKind, wait: bool = False) -> MigrationProgress:
        """Start, or resume, moving the kind's resources to its active backend."""
        config = self.storage.config(kind)
        target = config.backend
        source = BackendType.S3 if target is BackendType.LOCAL else BackendType.LOCAL
        with self._lock:
            if self.running(kind):
                raise RuleViolation(
                    "storage-migration-running",
                    f"A migration of {kind.value} is already running; follow its progress, "
                    "or pause it before starting again.",
                )
            self.storage.backend(config)  # refuses an unconfigured target
            probe = self.storage.test(kinds=[kind])[0]
            if not probe.ok and probe.reason is not None:
                raise BackendFailure(probe.reason, f"Cannot migrate: {probe.message}")
            lock = cluster.MigrationLock(self.ctx.db, _lock_key(kind))
            if not lock.acquire():  # another controller of the cluster runs it
                raise RuleViolation(
                    "storage-migration-running",
                    f"A migration of {kind.value} is already running on another controller; "
                    "follow its progress, or pause it there before starting again.",
                )
            now = self.ctx.clock()
            try:
                self._save_started(kind, source, target, actor, now)
            except BaseException:
                lock.release()
                raise
            stop = threading.Event()
            thread = threading.Thread(
                target=self._run_holding,
                args=(config, stop, lock),
                name=f"storage-migration-{kind.value}",
                daemon=True,
            )
            self._workers[kind] = (thread, stop)
            thread.start()
        if wait:
            thread.join()
        progress = self.progress(kind)
        assert progress is not None
        return progress

    def _save_started(
        self,
        kind: ResourceKind,
        source: BackendType,
        target: BackendType,
        actor: str,
        now: datetime,
    ) -> None:
        with self.ctx.db.write() as conn:
            total, done, bytes_total, bytes_done = rows.progress_counts(
                conn, kind.value, target.value
            )
            rows.save_migration(
                conn,
                kind.value,
                source=source.value,
                target=target.value,
                status=MigrationStatus.RUNNING.value,
                total=total,
                done=done,
                failed=0,
                bytes_total=bytes_total,
                bytes_done=bytes_done,
                last_error=None,
                started_at=now,
                updated_at=now,
                finished_at=None,
            )
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="migrate-storage",
                reason=f"storage of {kind.value}: moving {total - done} of {total} "
                f"resources to {target.label}",
            )

    def pause(self, kind: ResourceKind) -> MigrationProgress | None:
        """Ask a running migration to stop after the object it is moving; waits for it.
        Running on another controller of the cluster: its row is marked paused, which that
        controller's worker reads after each group of objects."""
        worker = self._workers.get(kind)
        if worker is not None and worker[0].is_alive():
            worker[1].set()
            worker[0].join(timeout=120)
        elif cluster.held_anywhere(self.ctx.db, _lock_key(kind)):
            with self.ctx.db.write() as conn:
                rows.set_migration_status_if(
                    conn,
                    kind.value,
                    current=MigrationStatus.RUNNING.value,
                    status=MigrationStatus.PAUSED.value,
                    now=self.ctx.clock(),
                )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and cluster.held_anywhere(
                self.ctx.db, _lock_key(kind)
            ):
                time.sleep(0.1)
        return self.progress(kind)

    # --- the worker ----------------------------------------------------------------------

    def _run_holding(
        self, config: KindConfig, stop: threading.Event, lock: cluster.MigrationLock
    ) -> None:
        try:
            self._run(config, stop)
        finally:
            lock.release()

    def _run(self, config: KindConfig, stop: threading.Event) -> None:
        kind, target = config.kind, config.backend
        failed = 0
        consecutive = 0
        last_error: str | None = None
        after = ""
        status = MigrationStatus.COMPLETED
        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix=f"migrate-{kind.value}") as pool:
                while not stop.is_set():
                    with self.ctx.db.read() as conn:
                        batch = rows.pending_after(
                            conn, kind.value, target.value, after=after, limit=BATCH
                        )
                    if not batch:
                        break
                    # a few objects at a time: S3 is latency-bound, and a pause waits for
                    # at most one group
                    for start in range(0, len(batch), WORKERS):
                        if stop.is_set():
                            break
                        group = batch[start : start + WORKERS]
                        after = group[-1].key
                        for resource, error in zip(
                            group, pool.map(lambda r: self._try_move(config, r), group), strict=True
                        ):
                            if error is None:
                                consecutive = 0
                                continue
                            failed += 1
                            consecutive += 1
                            last_error = f"{resource.key}: {error}"
                            log.warning("migration of %s: %s", kind.value, last_error)
                        if self._record(kind, target, MigrationStatus.RUNNING, failed, last_error):
                            stop.set()  # paused through another controller
                        if consecutive >= MAX_CONSECUTIVE_FAILURES:
                            stop.set()
                            status = MigrationStatus.FAILED
            if stop.is_set() and status is MigrationStatus.COMPLETED:
                status = MigrationStatus.PAUSED
        except Exception as exc:  # the thread must always leave a final status behind
            log.exception("migration of %s stopped", kind.value)
            status, last_error = MigrationStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if status is MigrationStatus.COMPLETED and failed:
            status = MigrationStatus.FAILED
        self._record(kind, target, status, failed, last_error, final=True)

    def _try_move(self, config: KindConfig, resource: ResourceRow) -> str | None:
        try:
            with self.storage.locks.hold(config.kind, resource.key):
                self._move(config, resource.key)
        except (BackendFailure, NotFound) as exc:
            return exc.message
        except RuleViolation as exc:  # busy: another writer held it too long
            return exc.message
        return None

    def _move(self, config: KindConfig, key: str) -> None:
        """Move one resource; the caller holds its lock, so the row read here stays true."""
        target = config.backend
        with self.ctx.db.read() as conn:
            resource = rows.resource(conn, config.kind.value, key)
        if resource is None:
            return  # deleted since the batch was read: nothing to move, nothing copied
        if resource.backend != target.value:
            source = BackendType(resource.backend)
            reader = ChunkReader(self.storage.backend(config, source).open(resource.key))
            destination = self.storage.backend(config, target)
            destination.put(
                resource.key, reader, size=resource.size, content_type=resource.content_type
            )
            copied = ""
            if reader.hasher.hexdigest() == resource.sha256:
                copied, _ = digest(destination.open(resource.key))
            if copied != resource.sha256:  # the unverified copy goes; the original stays
                destination.delete(resource.key)
                where = (
                    f"the new copy in {target.label}" if copied else f"its copy in {source.label}"
                )
                raise _mismatch(resource, where)
            with self.ctx.db.write() as conn:
                moved = rows.mark_moved(
                    conn,
                    kind=resource.kind,
                    key=resource.key,
                    source=source.value,
                    target=target.value,
                    sha256=resource.sha256,
                    now=self.ctx.clock(),
                )
                current = rows.resource(conn, resource.kind, resource.key)
            if not moved or current is None:  # not under our lock (another process)
                if current is None or current.backend != target.value:
                    destination.delete(resource.key)  # no orphan copy left behind
                return
            resource = current
        self.storage.drop_stale(config, resource)

    def _record(
        self,
        kind: ResourceKind,
        target: BackendType,
        status: MigrationStatus,
        failed: int,
        last_error: str | None,
        *,
        final: bool = False,
    ) -> bool:
        """Write the progress; True when a pause was asked through another controller (the
        row says paused while this worker runs): the status stays paused."""
        now = self.ctx.clock()
        paused_elsewhere = False
        with self.ctx.db.write() as conn:
            if not final:  # locked: a pause committed meanwhile is read, not overwritten
                current = rows.migration(conn, kind.value, for_update=True)
                if current is not None and current["status"] == MigrationStatus.PAUSED.value:
                    paused_elsewhere, status = True, MigrationStatus.PAUSED
            total, done, bytes_total, bytes_done = rows.progress_counts(
                conn, kind.value, target.value
            )
            rows.save_migration(
                conn,
                kind.value,
                status=status.value,
                total=total,
                done=done,
                failed=failed,
                bytes_total=bytes_total,
                bytes_done=bytes_done,
                last_error=last_error,
                updated_at=now,
                finished_at=now if final else None,
            )
            if final:
                events.append(
                    conn,
                    at=now,
                    actor=CONTROLLER_ACTOR,
                    node_id=None,
                    operation="migrate-storage",
                    reason=f"storage of {kind.value}: migration to {target.label} {status.value}, "
                    f"{done} of {total} resources there"
                    + (f", {failed} failed: {last_error}" if failed else ""),
                )
        return paused_elsewhere


def _lock_key(kind: ResourceKind) -> int:
    """The kind's advisory lock (services/cluster.py): one migration per kind in a cluster."""
    return cluster.storage_migration_key(list(ResourceKind).index(kind))


def _mismatch(resource: ResourceRow, what: str) -> BackendFailure:
    return BackendFailure(
        FailureReason.CHECKSUM_MISMATCH,
        f"The sha256 of {what} of {resource.kind} resource {resource.key} differs from the "
        f"recorded {resource.sha256}; it was not moved and the original is kept.",
    )
