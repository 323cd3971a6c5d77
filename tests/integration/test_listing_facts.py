"""The Node Listing reads the rulebook's facts without the names the controller node's
sentences quote (services/nodes.py `facts_of(quoted=False)`): every action it offers, refuses
or asks about first must be decided as with the full facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from voipcloud.domain import policy
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.lifecycle import Operation
from voipcloud.domain.policy import Decision
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.controller import Controller
from voipcloud.web import views

ADMIN = "admin:admin"


@contextmanager
def recorded(services: Controller) -> Iterator[list[str]]:
    """The statements the controller's engine runs inside the block."""
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engine = services.ctx.db.engine
    event.listen(engine, "after_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "after_cursor_execute", seen)


def shown(decision: Decision) -> tuple[object, ...]:
    """What a row shows of a decision: offered or not, the rule and reason, asks first or not."""
    return (decision.allowed, decision.rule, decision.reason, decision.confirm is not None)


def test_the_listing_decides_every_action_as_the_full_facts_do(services: Controller) -> None:
    ic = services.nodes.list(NodeFilter(role="ic")).items[0]
    services.roles.assign(ic.id, actor=ADMIN, role="jabber", parameters={})
    for number in range(7):  # more than the five a warning names
        node = services.nodes.add(
            actor=ADMIN,
            hostname=f"jabber-{number}",
            private_ip=f"10.9.0.{number + 1}",
            public_ip=f"203.0.113.{number + 1}",
        )
        services.roles.assign(node.id, actor=ADMIN, role="jabber", parameters={})
    services.nodes.add(actor=ADMIN, hostname="bare", private_ip="10.9.1.1")
    services.extensions.add(actor=ADMIN, number="100")

    read = services.nodes.listing(NodeFilter(limit=25))
    page, facts = read.page, read.facts
    assert len(page.items) == 9
    assert read.extension_count == 1
    assert read.summary == services.maintenance.summary()
    for node in page.items:
        full = services.nodes.get(node.id).facts
        light = facts[node.id]
        for _key, operation, _label in views.ROW_ACTIONS + views.INFO_ACTIONS:
            assert shown(policy.decide(operation, light)) == shown(
                policy.decide(operation, full)
            ), (node.hostname, operation)
        for role in node.roles:
            for operation in (Operation.DELETE_ASSIGNMENT, Operation.ADMIN_REMOVE):
                assert shown(policy.decide(operation, light, role=role)) == shown(
                    policy.decide(operation, full, role=role)
                ), (node.hostname, operation, role)

    # what was left out: the names the controller's sentences quote, read when their page opens
    full_ic = services.nodes.get(ic.id).facts
    assert full_ic.carried_elsewhere["jabber"] == tuple(f"jabber-{n}" for n in range(5))
    assert full_ic.carried_count["jabber"] == 7
    assert facts[ic.id].carried_elsewhere == {}
    remove = policy.decide(Operation.ADMIN_REMOVE, full_ic, role="jabber")
    assert remove.confirm is not None
    assert "It stays on 7 other node(s): jabber-0, jabber-1" in remove.confirm


def test_an_empty_listing_still_counts_the_extensions(services: Controller) -> None:
    for number in ("101", "102"):
        services.extensions.add(actor=ADMIN, number=number)
    read = services.nodes.listing(NodeFilter(q="no-such-node"))
    assert read.page.items == []
    assert read.facts == {}
    assert read.extension_count == 2
    assert read.summary.live == 1  # the controller's own node: the counters are not filtered


def test_a_poll_of_the_listing_is_one_transaction(services: Controller) -> None:
    """The page, its facts, the extension count and the status counters: one connection
    checked out of the pool, once (each checkout pings PostgreSQL, each read commits), and
    the counters are those of that read."""
    node = services.nodes.add(actor=ADMIN, hostname="polled", private_ip="10.9.2.1")
    services.maintenance.enter(node.id, actor=ADMIN, reason="disk")
    checkouts: list[object] = []

    def checked_out(*_args: object) -> None:
        checkouts.append(1)

    engine = services.ctx.db.engine
    event.listen(engine, "checkout", checked_out)
    try:
        listing = views.listing(services, views.ListingRequest())
    finally:
        event.remove(engine, "checkout", checked_out)
    assert len(checkouts) == 1
    counted = {c.key: c.count for c in listing.counters.items}
    assert counted["all"] == 2  # the controller's node and this one
    assert counted["maintenance"] == 1
    ic = services.nodes.list(NodeFilter(role="ic")).items[0]
    assert counted[node.status.value] == 1 + (ic.status is node.status)


def test_a_poll_of_the_listing_is_one_snapshot(services: Controller) -> None:
    """A node added while a poll is being read (between its total and its page) is in none of
    what the poll shows: the total, the page and the counters agree. At READ COMMITTED
    (PostgreSQL's default) the page and the counters read after the total saw it."""
    services.nodes.add(actor=ADMIN, hostname="there-before", private_ip="10.9.3.1")
    engine = services.ctx.db.engine
    added: list[int] = []

    def meanwhile(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not added and "node_counts" in statement:  # the total: read first
            added.append(1)  # before the add: its own statements come through here too
            services.nodes.add(actor=ADMIN, hostname="added-meanwhile", private_ip="10.9.3.2")

    event.listen(engine, "after_cursor_execute", meanwhile)
    try:
        read = services.nodes.listing(NodeFilter(limit=50))
    finally:
        event.remove(engine, "after_cursor_execute", meanwhile)
    assert added
    hostnames = [n.hostname for n in read.page.items]
    assert "there-before" in hostnames
    assert "added-meanwhile" not in hostnames
    assert read.page.total == len(hostnames) == read.summary.live == 2  # with the IC node
    after = services.nodes.listing(NodeFilter(limit=50))  # the next poll shows it
    assert after.page.total == after.summary.live == 3


def test_a_plain_listing_takes_its_total_from_the_counters(services: Controller) -> None:
    """The counters (nodes per status) are read first, in one statement with the maintenance
    counts; a listing filtered by nothing but a status takes its total from them instead of
    summing the kept counts again, and so does the last-seen walk its size. A role's total
    still comes from the role's own counts."""
    for number in range(3):
        services.nodes.add(actor=ADMIN, hostname=f"plain-{number}", private_ip=f"10.9.4.{number}")
    with recorded(services) as statements:
        reads = {
            "plain": services.nodes.listing(NodeFilter(limit=2)),
            "offline": services.nodes.listing(NodeFilter.parse(status="Offline", limit=2)),
            "deleted": services.nodes.listing(NodeFilter.parse(status="Deleted", limit=2)),
            # PostgreSQL's last-seen walk sizes itself by every node: from the same counters
            "last seen": services.nodes.listing(NodeFilter.parse(sort="-last_seen", limit=2)),
        }
    assert sum("node_counts" in s for s in statements) == len(reads)  # the counters' only
    assert reads["plain"].page.total == reads["plain"].summary.live == 4  # with the IC node
    offline = reads["offline"].summary.count(NodeStatus.OFFLINE)
    assert reads["offline"].page.total == offline >= 3
    assert len(reads["offline"].page.items) == 2
    assert reads["deleted"].page.total == 0
    assert reads["last seen"].page.total == 4
    with recorded(services) as by_role_statements:
        by_role = services.nodes.listing(NodeFilter(role="ic"))
    assert any("node_role_counts" in s for s in by_role_statements)
    assert by_role.page.total == 1


def test_the_extensions_are_counted_with_the_counters(services: Controller) -> None:
    """A poll counts the extensions in the counters' statement (a `UNION ALL` row of their
    own): one statement fewer a poll. The count is the same on a page with nodes and on an
    empty one, and changes with the next poll."""
    services.nodes.add(actor=ADMIN, hostname="counted", private_ip="10.9.5.1")
    services.extensions.add(actor=ADMIN, number="201")
    with recorded(services) as statements:
        full = services.nodes.listing(NodeFilter())
        empty = services.nodes.listing(NodeFilter(q="no-such-node"))
    counting = [s for s in statements if "extensions" in s]
    assert len(counting) == 2  # one a poll
    assert all("node_counts" in s for s in counting)  # the counters' statement
    assert full.extension_count == empty.extension_count == full.summary.extension_count == 1
    assert all(f.extension_count == 1 for f in full.facts.values())
    services.extensions.add(actor=ADMIN, number="202")
    assert services.nodes.listing(NodeFilter()).extension_count == 2
