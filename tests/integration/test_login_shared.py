"""The login throttle shared by every controller on one database (issue 15): its table logic
on SQLite and PostgreSQL (a clock the test moves), exact counts when processes count at once,
two controllers on one PostgreSQL throttled as one, and 503 (never 500, never an uncounted
attempt let through) while the database is away."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.support import databases
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.services.auth import (
    FORGET_FAILURES_AFTER,
    FREE_ADDRESS_FAILURES,
    FREE_LOGIN_FAILURES,
    MAX_LOGIN_DELAY,
    LoginThrottled,
    SharedLoginLimiter,
)
from voipcloud.store import login_failures
from voipcloud.store.database import Database
from voipcloud.store.tables import login_failures as table

TOKEN = "/api/v1/auth/token"
WRONG = "wrong-Password-Zq93"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        database.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fail(limiter: SharedLoginLimiter, username: str, address: str) -> float:
    """One attempt as check_password makes it: checked, then counted, in one serialized block."""
    with limiter.serialized(address):
        limiter.check(username, address)
        return limiter.failed(username, address)


def rows(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_free_failures_then_doubling_waits_forgotten_after_a_while(db: Database) -> None:
    clock = Clock()
    limiter = SharedLoginLimiter(db, clock=clock)
    for _ in range(FREE_LOGIN_FAILURES):
        assert fail(limiter, "admin", "192.0.2.7") == 0
    waits = []
    for _ in range(8):
        waits.append(fail(limiter, "admin", "192.0.2.7"))
        with pytest.raises(LoginThrottled) as caught:  # during the wait: refused, not counted
            limiter.check("admin", "192.0.2.7")
        assert caught.value.wait_seconds == max(1, round(waits[-1]))
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert max(waits) == MAX_LOGIN_DELAY
    limiter.check("admin", "192.0.2.8")  # another address is never slowed down
    limiter.check("admin", "2001:db8:1:2::9")
    # the same count for an address of the same IPv6 /64
    for _ in range(FREE_LOGIN_FAILURES + 1):
        fail(limiter, "admin", "2001:db8:1:2::1")
    with pytest.raises(LoginThrottled):
        limiter.check("admin", "2001:db8:1:2::ffff")

    clock.advance(FORGET_FAILURES_AFTER + 1)  # forgotten: the count starts again
    assert fail(limiter, "admin", "192.0.2.7") == 0


def test_a_success_clears_its_pair_not_the_address(db: Database) -> None:
    clock = Clock()
    limiter = SharedLoginLimiter(db, clock=clock)
    for _ in range(FREE_LOGIN_FAILURES):
        fail(limiter, "admin", "192.0.2.7")
    with limiter.serialized("192.0.2.7"):
        limiter.succeeded("admin", "192.0.2.7")
    assert fail(limiter, "admin", "192.0.2.7") == 0  # the pair starts again
    # the address still counts every failure, any accounts: 20 free, then the waits
    for number in range(FREE_ADDRESS_FAILURES - FREE_LOGIN_FAILURES - 1):
        assert fail(limiter, f"user{number}", "192.0.2.7") == 0
    assert fail(limiter, "someone", "192.0.2.7") == 1
    with pytest.raises(LoginThrottled):
        limiter.check("nobody-yet", "192.0.2.7")


def test_the_sweep_deletes_forgotten_counts_and_the_surplus(db: Database) -> None:
    clock = Clock()
    limiter = SharedLoginLimiter(db, clock=clock)
    for number in range(3):
        fail(limiter, "admin", f"192.0.2.{number}")
    clock.advance(FORGET_FAILURES_AFTER + 1)
    for number in range(5):
        clock.advance(1)
        fail(limiter, f"user{number}", "198.51.100.1")
    assert rows(db) == 3 * 2 + 5 + 1
    assert limiter.sweep() == 3 * 2  # the forgotten ones
    assert rows(db) == 6
    with db.write() as conn:  # beyond `keep` per kind, the least recently failed go
        gone = login_failures.sweep(
            conn, forget_before=clock() - timedelta(hours=1), keep=2, batch=100
        )
    assert gone == 3
    with db.read() as conn:
        kept = conn.execute(select(table.c.scope, table.c.key).order_by(table.c.key)).all()
    assert kept == [
        ("address", "198.51.100.1"),
        ("pair", "198.51.100.1\nuser3"),
        ("pair", "198.51.100.1\nuser4"),
    ]
    with db.write() as conn:  # bounded: at most `batch` a kind in one sweep
        assert (
            login_failures.sweep(conn, forget_before=clock() - timedelta(hours=1), keep=0, batch=1)
            == 2
        )


def test_failures_counted_at_once_by_two_processes_are_all_counted(database_url: str) -> None:
    """Two Database objects (two pools, as two controllers have) count the same pair from 8
    threads at once: the atomic upsert loses none."""
    first, second = Database(database_url), Database(database_url)
    try:
        limiters = [SharedLoginLimiter(first), SharedLoginLimiter(second)]
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def count(limiter: SharedLoginLimiter) -> None:
            try:
                barrier.wait()
                for _ in range(5):
                    limiter.failed("admin", "203.0.113.9")  # outside serialized: its own txn
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=count, args=(limiters[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        with first.read() as conn:
            counts = dict(conn.execute(select(table.c.scope, table.c.failures)).all())
        assert counts == {"pair": 40, "address": 40}
    finally:
        first.dispose()
        second.dispose()


# --- two controllers on one PostgreSQL ---------------------------------------------------------


def _client(url: str, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=30)


def _login(client: httpx.Client, password: str) -> httpx.Response:
    return client.post(TOKEN, json={"username": "admin", "password": password})


@pytest.fixture
def two_controllers(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Controllers A and B (two apps, each with its own pool and limiter) on one new
    PostgreSQL database; yields (url A, url B, database name)."""
    if not databases.postgres_available():
        pytest.skip("PostgreSQL unreachable")
    name = databases.create_database()
    url = databases.url_for(name)
    try:
        settings_a = make_settings(tmp_path / "a", url)
        with serve_in_thread(create_app(settings_a)) as base_a:
            settings_b = make_settings(tmp_path / "b", url)
            settings_b.data_dir.mkdir(parents=True)
            shutil.copy2(settings_a.data_dir / "secret.key", settings_b.data_dir / "secret.key")
            with serve_in_thread(create_app(settings_b)) as base_b:
                yield base_a, base_b, name
    finally:
        databases.drop_database(name)


@pytest.mark.postgres
def test_failures_through_one_controller_slow_down_the_other(
    two_controllers: tuple[str, str, str],
) -> None:
    base_a, base_b, _name = two_controllers
    with (
        _client(base_a, "127.0.0.21") as via_a,
        _client(base_b, "127.0.0.21") as via_b,
        _client(base_b, "127.0.0.1") as admin_host,
    ):
        # the free failures are counted once across both: alternating A and B, the sixth
        # failure (wherever it lands) sets the first wait
        for attempt in range(FREE_LOGIN_FAILURES):
            answer = _login(via_a if attempt % 2 == 0 else via_b, WRONG)
            assert answer.status_code == 401, answer.text
            assert "before the next" not in answer.json()["detail"]
        sixth = _login(via_b, WRONG)
        assert sixth.status_code == 401, sixth.text
        assert "wait 1 s before the next" in sixth.json()["detail"]
        # through A now: throttled even with the right password, the count was made on B
        answer = _login(via_a, ADMIN_PASSWORD)
        assert answer.status_code == 429, answer.text
        assert answer.json()["rule"] == "login-throttled"
        assert int(answer.headers["Retry-After"]) == 1
        # another address is not slowed down, on either controller
        assert _login(admin_host, ADMIN_PASSWORD).status_code == 200

        # parallel guesses through both controllers: one source is checked one attempt at a
        # time across them, so once the waits begin no two failures slip in together

        time.sleep(1.1)
        answers: list[httpx.Response] = []

        def guess(client: httpx.Client) -> None:
            answers.append(_login(client, WRONG))

        threads = [threading.Thread(target=guess, args=(c,)) for c in (via_a, via_b) * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [401] + [429] * 5, [a.text for a in answers]
        counted = next(a for a in answers if a.status_code == 401)
        assert "wait 2 s before the next" in counted.json()["detail"]


@pytest.mark.postgres
def test_login_answers_503_while_the_database_is_away(
    two_controllers: tuple[str, str, str],
) -> None:
    base_a, _base_b, name = two_controllers
    admin = databases._admin_engine()
    try:
        with _client(base_a, "127.0.0.22") as client:
            assert _login(client, WRONG).status_code == 401
            page = client.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf, page.text
            form = {"username": "admin", "password": WRONG, "csrf_token": csrf[1], "next": "/"}
            with admin.connect() as conn:  # the database refuses every connection
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name"
                    ),
                    {"name": name},
                )
                conn.commit()
            try:
                for password in (WRONG, ADMIN_PASSWORD, WRONG):
                    answer = _login(client, password)
                    assert answer.status_code == 503, answer.text
                web = client.post("/login", data=form, follow_redirects=False)
                assert web.status_code == 503, web.text
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
                    conn.commit()
            # back: the one counted failure is there, nothing was let through meanwhile
            db = Database(databases.url_for(name))
            try:
                with db.read() as conn:
                    counts = dict(conn.execute(select(table.c.scope, table.c.failures)).all())
            finally:
                db.dispose()
            assert counts == {"pair": 1, "address": 1}
            assert _login(client, ADMIN_PASSWORD).status_code == 200
    finally:
        admin.dispose()


def test_a_limiter_without_its_database_refuses(tmp_path: Path) -> None:
    """SQLite file in a directory that is gone: check and failed raise DatabaseUnavailable,
    they never answer 'no wait'."""
    missing = Database(f"sqlite+pysqlite:///{tmp_path / 'gone' / 'voipcloud.sqlite3'}")
    try:
        limiter = SharedLoginLimiter(missing)
        with pytest.raises(DatabaseUnavailable):
            limiter.check("admin", "192.0.2.1")
        with pytest.raises(DatabaseUnavailable):
            limiter.failed("admin", "192.0.2.1")
    finally:
        missing.dispose()
