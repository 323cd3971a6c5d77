"""A storage migration with two controllers on one PostgreSQL (issue 15): it runs on the
controller it was started on; the other shows it running (not interrupted), refuses a second
start of the same kind (409 naming the rule), and can pause it — also when the pause commits
while the worker writes its progress (the worker once wrote "running" back over it)."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import login, make_settings
from tests.integration.test_storage_api import ok, s3_config, unique_bucket
from tests.integration.test_storage_migration import wait_migration
from tests.support import databases
from tests.support.moto import MotoServer, moto_server
from tests.support.processes import wait_for
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.domain.storage import BackendType, KindConfig, ResourceKind
from voipcloud.services import cluster
from voipcloud.services.context import Context
from voipcloud.services.controller import Controller
from voipcloud.services.secrets_box import SecretBox
from voipcloud.services.storage_migration import MigrationStatus, StorageMigrations
from voipcloud.services.storage_migration import _lock_key as migration_key
from voipcloud.store import storage as storage_rows
from voipcloud.store.database import Database

pytestmark = pytest.mark.postgres
BASE = "/api/v1/storage/recordings"
OBJECTS = 200
MOVE_DELAY = 0.04  # per object
GATE_AFTER = 20  # moves before the rest wait for the pause to be asked


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path / "moto") as server:
        yield server


def test_a_migration_runs_on_one_controller_and_the_other_sees_and_pauses_it(
    tmp_path: Path, postgres_template: str, moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 on loopback is fast enough to finish 200 objects before the other controller's pause
    # arrives on a loaded machine (even at 40 ms a move: four move at once, so 2 s); past the
    # first GATE_AFTER moves, each waits up to 0.5 s more until the pause has been asked for
    # (the rest would take 22 s), so the test is about the pause whatever the machine's load
    move = StorageMigrations._move
    moves = itertools.count(1)
    pause_asked = threading.Event()

    def slow_move(self: StorageMigrations, config: KindConfig, key: str) -> None:
        time.sleep(MOVE_DELAY)
        if next(moves) > GATE_AFTER:  # slower still until the pause is asked (0.5 s at
            pause_asked.wait(timeout=0.5)  # most: the worker may hold a lock the pause needs)
        move(self, config, key)

    monkeypatch.setattr(StorageMigrations, "_move", slow_move)
    name = databases.create_database(template=postgres_template)
    url = databases.url_for(name)
    try:
        settings_a = make_settings(tmp_path / "a", url)
        with serve_in_thread(create_app(settings_a)) as base_a:
            a = login(base_a)
            settings_b = make_settings(tmp_path / "b", url)
            settings_b.data_dir.mkdir(parents=True)
            shutil.copy2(settings_a.data_dir / "secret.key", settings_b.data_dir / "secret.key")
            with serve_in_thread(create_app(settings_b)) as base_b:
                b = login(base_b)
                for i in range(OBJECTS):
                    key = f"{i % 10}/call-{i:04d}.wav"
                    ok(a.put(f"{BASE}/resources/{key}", content=os.urandom(2048)))
                bucket = unique_bucket(moto, "cluster")
                ok(a.put("/api/v1/storage", json={"recordings": s3_config(moto, bucket)}))

                ok(a.post(f"{BASE}/migration"), 202)
                wait_migration(a, lambda p: p["done"] >= 1)
                seen = ok(b.get(f"{BASE}/migration"))
                assert seen["status"] == "running", seen  # not "interrupted" on B
                refused = b.post(f"{BASE}/migration")
                assert refused.status_code == 409, refused.text
                assert refused.json()["rule"] == "storage-migration-running"

                paused = ok(b.post(f"{BASE}/migration/pause"))
                pause_asked.set()
                assert paused["status"] == "paused", paused
                assert paused["done"] < paused["total"] == OBJECTS
                later = wait_migration(a, lambda p: p["status"] == "paused")
                assert later["done"] == ok(a.get(f"{BASE}/migration"))["done"]  # it stopped

                ok(a.post(f"{BASE}/migration"), 202)  # resumed where its files are
                done = wait_migration(b, lambda p: p["status"] == "completed", timeout=180)
                assert done["done"] == done["total"] == OBJECTS
                b.close()
            a.close()
    finally:
        pause_asked.set()  # a failure before the pause leaves no move waiting
        databases.drop_database(name)


def _controllers(url: str, tmp_path: Path) -> tuple[Controller, Controller]:
    box = SecretBox.in_data_dir(tmp_path / "data")
    a = Controller.build(Context(db=Database(url), box=box))
    a.bootstrap(admin_password="x" * 12)
    return a, Controller.build(Context(db=Database(url), box=box))


@pytest.mark.parametrize("moment", ["while the worker writes", "before the worker writes"])
def test_a_pause_through_another_controller_is_never_written_over(
    tmp_path: Path, postgres_template: str, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """B pauses a migration that A's worker runs. Whenever B's pause commits, A's worker
    reads it at its next progress write and stops; the row stays paused."""
    name = databases.create_database(template=postgres_template)
    url = databases.url_for(name)
    a, b = _controllers(url, tmp_path)
    kind, target = ResourceKind.RECORDINGS, BackendType.S3
    a.storage.migrations._save_started(
        kind, BackendType.LOCAL, target, "admin", a.storage.migrations.ctx.clock()
    )
    worker_lock = cluster.MigrationLock(a.storage.migrations.ctx.db, migration_key(kind))
    assert worker_lock.acquire()  # as A's worker holds it: B's pause asks through the row
    pausing = threading.Thread(target=b.storage.migrations.pause, args=(kind,), daemon=True)
    counts = storage_rows.progress_counts

    def pause_meanwhile(*args: object, **kwargs: object) -> tuple[int, int, int, int]:
        # inside A's progress write, after it read the status: B pauses now; B's UPDATE
        # either commits at once (nothing stops it) or waits for A's transaction
        pausing.start()
        time.sleep(1.0)
        found: tuple[int, int, int, int] = counts(*args, **kwargs)
        return found

    try:
        if moment == "while the worker writes":
            monkeypatch.setattr(storage_rows, "progress_counts", pause_meanwhile)
        else:
            pausing.start()
            wait_for_status(a, kind, "paused")
        a.storage.migrations._record(kind, target, MigrationStatus.RUNNING, 0, None)
        monkeypatch.setattr(storage_rows, "progress_counts", counts)
        wait_for_status(a, kind, "paused")
        # the worker's next progress write reads the pause, and says so (it stops there)
        assert a.storage.migrations._record(kind, target, MigrationStatus.RUNNING, 0, None)
        assert status_of(a, kind) == "paused"
    finally:
        worker_lock.release()
        if pausing.ident is not None:  # started
            pausing.join(timeout=30)
        for controller in (a, b):
            controller.storage.migrations.ctx.db.dispose()
        databases.drop_database(name)


def status_of(controller: Controller, kind: ResourceKind) -> str:
    with controller.storage.migrations.ctx.db.read() as conn:
        row = storage_rows.migration(conn, kind.value)
    assert row is not None
    return str(row["status"])


def wait_for_status(controller: Controller, kind: ResourceKind, status: str) -> None:
    wait_for(
        lambda: status_of(controller, kind) == status,
        timeout=10,
        interval=0.05,
        what=f"the migration to become {status}",
    )
