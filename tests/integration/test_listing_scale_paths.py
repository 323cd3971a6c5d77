"""The Node Listing's paths for large fleets (issue 15, migration 0009) answer what the plain
definition answers, on SQLite and PostgreSQL:

- a filtered total counted up to `COUNT_CAP` and no further: exact below, "more than N" above
  (the store's `Total`, the API's `total_exact`, the web page's wording), while the page's
  rows stay exactly the definition's, in the sort's order, whichever plan reads them (the
  search's indexes, or a walk along the sort key's index when the matches are many);
- 1 and 2 character searches (no trigram) with sorts and paging;
- the role-only and status+role totals from `node_role_counts`, kept by triggers: exact after
  assigning, unassigning, status changes, a node row's delete (its assignments cascade) and
  folding; on PostgreSQL also when a status change and an assignment of the same node race.

The fleet and the brute-force definition are those of test_listing_search.py (320 nodes); the
cap is lowered to 10 here so that the same few hundred nodes take the large-fleet paths.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select, update

from tests.conftest import ADMIN_PASSWORD
from tests.integration.accounts_helpers import web_login
from tests.integration.infrastructure_helpers import API, Infra, running_infra
from tests.integration.test_listing_search import (
    NOW,
    STATUSES,
    TRICKY,
    Row,
    expected,
    fleet,  # noqa: F401 (the fixture)
    queries,
)
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.store import node_search
from voipcloud.store import nodes as node_rows
from voipcloud.store.database import Database
from voipcloud.store.tables import node_role_counts, nodes, role_assignments

CAP = 10
SORTS = ("id", "-id", "hostname", "-hostname", "private_ip", "status", "-last_seen", "created_at")
SHORT = ["1", "2", "0", "e", "x", "-", ".", ":", "12", "00", "ex", "p-", "10", "20", "e8", "1."]


def ordered(rows: list[Row], flt: NodeFilter, seen: dict[int, object]) -> list[int]:
    """The definition's matches in the sort's order (ties by NodeID, in the key's direction)."""
    by_id = {row.id: row for row in rows}
    key = flt.sort.removeprefix("-")

    def sort_key(node_id: int) -> tuple[object, int]:
        row = by_id[node_id]
        value = seen[node_id] if key == "last_seen" else getattr(row, key, node_id)
        if key == "id":
            value = node_id
        return (value, node_id)

    found = sorted(expected(rows, flt), key=sort_key, reverse=flt.sort.startswith("-"))
    return found[flt.offset : flt.offset + flt.limit]


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(node_search, "COUNT_CAP", CAP)
    return CAP


@pytest.fixture
def seen(fleet: tuple[Database, list[Row]]) -> dict[int, object]:  # noqa: F811
    """last_seen values in an order unlike the NodeIDs' (ties too). Never NULL: the two
    databases place NULL at opposite ends, as they always have."""
    db, rows = fleet
    values: dict[int, object] = {}
    with db.write() as conn:
        for row in rows:
            when = NOW.replace(second=(row.id * 7) % 60)
            node_rows.touch_last_seen(conn, {row.id: when})
            values[row.id] = when
    return values


def test_capped_totals_and_pages_answer_like_the_definition(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    capped: int,
) -> None:
    """Every query (tricky, short, drawn from the data) with and without a status: a page of
    500 holds exactly the matches (and so counts them); a first page of 3 holds the first three
    and a total exact up to the cap, "more than" the cap beyond."""
    db, rows = fleet
    wrong = []
    broad = narrow = 0
    with db.read() as conn:
        for q in queries(rows) + SHORT:
            for status in (None, "Deleted", "Online"):
                flt = NodeFilter.parse(q=q, status=status, limit=500)
                page = node_rows.list_page(conn, flt)
                want = expected(rows, flt)
                got = sorted(n.id for n in page.items)
                # a page holding every match counts them; a first page of 3 stops at the cap
                first = node_rows.list_page(conn, NodeFilter.parse(q=q, status=status, limit=3))
                total = (min(len(want), capped), len(want) <= capped)
                if got != want or (page.total, page.total_exact) != (len(want), True):
                    wrong.append((q, status, len(want), len(got), page.total, page.total_exact))
                if (first.total, first.total_exact) != total:
                    wrong.append((q, status, "first", len(want), first.total, first.total_exact))
                if [n.id for n in first.items] != want[:3]:
                    wrong.append((q, status, "first page", want[:3]))
                broad += len(want) > capped
                narrow += 0 < len(want) <= capped
    assert wrong == [], wrong[:25]
    assert broad > 50
    assert narrow > 50


def test_pages_in_sort_order_on_both_paths(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    capped: int,
    seen: dict[int, object],
) -> None:
    """Sorted and paged: the walk along the sort key's index (more than the cap) and the sort
    of the few matches (fewer) give the definition's rows in the definition's order, for long
    and short (1-2 character) searches, with a status and a role."""
    db, rows = fleet
    wrong = []
    cases = [("ex", None, None), ("sip", None, None), ("10.1", None, "que"), ("1", None, None)]
    cases += [("e", "Online", None), ("00", None, "sip"), ("203.0.113.1", None, None)]
    cases += [("fe80::", "Deleted", None), ("xn--", None, None), ("s1p", None, None)]
    with db.read() as conn:
        for q, status, role in cases:
            for sort in SORTS:
                for offset in (0, 3, 12):
                    flt = NodeFilter.parse(
                        q=q, status=status, role=role, sort=sort, limit=7, offset=offset
                    )
                    page = node_rows.list_page(conn, flt)
                    want = ordered(rows, flt, seen)
                    if [n.id for n in page.items] != want:
                        wrong.append((q, status, role, sort, offset))
    assert wrong == [], wrong[:20]
    with db.read() as conn:  # the walk was taken: these match more than the cap
        assert not node_rows.list_page(conn, NodeFilter.parse(q="ex")).total_exact
        assert not node_rows.list_page(conn, NodeFilter.parse(q="1")).total_exact


def test_short_searches_exact_below_the_real_cap(fleet: tuple[Database, list[Row]]) -> None:  # noqa: F811
    """1 and 2 characters (no trigram, no index serves them): exact totals and the matches in
    NodeID order with the real cap, which 320 nodes never reach."""
    db, rows = fleet
    with db.read() as conn:
        for q in SHORT + [t for t in TRICKY if len(t) <= 2]:
            flt = NodeFilter.parse(q=q, limit=500)
            page = node_rows.list_page(conn, flt)
            assert [n.id for n in page.items] == expected(rows, flt), q
            assert (page.total, page.total_exact) == (len(expected(rows, flt)), True), q


@contextmanager
def _statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs from `nodes` run meanwhile, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM nodes" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _sqlite_plans(db: Database, flt: NodeFilter, marker: str) -> tuple[list[Any], list[str]]:
    """SQLite: the page of `flt`, and the query plan of each of its statements holding
    `marker`, steps joined by " / "."""
    with db.read() as conn:
        with _statements(db) as seen:
            page = node_rows.list_page(conn, flt)
        plans = [
            " / ".join(
                str(step[-1])
                for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)
            )
            for sql, parameters in seen
            if marker in sql
        ]
    return page.items, plans


def test_single_characters_read_the_cover_index_on_sqlite(
    fleet: tuple[Database, list[Row]],  # noqa: F811
) -> None:
    """SQLite: a search of 1 character (neither a trigram nor a pair) counts its matches, and
    reads a page of few, through `ix_nodes_search_cover` (~60 bytes a node) rather than the
    ~8 KiB rows; a search with no match reads no page at all. Results are the definition's
    (the test above)."""
    db, rows = fleet
    if db.dialect != "sqlite":
        pytest.skip("SQLite's planner (PostgreSQL's row storage: test_nodes_row_storage.py)")
    for q in ("z", "0", "8"):
        flt = NodeFilter.parse(q=q, sort="created_at")
        items, plans = _sqlite_plans(db, flt, "LIKE")
        matches = expected(rows, flt)
        assert [n.id for n in items] == matches[: flt.limit], q
        assert len(plans) == (2 if matches else 1), (q, plans)  # the count, then the page
        # the count from the index alone; the page's sort key (created_at) from matches' rows
        assert "SCAN nodes USING COVERING INDEX ix_nodes_search_cover" in plans[0], (q, plans)
        assert all("SCAN nodes USING INDEX ix_nodes_search_cover" in p for p in plans[1:]), plans


def test_two_characters_read_the_pairs_on_sqlite(fleet: tuple[Database, list[Row]]) -> None:  # noqa: F811
    """SQLite: a search of 2 characters finds its nodes from the table of the host names'
    pairs (migration 0018) by its primary key, and reads no other node, neither to count
    them nor for the page (PostgreSQL: test_nodes_row_storage.py)."""
    db, rows = fleet
    if db.dialect != "sqlite":
        pytest.skip("SQLite's planner")
    for q in ("zq", "00", "e8", "p-"):
        flt = NodeFilter.parse(q=q, sort="created_at")
        items, plans = _sqlite_plans(db, flt, "node_pairs")
        matches = expected(rows, flt)
        assert [n.id for n in items] == matches[: flt.limit], q
        assert len(plans) == (2 if matches else 1), (q, plans)  # the count, then the page
        for plan in plans:
            assert "SEARCH node_pairs USING PRIMARY KEY (pair=?)" in plan, (q, plan)
            assert "SCAN nodes" not in plan, (q, plan)


def _role_totals(db: Database) -> dict[tuple[str, str | None], int]:
    found = {}
    with db.read() as conn:
        for role in ROLES:
            for status in [None, *NodeStatus]:
                flt = NodeFilter(role=role, status=status, limit=1)
                found[(role, status.value if status else None)] = node_rows.list_page(
                    conn, flt
                ).total
    return found


def _role_rows(db: Database) -> dict[tuple[str, str | None], int]:
    """The same totals, counted row by row (a join over every assignment)."""
    with db.read() as conn:
        pairs = conn.execute(
            select(role_assignments.c.role, nodes.c.status).join(
                nodes, nodes.c.id == role_assignments.c.node_id
            )
        ).all()
    found = {}
    for role in ROLES:
        of_role = [status for code, status in pairs if code == role]
        found[(role, None)] = sum(s != NodeStatus.DELETED.value for s in of_role)
        for status in NodeStatus:
            found[(role, status.value)] = of_role.count(status.value)
    return found


def test_role_totals_kept_exact(fleet: tuple[Database, list[Row]]) -> None:  # noqa: F811
    """Role-only and status+role totals read node_role_counts; after every kind of change
    they equal a count of the rows. The role filter's pages keep their order."""
    db, rows = fleet
    assert _role_totals(db) == _role_rows(db)
    ids = [row.id for row in rows]
    with db.write() as conn:  # assign, unassign
        for node_id in ids[:40]:
            conn.execute(
                insert(role_assignments).values(
                    node_id=node_id, role="web", parameters={}, created_at=NOW, updated_at=NOW
                )
            )
        conn.execute(
            delete(role_assignments).where(
                role_assignments.c.node_id.in_(ids[40:80]), role_assignments.c.role == "sip"
            )
        )
    assert _role_totals(db) == _role_rows(db)
    with db.write() as conn:  # status changes, one by one and many in one statement
        for node_id in ids[:60]:
            status = STATUSES[(node_id + 3) % len(STATUSES)].value
            conn.execute(update(nodes).where(nodes.c.id == node_id).values(status=status))
        conn.execute(update(nodes).where(nodes.c.id.in_(ids[60:120])).values(status="Online"))
    assert _role_totals(db) == _role_rows(db)
    with db.write() as conn:  # node rows deleted: their assignments cascade
        conn.execute(delete(nodes).where(nodes.c.id.in_(ids[100:130])))
    assert _role_totals(db) == _role_rows(db)
    # enough changes to fold (1,024 rows) more than once: still exact, the table stays small
    for round_ in range(6):
        with db.write() as conn:
            for node_id in ids[130:280]:
                status = STATUSES[(node_id + round_) % len(STATUSES)].value
                conn.execute(update(nodes).where(nodes.c.id == node_id).values(status=status))
    assert _role_totals(db) == _role_rows(db)
    with db.read() as conn:
        kept = conn.execute(select(func.count()).select_from(node_role_counts)).scalar_one()
    assert kept < 1024 + len(ROLES) * len(NodeStatus)
    # the role filter's page: its rows in the sort's order, read from the role's index or
    # walking the sort key's index (ROLE_SORTED_MAX 0: every role counts as common)
    live = {r.id: r for r in rows if r.id not in ids[100:130]}
    with db.read() as conn:
        status_of = dict(conn.execute(select(nodes.c.id, nodes.c.status)).all())
        roles_of = node_rows.roles_of(conn, list(live))
    cases = [("que", None, "-hostname"), ("web", "Online", "hostname"), ("sip", None, "id")]
    cases += [("pbx", "StandBy", "-id"), ("que", None, "created_at"), ("web", None, "-hostname")]
    for driven_max in (node_rows.ROLE_SORTED_MAX, 0):
        with db.read() as conn, pytest.MonkeyPatch.context() as patch:
            patch.setattr(node_rows, "ROLE_SORTED_MAX", driven_max)
            for role, status, sort in cases:
                flt = NodeFilter.parse(role=role, status=status, sort=sort, limit=9, offset=2)
                page = node_rows.list_page(conn, flt)
                want = [
                    r
                    for r in live.values()
                    if role in roles_of[r.id]
                    and (status_of[r.id] == status if status else status_of[r.id] != "Deleted")
                ]
                key = sort.removeprefix("-")
                want.sort(
                    key=lambda r: (r.hostname if key == "hostname" else 0, r.id),
                    reverse=sort.startswith("-"),
                )
                got = [n.id for n in page.items]
                assert got == [r.id for r in want][2:11], (role, status, sort, driven_max)
                assert page.total == len(want)
                assert page.total_exact


def counting(walk: Any, walks: list[bool]) -> Any:
    """`walk` (a walk of store/nodes.py), noting in `walks` whether each call found its page."""

    def counted(*args: Any) -> list[int] | None:
        found: list[int] | None = walk(*args)
        walks.append(found is not None)
        return found

    return counted


# (ROLE_SORTED_MAX, WALK_MARGIN, WALK_SLACK): the role's nodes read and sorted (every role of
# this fleet is under the default maximum); the sort key's index walked far enough; walked only
# a fifth as far as the page would reach with the role's nodes spread evenly, which ends before
# the page (mostly), so that the role's nodes are read and sorted after the walk
ROLE_PATHS = {"sorted": (1_000, 4, 200), "walked": (0, 4, 400), "walk ended": (0, 0.2, 0)}


@pytest.mark.parametrize("path", list(ROLE_PATHS))
def test_a_role_sorted_by_any_key_whichever_way_its_page_is_read(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    seen: dict[int, object],
    path: str,
) -> None:
    """A role filter sorted by each key, in both directions, on the first, a middle and a page
    past the last: the definition's rows in the sort's order, however the page was read."""
    db, rows = fleet
    sorted_max, margin, slack = ROLE_PATHS[path]
    walks: list[bool] = []  # each walk: whether it found the page
    counted_walk = counting(node_rows._role_walk, walks)
    wrong = []
    with db.read() as conn, pytest.MonkeyPatch.context() as patch:
        patch.setattr(node_rows, "ROLE_SORTED_MAX", sorted_max)
        patch.setattr(node_rows, "WALK_MARGIN", margin)
        patch.setattr(node_rows, "WALK_SLACK", slack)
        patch.setattr(node_rows, "_role_walk", counted_walk)
        for role in ("sip", "que"):
            for status in (None, "Online"):
                for sort in SORTS:
                    for offset in (0, 7, 400):
                        flt = NodeFilter.parse(
                            role=role, status=status, sort=sort, limit=9, offset=offset
                        )
                        page = node_rows.list_page(conn, flt)
                        want = ordered(rows, flt, seen)
                        if [n.id for n in page.items] != want:
                            wrong.append((role, status, sort, offset))
                        assert page.total == len(expected(rows, flt))
    assert not wrong, wrong
    if path == "sorted":
        assert walks == []
    elif path == "walked":
        assert walks
        assert all(walks)
    else:
        assert walks.count(False) > len(walks) // 2, walks


@pytest.mark.postgres
def test_role_count_when_a_status_change_and_an_assignment_race(database_url: str) -> None:
    """PostgreSQL: one transaction changes a node's status while another assigns it a role;
    whichever commits first, the kept count files the role under the node's final status."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    db = Database(database_url)
    try:
        with db.write() as conn:
            node_id = node_rows.insert_node(
                conn,
                hostname="race-1",
                private_ip="10.9.0.1",
                public_ip=None,
                container_id=None,
                is_controller=False,
                now=NOW,
            )
        changed = threading.Event()
        done = threading.Event()

        def assign() -> None:
            changed.wait(10)
            with db.write() as conn:  # waits for the status change's row lock
                conn.execute(
                    insert(role_assignments).values(
                        node_id=node_id, role="sip", parameters={}, created_at=NOW, updated_at=NOW
                    )
                )
            done.set()

        worker = threading.Thread(target=assign)
        worker.start()
        with db.write() as conn:
            conn.execute(update(nodes).where(nodes.c.id == node_id).values(status="StandBy"))
            changed.set()
            assert not done.wait(0.5)  # the assignment is held behind this transaction
        worker.join(10)
        assert done.is_set()
        with db.read() as conn:
            sip_standby = node_rows.list_page(
                conn, NodeFilter(role="sip", status=NodeStatus.STANDBY)
            )
            sip_offline = node_rows.list_page(
                conn, NodeFilter(role="sip", status=NodeStatus.OFFLINE)
            )
        assert [n.id for n in sip_standby.items] == [node_id]
        assert sip_standby.total == 1
        assert sip_offline.total == 0
    finally:
        db.dispose()


@pytest.fixture
def infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    with running_infra(tmp_path, database_url) as running:
        yield running


def test_api_and_web_say_when_the_total_is_a_lower_bound(infra: Infra, capped: int) -> None:
    """Over HTTP: `total_exact` false with `total` at the cap when more match, true with the
    exact number when fewer do or when the page reached the last match; the web listing says
    "more than", offers the next page, and its "select all" names no false number."""
    many = 30  # more than a web page of 25
    for number in range(many):
        answer = infra.client.post(
            f"{API}/nodes",
            json={"hostname": f"many-{number:02d}.lab", "private_ip": f"10.7.0.{number + 1}"},
        )
        assert answer.status_code == 201, answer.text
    broad = infra.client.get(f"{API}/nodes", params={"q": "many-", "limit": 5}).json()
    assert (broad["total"], broad["total_exact"]) == (capped, False)
    assert [n["hostname"] for n in broad["items"]] == [f"many-{i:02d}.lab" for i in range(5)]
    last = infra.client.get(f"{API}/nodes", params={"q": "many-", "offset": 20}).json()
    assert [n["hostname"] for n in last["items"]] == [f"many-{i:02d}.lab" for i in range(20, 30)]
    assert (last["total"], last["total_exact"]) == (many, True)  # the last page counts them
    narrow = infra.client.get(f"{API}/nodes", params={"q": "many-0", "limit": 2}).json()
    assert (narrow["total"], narrow["total_exact"]) == (10, True)
    plain = infra.client.get(f"{API}/nodes", params={"limit": 1}).json()  # the kept counts
    assert (plain["total"], plain["total_exact"]) == (many + 1, True)  # and the IC

    web = web_login(str(infra.client.base_url), "admin", ADMIN_PASSWORD)
    try:
        page = web.get("/", params={"q": "many-"}).text
        assert f"of <strong>more than {capped}</strong> nodes" in page
        assert f"Select all <strong>more than {capped}</strong> nodes" in page
        assert f'data-total="{capped}+"' in page
        assert "Page 1 of 2 or more" in page
        assert 'id="page-next"' in page
        second = web.get("/", params={"q": "many-", "page": "2"}).text
        assert f"Showing 26–{many} of <strong>{many}</strong> nodes" in second
        assert "more than" not in second
        exact = web.get("/", params={"q": "many-0"}).text
        assert "of <strong>10</strong> nodes" in exact
        assert "more than" not in exact
    finally:
        web.close()


def test_other_live_with_a_rare_role(fleet: tuple[Database, list[Row]]) -> None:  # noqa: F811
    """The controller's facts for a role only it carries (ic): none elsewhere, read from the
    role's index (not a walk of every node); then one other live node and one Deleted one."""
    db, rows = fleet
    ic, other, gone = rows[1], rows[2], next(r for r in rows if r.status == "Deleted")
    with db.write() as conn:
        for row in (ic, other, gone):
            conn.execute(
                insert(role_assignments).values(
                    node_id=row.id, role="ic", parameters={}, created_at=NOW, updated_at=NOW
                )
            )
    with db.read() as conn:
        assert node_rows.other_live(conn, besides=ic.id, role="ic", first=5) == (
            [(other.hostname, other.status)],
            1,
        )
        assert node_rows.other_live(conn, besides=other.id, role="ic", first=1) == (
            [(ic.hostname, ic.status)],
            1,
        )
    with db.write() as conn:
        conn.execute(delete(role_assignments).where(role_assignments.c.node_id == other.id))
    with db.read() as conn:
        assert node_rows.other_live(conn, besides=ic.id, role="ic", first=5) == ([], 0)


def test_the_plain_listing_deep_pages(fleet: tuple[Database, list[Row]]) -> None:  # noqa: F811
    """Every live node by NodeID, both directions, at any offset (on SQLite read from
    ix_nodes_live_id alone): the definition's rows; the kept total."""
    db, rows = fleet
    live = [r.id for r in rows if r.status != NodeStatus.DELETED.value]
    with db.read() as conn:
        for sort, want in (("id", live), ("-id", live[::-1])):
            for offset in (0, 1, 100, len(live) - 3, len(live), len(live) + 5):
                flt = NodeFilter.parse(sort=sort, limit=7, offset=offset)
                page = node_rows.list_page(conn, flt)
                assert [n.id for n in page.items] == want[offset : offset + 7], (sort, offset)
                assert (page.total, page.total_exact) == (len(live), True)


# (WALK_MARGIN, WALK_SLACK): walked as far as the page would reach with the matches spread
# evenly, times 4 (most walks find their page); a fifth as far (most end before it)
PRESENCE_PATHS = {"walked": (4, 0), "walk ended": (0.2, 0)}


@pytest.mark.parametrize("path", list(PRESENCE_PATHS))
def test_sorted_by_last_seen_whichever_way_the_page_is_read(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    seen: dict[int, object],
    path: str,
) -> None:
    """PostgreSQL reads a page sorted by the last-seen time from the first presence rows in
    that order (`_presence_walk`), and the whole join when the walk ends before the page: with
    any filter, in both directions, on the first, a middle and a page past the last, the
    definition's rows in its order either way (SQLite: its index, the same answers)."""
    db, rows = fleet
    margin, slack = PRESENCE_PATHS[path]
    walks: list[bool] = []
    counted_walk = counting(node_rows._presence_walk, walks)
    wrong = []
    filters: list[dict[str, Any]] = [{}, {"status": "Online"}, {"status": "Deleted"}]
    filters += [{"role": "que"}, {"role": "sip", "status": "StandBy"}, {"q": "sip"}]
    with db.read() as conn, pytest.MonkeyPatch.context() as patch:
        patch.setattr(node_rows, "WALK_MARGIN", margin)
        patch.setattr(node_rows, "WALK_SLACK", slack)
        patch.setattr(node_rows, "_presence_walk", counted_walk)
        for narrowed in filters:
            for sort in ("last_seen", "-last_seen"):
                for offset in (0, 7, 400):
                    flt = NodeFilter.parse(**narrowed, sort=sort, limit=9, offset=offset)
                    page = node_rows.list_page(conn, flt)
                    if [n.id for n in page.items] != ordered(rows, flt, seen):
                        wrong.append((narrowed, sort, offset))
    assert not wrong, wrong
    if db.dialect != "postgresql":
        assert walks == []
    elif path == "walked":
        assert walks.count(True) > walks.count(False), walks
    else:
        assert walks.count(False) > walks.count(True), walks


@pytest.mark.parametrize("sort", ["hostname", "-private_ip", "-last_seen"])
def test_a_role_page_past_a_capped_count_is_the_definitions(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    seen: dict[int, object],
    capped: int,
    sort: str,
) -> None:
    """A role with another filter than the status (maintenance) is counted up to the cap only
    ("more than"): a walk along the sort key that falls short of a page past the cap is not
    the last page (it once was: an empty or short page, and a wrong exact total, for a page
    the web page links to), the role's nodes are read and sorted instead."""
    db, rows = fleet
    wrong = []
    with db.read() as conn, pytest.MonkeyPatch.context() as patch:
        patch.setattr(node_rows, "WALK_MARGIN", 0.2)  # walks that end before the page
        patch.setattr(node_rows, "WALK_SLACK", 0)
        for role in ("sip", "que"):
            want_all = expected(rows, NodeFilter.parse(role=role))
            assert len(want_all) > capped + 9  # pages past the cap exist
            for offset in (0, 9, capped + 2, len(want_all) - 3):
                flt = NodeFilter.parse(
                    role=role, maintenance="no", sort=sort, limit=9, offset=offset
                )
                page = node_rows.list_page(conn, flt)
                if [n.id for n in page.items] != ordered(rows, flt, seen):
                    wrong.append((role, offset, [n.id for n in page.items]))
                if page.total_exact:  # a total given as exact is the true one
                    assert page.total == len(want_all), (role, offset)
    assert not wrong, wrong


@pytest.mark.parametrize("sort", ["hostname", "-hostname"])
def test_a_role_by_host_name_is_read_from_the_roles_host_name_index(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    seen: dict[int, object],
    sort: str,
) -> None:
    """Every live node of a role by host name, in both directions, on the first, a middle, the
    last and a page past it, the role common or few enough to sort: the definition's rows,
    read from the role's host-name index (migration 0019), no budgeted walk first. A role with
    another filter is not read that way, and answers the definition too."""
    db, rows = fleet
    walks: list[bool] = []
    along: list[bool] = []

    def spied(flt: NodeFilter, *, by_hostname: bool) -> Any:
        along.append(by_hostname)
        return driven(flt, by_hostname=by_hostname)

    driven = node_rows._role_driven
    wrong = []
    with db.read() as conn, pytest.MonkeyPatch.context() as patch:
        patch.setattr(node_rows, "_role_walk", counting(node_rows._role_walk, walks))
        patch.setattr(node_rows, "_role_driven", spied)
        for most in (0, 1_000):  # every role of this fleet common; every one few enough to sort
            patch.setattr(node_rows, "ROLE_SORTED_MAX", most)
            for role in ("sip", "que"):
                count = len(expected(rows, NodeFilter.parse(role=role)))
                for offset in (0, 40, count - 4, count + 9):
                    flt = NodeFilter.parse(role=role, sort=sort, limit=9, offset=offset)
                    page = node_rows.list_page(conn, flt)
                    if [n.id for n in page.items] != ordered(rows, flt, seen):
                        wrong.append((most, role, offset))
                    assert (page.total, page.total_exact) == (count, True)
        assert not wrong, wrong
        assert walks == []
        assert along == [True] * 16
        along.clear()
        others = [
            NodeFilter.parse(role="que", status="Online", sort=sort, limit=9),
            NodeFilter.parse(role="que", maintenance="no", sort=sort, limit=9, offset=5),
        ]
        for most in (0, 1_000):
            patch.setattr(node_rows, "ROLE_SORTED_MAX", most)
            for flt in others:
                found = [n.id for n in node_rows.list_page(conn, flt).items]
                assert found == ordered(rows, flt, seen), (most, flt)
        assert True not in along


def _clustered_role(db: Database, *, others: int, carrying: int) -> list[int]:
    """`others` nodes whose host names come first (`a-...`), then `carrying` nodes of role sip
    whose host names come last (`z-...`), all Online; a few of the role Deleted, among them
    one that shares its host name with a live node of the role. The role's NodeIDs."""
    with db.write() as conn:
        rows = [
            {
                "hostname": f"{'a' if number < others else 'z'}-{number:05d}.example.net",
                "private_ip": f"10.{number // 65536}.{number // 256 % 256}.{number % 256}",
                "status": "Online",
                "is_controller": False,
                "config_generation": 0,
                "created_at": NOW,
                "updated_at": NOW,
                "row_version": 1,
            }
            for number in range(others + carrying)
        ]
        conn.execute(insert(nodes), rows)
        ids = list(conn.execute(select(nodes.c.id).where(nodes.c.hostname.like("z-%"))).scalars())
        conn.execute(
            insert(role_assignments),
            [
                {
                    "node_id": i,
                    "role": "sip",
                    "parameters": {},
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in ids
            ],
        )
        last = conn.execute(select(nodes.c.hostname).where(nodes.c.id == ids[-1])).scalar_one()
        for gone in ids[-3:]:  # the last three host names of the role Deleted...
            conn.execute(update(nodes).where(nodes.c.id == gone).values(status="Deleted"))
        twin = {**rows[0], "hostname": last, "status": "Deleted"}  # ...and a Deleted twin
        conn.execute(insert(nodes), [twin])
        if db.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE nodes")
            conn.exec_driver_sql("ANALYZE role_assignments")
    return ids


def test_a_clustered_role_by_host_name_reads_its_own_index(database_url: str) -> None:
    """Both databases: a role whose host names all come after every other node's, sorted by
    -hostname and by hostname, first pages and one at the far end: the first pages are read
    from the role's host-name index in order, nothing sorted (EXPLAIN of the very statement),
    and every page is the definition's, Deleted nodes left out. Before 0019 the page walked
    the other nodes' host names first."""
    db = Database(database_url)
    try:
        ids = _clustered_role(db, others=15_000, carrying=5_000)
        live = ids[:-3]  # in host-name order, as inserted
        statements: list[tuple[str, Any]] = []

        def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if "ORDER BY role_assignments.hostname" in statement:
                statements.append((statement, parameters))

        cases = [("-hostname", 0), ("-hostname", 50), ("hostname", 0), ("hostname", 4_980)]
        with db.read() as conn:
            event.listen(db.engine, "before_cursor_execute", seen)
            try:
                for sort, offset in cases:
                    flt = NodeFilter.parse(role="sip", sort=sort, limit=9, offset=offset)
                    page = node_rows.list_page(conn, flt)
                    want = list(reversed(live)) if sort.startswith("-") else live
                    assert [n.id for n in page.items] == want[offset : offset + 9], (sort, offset)
                    assert (page.total, page.total_exact) == (len(live), True)
            finally:
                event.remove(db.engine, "before_cursor_execute", seen)
            assert len(statements) == len(cases)
            # the first pages (a page near the role's far end reads most of the role's rows
            # either way: PostgreSQL then joins and sorts them, as its costs say)
            for statement, parameters in statements[:3]:
                if db.dialect == "sqlite":
                    plan = " | ".join(
                        str(row[-1])
                        for row in conn.exec_driver_sql(
                            "EXPLAIN QUERY PLAN " + statement, parameters
                        )
                    )
                    assert "ix_role_assignments_role_hostname" in plan, plan
                    assert "TEMP B-TREE" not in plan, plan
                else:
                    plan = "\n".join(
                        conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars()
                    )
                    assert "ix_role_assignments_role_hostname" in plan, (parameters, plan)
                    assert "Sort" not in plan, (parameters, plan)
    finally:
        db.dispose()


def test_assignments_carry_their_nodes_host_names(database_url: str) -> None:
    """Both databases: an assignment made takes its node's host name (one by one and in a
    bulk insert), a renamed node's assignments follow it, a rename to the same name changes
    nothing, and an assignment of no node still fails on the foreign key (not on the copied
    name)."""
    db = Database(database_url)
    try:
        ids = _clustered_role(db, others=2, carrying=5)
        carried = select(
            role_assignments.c.node_id, role_assignments.c.role, role_assignments.c.hostname
        )
        names = select(nodes.c.id, nodes.c.hostname)
        with db.write() as conn:
            conn.execute(
                insert(role_assignments).values(
                    node_id=ids[0], role="que", parameters={}, created_at=NOW, updated_at=NOW
                )
            )
            conn.execute(update(nodes).where(nodes.c.id == ids[0]).values(hostname="b-renamed.lab"))
            conn.execute(update(nodes).where(nodes.c.id == ids[1]).values(status="StandBy"))
        with db.read() as conn:
            hostnames = {row.id: row.hostname for row in conn.execute(names)}
            pairs = conn.execute(carried).all()
        assert len(pairs) == 6
        assert all(name == hostnames[node_id] for node_id, _role, name in pairs), pairs
        assert {name for node_id, _r, name in pairs if node_id == ids[0]} == {"b-renamed.lab"}
        with db.read() as conn:  # the rename moved it to the front of the role's order
            page = node_rows.list_page(conn, NodeFilter.parse(role="sip", sort="hostname"))
        assert [n.id for n in page.items][:1] == [ids[0]]
        with pytest.raises(RuleViolation) as failed, db.write() as conn:
            conn.execute(
                insert(role_assignments).values(
                    node_id=999_999, role="sip", parameters={}, created_at=NOW, updated_at=NOW
                )
            )
        cause = str(failed.value.__cause__).lower()  # the driver's own error
        assert "foreign key" in cause, cause
        assert "hostname" not in cause, cause
    finally:
        db.dispose()


def test_a_search_by_host_name_alone_streams_its_count_on_sqlite(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    capped: int,
) -> None:
    """SQLite: a search of every live node whose only term is the host name's counts the FTS5
    index's matches as they stream, up to the cap (the index's whole answer is not read first);
    with a status, or a `q` that may begin an IP address, the count keeps the IN list. The
    totals are the definition's either way. PostgreSQL counts through its bitmaps."""
    db, rows = fleet
    streamed: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "CROSS JOIN nodes" in statement:
            streamed.append(statement)

    cases = [("exa", None, True), ("sip", None, True), ("exa", "Online", False)]
    cases += [("fe80", None, False), ("sïp", None, False), ("ex", None, False)]
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.read() as conn:
            for q, status, streams in cases:
                streamed.clear()
                flt = NodeFilter.parse(q=q, status=status, limit=3)
                page = node_rows.list_page(conn, flt)
                want = expected(rows, flt)
                assert (page.total, page.total_exact) == (
                    min(len(want), capped),
                    len(want) <= capped,
                ), q
                assert bool(streamed) == (streams and db.dialect == "sqlite"), (q, status)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert len(expected(rows, NodeFilter.parse(q="exa", limit=1))) > capped  # "more than"


def test_a_search_by_host_name_alone_pages_along_its_index_on_sqlite(
    fleet: tuple[Database, list[Row]],  # noqa: F811
    capped: int,
) -> None:
    """The sibling: sorted by NodeID either way, that search's page comes from the FTS5 index
    in its own (NodeID) order on SQLite, and is the definition's page, first, middle, last and
    past the end; sorted by another key it keeps the walk."""
    db, rows = fleet
    paged: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "ORDER BY nodes_search.rowid" in statement:
            paged.append(statement)

    matches = len(expected(rows, NodeFilter.parse(q="exa", limit=1)))
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.read() as conn:
            for sort in ("id", "-id", "hostname"):
                for offset in (0, 7, matches - 2, matches + 5):
                    paged.clear()
                    flt = NodeFilter.parse(q="exa", sort=sort, limit=5, offset=offset)
                    page = node_rows.list_page(conn, flt)
                    assert [n.id for n in page.items] == ordered(rows, flt, {}), (sort, offset)
                    streams = db.dialect == "sqlite" and sort != "hostname"
                    assert bool(paged) == streams, (sort, offset)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert matches > capped
