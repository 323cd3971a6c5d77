"""The Node Listing's indexed search and totals (migration 0008) answer exactly what the plain
definition answers, on SQLite and PostgreSQL.

The definition, as the listing has always applied it: `q` (stripped, lowered) finds a node when
it is a substring of the hostname, a prefix of the private or public IP, or (ASCII digits, at
most 9) its NodeID; Deleted nodes only with status=Deleted. A brute-force Python filter over a
few hundred nodes is compared with the store's answer (ids and total) for tricky queries:
LIKE and GLOB wildcards, FTS5 syntax, quotes, non-ASCII text that folds to ASCII, 1 and 2
characters (below the trigram), IPv6, and substrings drawn from the data.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from tests.integration.infrastructure_helpers import API, Infra, running_infra
from voipcloud.domain import policy
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.numbers import is_whole
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store import maintenance as maintenance_rows
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database
from voipcloud.store.tables import node_counts, nodes, role_assignments

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STATUSES = list(NodeStatus)
TRICKY = [
    "%", "_", "%%", "a_b", "a%b", "sip_", "_ip", "\\", "/", "//", "'", '"', '"sip"', "sip\"",
    "*", "?", "[", "[s]ip", "s*p", "sip*", "10.*", "NEAR", "sip OR pbx", "sip AND", "-sip",
    "^sip", "sip:", "hostname:sip", "{hostname}", "(", ")", "é", "ſip", "\u212aam",  # Kelvin sign
    "İ", "ß", "straße", "日本", "sïp", "SIP", "Sip-0", "FE80", "fe80::", "2001:DB8", "2001:db8::a",
    "::", ":", ".", "..", "-", "--", "xn--", "1", "2", "12", "0", "00", "007", "10.", "10.0.",
    "10.0.1", "203.0.113.", "192.168.", "1000000000", "999999999", "42", "³", "１２", "e", "ex",
    "exa", "example", "ample.ne", ".example.net", "sip-00", "a" * 40,
    "fe80::23%", "fe80::23%eth1", "fe80::46%ETH", "%eth0", "eth0", "fe80::23%eth0",
]  # fmt: skip


@dataclass
class Row:
    id: int
    hostname: str
    private_ip: str
    public_ip: str | None
    status: str
    roles: tuple[str, ...]


def matches(row: Row, q: str) -> bool:
    q = q.lower()
    return (
        q in row.hostname
        or row.private_ip.startswith(q)
        or (row.public_ip is not None and row.public_ip.startswith(q))
        or (is_whole(q, max_digits=9) and int(q) == row.id)
    )


def expected(rows: list[Row], flt: NodeFilter) -> list[int]:
    found = []
    for row in rows:
        if flt.status is None and row.status == NodeStatus.DELETED.value:
            continue
        if flt.status is not None and row.status != flt.status.value:
            continue
        if flt.role and flt.role not in row.roles:
            continue
        if flt.q and not matches(row, flt.q):
            continue
        found.append(row.id)
    return sorted(found)


@pytest.fixture
def fleet(database_url: str) -> Iterator[tuple[Database, list[Row]]]:
    """A few hundred nodes, as the validators store them (lower case hostnames and IPs)."""
    db = Database(database_url)
    chance = random.Random(15)
    labels = ["sip", "pbx", "web", "db", "xn--bcher-kva", "a-b", "node", "edge-1", "s1p"]
    sites = ["example.net", "fra1.example.com", "ams", "lab"]
    rows: list[Row] = []
    with db.write() as conn:
        for number in range(320):
            hostname = f"{chance.choice(labels)}-{number:05d}.{chance.choice(sites)}"
            if number % 35 == 0:  # a scoped address: its zone may hold any character
                private_ip = f"fe80::{number:x}%eth{number % 2}"
            elif number % 5 == 0:
                private_ip = f"fe80::{number:x}"
            else:
                private_ip = f"10.{number % 3}.{number // 256}.{number % 256}"
            public_ip = None if number % 4 == 0 else f"203.0.113.{number % 200}"
            if number % 9 == 0:
                public_ip = f"2001:db8::{number:x}"
            node_id = node_rows.insert_node(
                conn,
                hostname=hostname,
                private_ip=private_ip,
                public_ip=public_ip,
                container_id=None,
                is_controller=False,
                now=NOW,
            )
            status = STATUSES[number % len(STATUSES)].value
            conn.execute(update(nodes).where(nodes.c.id == node_id).values(status=status))
            roles = (("sip",), ("pbx", "que"), ())[number % 3]
            for role in roles:
                conn.execute(
                    insert(role_assignments).values(
                        node_id=node_id, role=role, parameters={}, created_at=NOW, updated_at=NOW
                    )
                )
            rows.append(Row(node_id, hostname, private_ip, public_ip, status, roles))
        # a renamed node: the FTS index follows an UPDATE of the hostname
        renamed = rows[3]
        conn.execute(update(nodes).where(nodes.c.id == renamed.id).values(hostname="renamed-x"))
        rows[3] = dataclasses.replace(renamed, hostname="renamed-x")
    try:
        yield db, rows
    finally:
        db.dispose()


def queries(rows: list[Row]) -> list[str]:
    chance = random.Random(16)
    drawn = []
    for row in chance.sample(rows, 40):
        start = chance.randrange(len(row.hostname))
        drawn.append(row.hostname[start : start + chance.randint(1, 12)])
        drawn.append(row.private_ip[: chance.randint(1, len(row.private_ip))])
        drawn.append(str(row.id))
    drawn.append("renamed")
    drawn.append(rows[3].hostname)
    return TRICKY + drawn


def test_indexed_search_answers_like_the_definition(fleet: tuple[Database, list[Row]]) -> None:
    db, rows = fleet
    wrong = []
    with db.read() as conn:
        for q in queries(rows):
            for status in (None, "Deleted", "Online"):
                flt = NodeFilter.parse(q=q, status=status, limit=500)
                page = node_rows.list_page(conn, flt)
                want = expected(rows, flt)
                got = sorted(n.id for n in page.items)
                if got != want or page.total != len(want):
                    wrong.append((q, status, len(want), len(got), page.total))
    assert wrong == [], wrong[:25]
    # the comparison is not vacuous: short and long queries find nodes, wildcards find none
    assert expected(rows, NodeFilter.parse(q="sip", limit=500))
    assert expected(rows, NodeFilter.parse(q="1", limit=500))
    assert expected(rows, NodeFilter.parse(q="fe80::", limit=500))
    assert not expected(rows, NodeFilter.parse(q="%", limit=500))


def test_search_with_role_sort_and_paging(fleet: tuple[Database, list[Row]]) -> None:
    db, rows = fleet
    by_id = {row.id: row for row in rows}
    with db.read() as conn:
        for q, role in (("sip", "sip"), ("10.1", "que"), ("ex", None), ("7", "pbx")):
            flt = NodeFilter.parse(q=q, role=role, sort="-hostname", limit=7, offset=3)
            page = node_rows.list_page(conn, flt)
            want = sorted(expected(rows, flt), key=lambda i: (by_id[i].hostname, i))
            want = list(reversed(want))[3:10]  # descending: ties by NodeID descending too
            assert [n.id for n in page.items] == want, q
            assert page.total == len(expected(rows, flt))


def test_search_sees_a_changed_hostname_and_status_at_once(
    fleet: tuple[Database, list[Row]],
) -> None:
    db, rows = fleet
    target = rows[10]
    with db.write() as conn:
        conn.execute(
            update(nodes)
            .where(nodes.c.id == target.id)
            .values(hostname="zz-moved.example", status="Deleted")
        )
    with db.read() as conn:
        assert node_rows.list_page(conn, NodeFilter.parse(q="zz-mov")).total == 0
        deleted = node_rows.list_page(conn, NodeFilter.parse(q="zz-mov", status="Deleted"))
        assert [n.id for n in deleted.items] == [target.id]
        old = target.hostname[:9]
        still = expected([r for r in rows if r.id != target.id], NodeFilter.parse(q=old))
        assert [n.id for n in node_rows.list_page(conn, NodeFilter.parse(q=old)).items] == still
        # 2 characters: the pairs (migration 0018) follow the new name, and forget the old one
        for q in ("zz", "z-"):
            moved = node_rows.list_page(conn, NodeFilter.parse(q=q, status="Deleted"))
            assert [n.id for n in moved.items] == [target.id], q
        pair = target.hostname[1:3]  # of the old name: found where other names hold it
        others = [r for r in rows if r.id != target.id]
        flt = NodeFilter.parse(q=pair, status="Deleted", limit=500)
        assert [n.id for n in node_rows.list_page(conn, flt).items] == expected(others, flt)
    if db.dialect == "sqlite":  # the row itself deleted: its pairs with it (a trigger)
        kept = text("SELECT count(*) FROM node_pairs WHERE node_id = :id")
        with db.write() as conn:
            assert conn.execute(kept, {"id": target.id}).scalar_one() == 15  # zz-moved.example
            conn.execute(delete(nodes).where(nodes.c.id == target.id))
            assert conn.execute(kept, {"id": target.id}).scalar_one() == 0


@pytest.fixture
def infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    with running_infra(tmp_path, database_url) as running:
        yield running


def totals(infra: Infra) -> dict[str | None, int]:
    """The listing's total (API), unfiltered and for each status."""
    found: dict[str | None, int] = {}
    for status in [None, *(s.value for s in NodeStatus)]:
        params = {"limit": 1} | ({"status": status} if status else {})
        answer = infra.client.get(f"{API}/nodes", params=params)
        assert answer.status_code == 200, answer.text
        found[status] = answer.json()["total"]
    return found


def counted(infra: Infra) -> dict[str | None, int]:
    """The same totals, counted row by row."""
    with infra.controller.ctx.db.read() as conn:
        statuses = list(conn.execute(select(nodes.c.status)).scalars())
    found: dict[str | None, int] = {None: sum(s != NodeStatus.DELETED.value for s in statuses)}
    for status in NodeStatus:
        found[status.value] = statuses.count(status.value)
    return found


def test_totals_exact_right_after_each_write(infra: Infra) -> None:
    """Create, status change, delete: the listing's total is exact on the very next request."""
    before = totals(infra)
    assert before == counted(infra)
    created = [infra.add_node(f"count-{number}", role="que") for number in range(3)]
    after_create = totals(infra)
    assert after_create[None] == before[None] + 3
    assert after_create["Offline"] == before["Offline"] + 3
    assert after_create == counted(infra)

    infra.bring_online(created[0])  # Offline -> Online, with the agent's report
    after_change = totals(infra)
    assert after_change["Online"] == before["Online"] + 1
    assert after_change["Offline"] == before["Offline"] + 2
    assert after_change[None] == before[None] + 3
    assert after_change == counted(infra)

    deleted = infra.client.delete(f"{API}/nodes/{created[1]}")
    assert deleted.status_code in (200, 204), deleted.text
    after_delete = totals(infra)
    assert after_delete[None] == before[None] + 2
    assert after_delete["Deleted"] == before["Deleted"] + 1
    assert after_delete["Offline"] == before["Offline"] + 1
    assert after_delete == counted(infra)
    # a search's total is counted through the indexes, and agrees
    searched = infra.client.get(f"{API}/nodes", params={"q": "count-", "limit": 1}).json()
    assert searched["total"] == 2


def test_counts_survive_many_changes_and_folding(database_url: str) -> None:
    """More changes than one fold (1,024), in several transactions and one with many rows:
    the totals stay exact and the counts table stays small."""
    db = Database(database_url)
    try:
        ids = []
        with db.write() as conn:
            for number in range(700):
                ids.append(
                    node_rows.insert_node(
                        conn,
                        hostname=f"fold-{number}",
                        private_ip=f"10.8.{number // 256}.{number % 256}",
                        public_ip=None,
                        container_id=None,
                        is_controller=False,
                        now=NOW,
                    )
                )
        for chunk in range(0, 700, 100):
            with db.write() as conn:
                for node_id in ids[chunk : chunk + 100]:
                    status = STATUSES[node_id % len(STATUSES)].value
                    conn.execute(update(nodes).where(nodes.c.id == node_id).values(status=status))
        with db.write() as conn:
            conn.execute(nodes.delete().where(nodes.c.id.in_(ids[:50])))
        with db.read() as conn:
            for status in [None, *NodeStatus]:
                flt = NodeFilter(status=status, limit=1)
                if status is None:
                    where = [nodes.c.status != NodeStatus.DELETED.value]
                else:
                    where = [nodes.c.status == status.value]
                plain = conn.execute(
                    nodes.select().with_only_columns(nodes.c.id).where(*where)
                ).all()
                assert node_rows.list_page(conn, flt).total == len(plain), status
            kept = len(conn.execute(node_counts.select()).all())
        assert kept < 1024 + 2 * len(STATUSES)
    finally:
        db.dispose()


def test_the_controllers_facts_name_five_and_count_the_rest(
    fleet: tuple[Database, list[Row]],
) -> None:
    """The Wizard's refusal and Administrative Remove's warning read the first five other live
    nodes and a count (not every node): the same names and numbers as the whole list gives."""
    db, rows = fleet
    live = [r for r in rows if r.status != NodeStatus.DELETED.value]
    for besides in (live[0], next(r for r in rows if r.status == NodeStatus.DELETED.value)):
        for role in (None, "sip", "que"):
            others = [r for r in live if r.id != besides.id and (role is None or role in r.roles)]
            with db.read() as conn:
                names, count = node_rows.other_live(conn, besides=besides.id, role=role, first=5)
            assert names == [(r.hostname, r.status) for r in others[:5]]
            assert count == len(others) > 5
    shown = [f"{r.hostname} ({r.status})" for r in live[1:6]]
    facts = policy.NodeFacts(
        hostname="ic",
        status=NodeStatus.OFFLINE,
        is_controller=True,
        other_live_nodes=tuple(shown),
        other_live_count=len(live) - 1,
    )
    refusal = policy.decide(Operation.WIZARD, facts)
    assert f"{len(live) - 1} other live node(s) exist: {', '.join(shown)} and " in refusal.reason
    assert f"and {len(live) - 6} more." in refusal.reason
    warning = policy.removal_warning("sip", "ic", ("a", "b", "c", "d", "e"), 1234)
    assert "It stays on 1234 other node(s): a, b, c, d, e and 1229 more." in warning


def test_status_counters_without_a_scan_agree_with_the_rows(
    fleet: tuple[Database, list[Row]],
) -> None:
    """The counters above the listing (nodes per status, how many in maintenance) read the kept
    counts and the partial maintenance index: the same numbers as counting the rows."""
    db, rows = fleet
    kept = {rows[1].id, rows[2].id, rows[8].id}
    with db.write() as conn:
        conn.execute(update(nodes).where(nodes.c.id.in_(kept)).values(maintenance_since=NOW))
    with db.read() as conn:
        summary = maintenance_rows.summary(conn)
    found = {c.status.value: (c.nodes, c.in_maintenance) for c in summary.by_status}
    for status in NodeStatus:
        of_status = [r for r in rows if r.status == status.value]
        in_maintenance = sum(r.id in kept for r in of_status)
        assert found[status.value] == (len(of_status), in_maintenance), status
    assert sum(m for _n, m in found.values()) == 3
    assert summary.extension_count == 0  # its own row of the statement, not a status
