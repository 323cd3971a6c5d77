"""The presence flush writes every heartbeat time heard since the last flush in one statement
(PostgreSQL: two arrays; SQLite: a JSON array of pairs), on each database: each node gets its
own time, a node not heard keeps its time, a node deleted meanwhile is skipped, and naive times
are refused rather than stored in the server's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import StatementError

from voipcloud.domain.filters import NodeFilter
from voipcloud.services.controller import Controller
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import node_presence, nodes

ADMIN = "admin:admin"
START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _seen(controller: Controller) -> dict[int, datetime | None]:
    with controller.ctx.db.read() as conn:
        rows = conn.execute(select(node_presence.c.node_id, node_presence.c.last_seen)).all()
    return {row.node_id: row.last_seen for row in rows}


def test_each_node_gets_its_own_time_and_the_others_keep_theirs(services: Controller) -> None:
    made = [
        services.nodes.add(
            hostname=f"flush-{n:03d}", private_ip=f"10.9.{n // 200}.{n % 200 + 1}", actor=ADMIN
        )
        for n in range(300)
    ]
    ids = [node.id for node in made]
    first = {node_id: START + timedelta(seconds=i) for i, node_id in enumerate(ids[:200])}
    with services.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, first)
    seen = _seen(services)
    assert all(seen[i] == first[i] for i in ids[:200])
    assert all(seen[i] is None for i in ids[200:])  # never heard: untouched

    # the second flush: some again (later), one deleted meanwhile, a different zone's time
    gone = ids[5]
    with services.ctx.db.write() as conn:
        conn.execute(delete(nodes).where(nodes.c.id == gone))
    later = {i: START + timedelta(hours=1, seconds=i % 7) for i in ids[:10]}
    later[ids[250]] = datetime(2026, 11, 30, 17, 0, tzinfo=timezone(timedelta(hours=2)))
    with services.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, later)
    seen = _seen(services)
    assert gone not in seen
    assert all(seen[i] == later[i] for i in ids[:10] if i != gone)
    assert all(seen[i] == first[i] for i in ids[10:200])  # not heard this time: kept
    assert seen[ids[250]] == later[ids[250]]
    assert seen[ids[250]] == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # the same instant
    assert all(seen[i] is None for i in ids[200:] if i != ids[250])


def test_an_empty_flush_writes_nothing_and_a_naive_time_is_refused(services: Controller) -> None:
    node = services.nodes.add(hostname="flush-naive", private_ip="10.9.9.9", actor=ADMIN)
    with services.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, {})
    assert _seen(services)[node.id] is None
    with pytest.raises((ValueError, StatementError)), services.ctx.db.write() as conn:
        node_rows.touch_last_seen(conn, {node.id: datetime(2026, 11, 30, 12, 0)})
    assert _seen(services)[node.id] is None


def test_the_flush_stores_times_as_every_other_writer_does(services: Controller) -> None:
    """SQLite keeps times as text, which the last-seen sort compares: the flush's one JSON
    statement writes exactly the text SQLAlchemy writes for the same time (the microseconds
    always, naive UTC), so times from both writers read back equal and sort as the times do."""
    made = [
        services.nodes.add(hostname=f"text-{n}", private_ip=f"10.9.8.{n + 1}", actor=ADMIN)
        for n in range(4)
    ]
    ids = [node.id for node in made]
    times = [
        START,  # no microseconds: still written out
        START + timedelta(microseconds=1),
        datetime(2026, 11, 30, 13, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=1))),
        START + timedelta(microseconds=10),
    ]
    with services.ctx.db.write() as conn:
        for node_id, when in zip(ids[:2], times[:2], strict=True):  # SQLAlchemy's own
            conn.execute(
                update(node_presence)
                .where(node_presence.c.node_id == node_id)
                .values(last_seen=when)
            )
        node_rows.touch_last_seen(conn, dict(zip(ids[2:], times[2:], strict=True)))
    seen = _seen(services)
    assert [seen[i] for i in ids] == times
    with services.ctx.db.read() as conn:
        stored = dict(conn.execute(select(node_presence.c.node_id, text("last_seen"))).all())
        page = node_rows.list_page(conn, NodeFilter(sort="-last_seen", limit=10))
    if services.ctx.db.dialect == "sqlite":
        assert [stored[i] for i in ids] == [
            "2026-11-30 12:00:00.000000",
            "2026-11-30 12:00:00.000001",
            "2026-11-30 12:00:00.999999",
            "2026-11-30 12:00:00.000010",
        ]
    listed = [n.id for n in page.items if n.id in ids]
    assert listed == [ids[2], ids[3], ids[1], ids[0]]  # latest first, by the times


def test_postgresql_finds_each_flushed_row_by_its_key_and_leaves_the_planner_as_it_was(
    services: Controller,
) -> None:
    """PostgreSQL: a flush of a tenth of the presence rows reaches each through the primary
    key, not by hashing the whole table (which its planner chose: 44.6 against 36.4 ms at
    50,000 nodes); the join settings are back to the server's afterwards, for the rest of the
    transaction."""
    if services.ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner")
    with services.ctx.db.write() as conn:
        conn.execute(
            insert(nodes),
            [
                {
                    "hostname": f"key-{n:05d}.example.net",
                    "private_ip": f"10.8.{n // 250}.{n % 250 + 1}",
                    "status": "Online",
                    "is_controller": False,
                    "config_generation": 0,
                    "created_at": START,
                    "updated_at": START,
                    "row_version": 1,
                }
                for n in range(5_000)
            ],
        )
        conn.exec_driver_sql("ANALYZE node_presence")
    with services.ctx.db.read() as conn:
        ids = sorted(conn.execute(select(node_presence.c.node_id)).scalars())[::10]
    scans = text(
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'node_presence'"
    )
    with services.ctx.db.write() as conn:
        before = conn.execute(scans).one()
        node_rows.touch_last_seen(conn, dict.fromkeys(ids, START))
        after = conn.execute(scans).one()
        settings = conn.execute(
            text("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
        ).one()
    assert after.seq_scan - before.seq_scan == 0, (before, after)  # no hash of every row
    assert after.idx_scan - before.idx_scan >= len(ids), (before, after)  # a key look-up a row
    assert tuple(settings) == ("on", "on")
    assert all(_seen(services)[i] == START for i in ids)
