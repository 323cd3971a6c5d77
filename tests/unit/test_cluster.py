"""Several controllers on one PostgreSQL (services/cluster.py): the duty locks, the node-change
notifications (sent only when the transaction commits), the channel announcements, and the
connectivity every controller derives from them. On SQLite everything is this process's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import databases
from voipcloud.domain.errors import DatabaseUnavailable
from voipcloud.services import cluster
from voipcloud.services.cluster import Cluster, Duties, Duty, MigrationLock
from voipcloud.services.presence import Connectivity, Presence
from voipcloud.store.database import NODES_CHANNEL, Database, node_payloads

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def pg_url(postgres_template: str) -> Iterator[str]:
    name = databases.create_database(template=postgres_template)
    yield databases.url_for(name)
    databases.drop_database(name)


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[Database, Database]]:
    """Two controllers' databases: the same PostgreSQL database, two engines."""
    a, b = Database(pg_url), Database(pg_url)
    yield a, b
    a.dispose()
    b.dispose()


def test_on_sqlite_every_duty_is_this_process_and_nothing_is_shared(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the SQLite case")
    db = Database(database_url)
    duties = Duties(db)
    assert not duties.enabled
    assert all(duties.leads(duty) for duty in Duty)
    assert not cluster.held_anywhere(db, Duty.EXPIRE_OPERATIONS)
    lock = MigrationLock(db, cluster.storage_migration_key(0))
    assert lock.acquire()
    assert MigrationLock(db, cluster.storage_migration_key(0)).acquire()
    lock.release()
    db.dispose()


@pytest.mark.postgres
def test_one_controller_holds_a_duty_until_it_gives_it_up(two: tuple[Database, Database]) -> None:
    a, b = Duties(two[0]), Duties(two[1])
    assert a.leads(Duty.EXPIRE_OPERATIONS)
    assert not b.leads(Duty.EXPIRE_OPERATIONS)
    assert b.leads(Duty.WEBHOOKS)  # another duty: the other controller may take it
    assert not a.leads(Duty.WEBHOOKS)
    for _ in range(3):  # sticky: asked again, the holder keeps it and the other does not get it
        assert a.leads(Duty.EXPIRE_OPERATIONS)
        assert not b.leads(Duty.EXPIRE_OPERATIONS)
    assert cluster.held_anywhere(two[0], Duty.EXPIRE_OPERATIONS)
    a.close()  # shutdown: given up at once
    assert b.leads(Duty.EXPIRE_OPERATIONS)
    assert b.held() == {Duty.EXPIRE_OPERATIONS, Duty.WEBHOOKS}
    b.close()
    assert not cluster.held_anywhere(two[0], Duty.EXPIRE_OPERATIONS)


@pytest.mark.postgres
def test_a_holder_whose_session_dies_loses_its_duties_to_the_other(
    two: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "LIVENESS_CHECK_SECONDS", 0.0)  # check the session every time
    a, b = Duties(two[0]), Duties(two[1])
    assert a.leads(Duty.AGENT_WATCH)
    assert not b.leads(Duty.AGENT_WATCH)
    # the holder's session is killed (like its process); only in this test's database: the
    # same duty's lock of another database (another test, a benchmark) is none of its business.
    # pg_terminate_backend answers once the signal is sent; with a timeout it waits (up to 10 s)
    # until the session has ended and its locks are released
    with two[1].engine.connect() as conn:
        killed = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks "
            "WHERE locktype = 'advisory' AND objid = %s AND classid::bigint = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (int(Duty.AGENT_WATCH), cluster.LOCK_SPACE),
        ).all()
        conn.commit()
    assert killed == [(True,)]
    assert b.leads(Duty.AGENT_WATCH)  # the other takes it
    with pytest.raises(DatabaseUnavailable):
        a.leads(Duty.AGENT_WATCH)  # the old holder notices before doing the duty again
    assert not a.leads(Duty.AGENT_WATCH)  # and does not get it back
    assert a.held() == frozenset()
    a.close()
    b.close()


@pytest.mark.postgres
def test_a_storage_migration_lock_is_held_by_one_controller(
    two: tuple[Database, Database],
) -> None:
    key = cluster.storage_migration_key(1)
    first, second = MigrationLock(two[0], key), MigrationLock(two[1], key)
    assert first.acquire()
    assert cluster.held_anywhere(two[1], key)
    assert not cluster.held_anywhere(two[1], cluster.storage_migration_key(0))
    assert not second.acquire()
    first.release()
    assert not cluster.held_anywhere(two[1], key)
    assert second.acquire()
    second.release()


def _listen(url: str) -> psycopg.Connection:
    conn = psycopg.connect(cluster.libpq_url(url), autocommit=True)
    conn.execute(f"LISTEN {NODES_CHANNEL}")
    return conn


def _received(conn: psycopg.Connection, wait: float = 1.0) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=wait, stop_after=None)]


@pytest.mark.postgres
def test_node_changes_are_announced_only_when_the_transaction_commits(pg_url: str) -> None:
    db = Database(pg_url)
    listener = _listen(pg_url)
    try:
        with db.write() as conn:
            db.mark_changed(conn, 7)
            db.mark_changed(conn, 3)
        assert _received(listener) == [f"{db.instance}:3,7"]
        with pytest.raises(RuntimeError):
            _change_then_fail(db, 9)
        assert _received(listener, 0.5) == []  # a rolled-back change is never announced
        with db.write() as conn:  # a write that changes no node says nothing
            conn.exec_driver_sql("SELECT 1")
        assert _received(listener, 0.5) == []
    finally:
        listener.close()
        db.dispose()


def _change_then_fail(db: Database, node_id: int) -> None:
    with db.write() as conn:
        db.mark_changed(conn, node_id)
        raise RuntimeError("rolled back")


def test_payloads_stay_under_postgresql_limit_and_carry_every_id() -> None:
    ids = set(range(1, 20_001))
    payloads = node_payloads("abc", ids)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    got: set[int] = set()
    for payload in payloads:
        parsed = cluster.parse_nodes(payload)
        assert parsed is not None
        assert parsed[0] == "abc"
        got |= parsed[1]
    assert got == ids
    agents = cluster.agent_payloads("abc", "closed", ids)
    assert all(len(p.encode()) < 8000 for p in agents)
    assert {i for p in agents for i in (cluster.parse_agents(p) or ("", "", set()))[2]} == ids
    assert cluster.parse_agents("abc:gone:1") is None
    assert cluster.parse_health("abc:1:{not json") is None
    assert cluster.parse_health('abc:x:{"sip":["healthy",null]}') is None
    assert cluster.parse_nodes("abc:1,x") is None


@pytest.mark.postgres
def test_two_cluster_links_hear_each_other_and_not_themselves(
    two: tuple[Database, Database],
) -> None:
    heard: dict[str, list[tuple[object, ...]]] = {"a": [], "b": []}

    def link(db: Database, name: str) -> Cluster:
        return Cluster(
            db,
            on_nodes=lambda ids: heard[name].append(("nodes", frozenset(ids))),
            on_agents=lambda sender, kind, ids: heard[name].append((sender, kind, frozenset(ids))),
            local_channels=set,
            on_health=lambda node_id, roles: heard[name].append(("health", node_id, roles)),
        )

    async def scenario() -> None:
        a, b = link(two[0], "a"), link(two[1], "b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        try:
            await asyncio.wait_for(a.connected.wait(), 10)
            await asyncio.wait_for(b.connected.wait(), 10)
            a.announce("open", 5)
            a.announce("open", 6)
            a.announce("closed", 6)  # the last word about a node wins within a batch
            await asyncio.to_thread(_commit_change, two[0], 42)
            await asyncio.to_thread(  # from a worker thread, as the agent channel does
                a.share_health, 5, {"sip": ("unhealthy", "x" * 20_000), "web": ("healthy", None)}
            )
            for _ in range(100):
                if len(heard["b"]) >= 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    me = two[0].instance
    health = [h for h in heard["b"] if h[0] == "health"]
    assert len(health) == 1
    _, node_id, roles = health[0]
    assert node_id == 5
    assert roles["web"] == ("healthy", None)
    assert roles["sip"][0] == "unhealthy"
    assert 0 < len(roles["sip"][1] or "") <= 600  # shortened to fit one notification
    heard["b"] = [h for h in heard["b"] if h[0] != "health"]
    assert sorted(heard["b"], key=str) == sorted(
        [("nodes", frozenset({42})), (me, "open", frozenset({5})), (me, "closed", frozenset({6}))],
        key=str,
    )
    assert heard["a"] == []  # its own notifications are not handed back to it


def _commit_change(db: Database, node_id: int) -> None:
    with db.write() as conn:
        db.mark_changed(conn, node_id)


def _presence(clustered: bool) -> Presence:
    presence = Presence(heartbeat_interval=10, missed_beats=3)
    presence.clustered = clustered
    return presence


def test_single_controller_connectivity_is_unchanged() -> None:
    """SQLite: an agent is connected only while its channel is open here."""
    presence = _presence(False)
    fresh = NOW - timedelta(seconds=5)
    assert presence.state(1, fresh, NOW)[0] is Connectivity.LOST  # no channel here
    presence.remote_open("other", {1})  # (never called on SQLite; ignored anyway)
    assert presence.state(1, fresh, NOW)[0] is Connectivity.LOST
    presence.opened(1, NOW)
    assert presence.state(1, None, NOW)[0] is Connectivity.CONNECTED
    presence.closed(1)
    assert presence.state(1, None, NOW)[0] is Connectivity.LOST
    assert presence.state(2, None, NOW)[0] is Connectivity.NEVER


def test_local_count_follows_opens_and_closes_of_nodes_channels() -> None:
    """What the channel metric reads at every open and close: nodes, not channels (an agent
    that reconnects before its old channel closed counts once), and others' not at all."""
    presence = _presence(True)
    assert presence.local_count() == 0
    presence.opened(1, NOW)
    presence.opened(2, NOW)
    presence.opened(2, NOW)  # node 2's agent reconnected; its old channel is still open
    presence.remote_open("other", {3, 4})
    assert presence.local_count() == 2
    assert presence.local_count() == len(presence.local_channels())
    presence.closed(2)
    assert presence.local_count() == 2
    presence.closed(2)
    presence.closed(1)
    assert presence.local_count() == 0


def test_connectivity_of_an_agent_held_by_another_controller() -> None:
    presence = _presence(True)
    fresh, stale = NOW - timedelta(seconds=5), NOW - timedelta(seconds=31)
    # nothing announced (this controller started after the channel opened): the flushed
    # last-seen time decides
    assert presence.state(1, fresh, NOW)[0] is Connectivity.CONNECTED
    assert presence.state(1, stale, NOW)[0] is Connectivity.LOST
    presence.remote_open("b", {1})
    assert presence.state(1, fresh, NOW)[0] is Connectivity.CONNECTED
    assert presence.state(1, stale, NOW)[0] is Connectivity.LOST  # its controller died
    presence.remote_closed("b", {1})
    assert presence.state(1, fresh, NOW)[0] is Connectivity.LOST  # closed: at once
    # moved from b to c; b's late close (it noticed after c announced) does not undo it
    presence.remote_open("c", {1})
    presence.remote_closed("b", {1})
    assert presence.state(1, fresh, NOW)[0] is Connectivity.CONNECTED
    # an agent that joined here (heard here) but whose channel nobody announced is not
    # connected: a join is no channel
    presence.beat(3, NOW)
    assert presence.state(3, NOW, NOW)[0] is Connectivity.LOST
    presence.remote_open("b", {3})  # its channel went to another controller
    assert presence.state(3, NOW, NOW)[0] is Connectivity.CONNECTED
    # a channel that closed here is lost here until another controller announces it
    presence.opened(2, NOW)
    presence.closed(2)
    assert presence.state(2, NOW, NOW)[0] is Connectivity.LOST
    presence.remote_open("b", {2})
    assert presence.state(2, NOW, NOW)[0] is Connectivity.CONNECTED


def test_an_agent_held_elsewhere_is_allowed_its_holders_flush_delay() -> None:
    """Another controller's agent is seen through the last-seen time its holder flushes every
    few seconds: `remote_slack` more age is allowed, never for a channel held here."""
    presence = _presence(True)
    presence.remote_slack = 4.0
    presence.remote_open("b", {1})
    assert presence.state(1, NOW - timedelta(seconds=33), NOW)[0] is Connectivity.CONNECTED
    assert presence.state(1, NOW - timedelta(seconds=35), NOW)[0] is Connectivity.LOST
    presence.opened(2, NOW - timedelta(seconds=33))  # held here: the plain window
    assert presence.state(2, None, NOW)[0] is Connectivity.LOST


def test_presence_tells_its_listeners_of_first_opens_and_last_closes() -> None:
    presence = _presence(True)
    told: list[tuple[str, int]] = []
    presence.listeners.append(lambda kind, node_id: told.append((kind, node_id)))
    presence.opened(1, NOW)
    presence.opened(1, NOW)  # a second channel of the same node (a reconnect overlapping)
    presence.closed(1)
    assert told == [("open", 1)]
    presence.closed(1)
    assert told == [("open", 1), ("closed", 1)]
    assert presence.local_channels() == set()


@pytest.mark.postgres
def test_a_link_lost_and_regained_wakes_its_channels_and_hears_again(
    two: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notifications sent while the listening connection was down are lost: on reconnecting,
    the controller wakes every channel it holds (each sends only what changed) and announces
    them open again."""
    monkeypatch.setattr(cluster, "RECONNECT_CAP", 0.5)
    woken: list[frozenset[int]] = []
    link = Cluster(
        two[0],
        on_nodes=lambda ids: woken.append(frozenset(ids)),
        on_agents=lambda *_: None,
        local_channels=lambda: {77, 78},
    )

    async def scenario() -> None:
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(link.connected.wait(), 10)
            await asyncio.to_thread(_terminate_listeners, two[1])
            for _ in range(200):
                if woken:
                    break
                await asyncio.sleep(0.05)
            await asyncio.wait_for(link.connected.wait(), 10)
            await asyncio.to_thread(_commit_change, two[1], 5)  # another controller's change
            for _ in range(100):
                if len(woken) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert woken[:2] == [frozenset({77, 78}), frozenset({5})]


def _terminate_listeners(db: Database) -> None:
    with db.engine.connect() as conn:
        killed = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).all()
        conn.commit()
    assert killed, "no listening session found"
