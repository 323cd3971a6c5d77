"""Several `voipcloud serve` processes on one PostgreSQL behave as one controller.

Three mechanisms, all in the database the controllers already share (no other server):

- **Changes reach every controller.** A commit that changes a node's desired state sends
  `NOTIFY voipcloud_nodes, '<sender>:<id>,<id>…'` inside its transaction
  (`store.database.Database.write`), so it is delivered only if it commits. Each controller
  LISTENs on one dedicated connection (`Cluster`) and wakes the channels it holds for those
  nodes: an administrator's change on one controller reaches the agent connected to another
  at once.
- **Who is connected** is known everywhere: a controller announces the channels it opens and
  closes on `voipcloud_agents` (`<sender>:open:<ids>` / `<sender>:closed:<ids>`), and flushes
  its agents' last-seen times to the database as before. Another controller answers an
  agent *connected* while the last announcement says open (or says nothing, after a restart)
  and its stored last-seen time is fresh (`Presence.remote_open` / `remote_closed`).
- **Periodic duties run once.** Each duty has an advisory lock (`Duty`, below). The process
  holding it does the duty, the others skip it; the lock is held by a session (`Duties`), so
  it moves to another controller only when its holder dies or loses its connection.
  A storage migration holds its kind's lock while it runs (`MigrationLock`).

On SQLite (the embedded default, one process per data dir) all of this is a no-op: every
duty is this process's, and there is nobody to notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from voipcloud.store.database import MAX_NOTIFY_PAYLOAD, NODES_CHANNEL, Database

log = logging.getLogger("voipcloud.cluster")

AGENTS_CHANNEL = "voipcloud_agents"
HEALTH_CHANNEL = "voipcloud_health"  # role health an agent reported to its controller
# the first key of every voipcloud advisory lock ("voip"), so no other application's
# pg_advisory_lock(bigint) collides with ours
LOCK_SPACE = 0x766F6970
LIVENESS_CHECK_SECONDS = 1.0  # how often a held lock's session is checked before a duty
ANNOUNCE_SECONDS = 0.1  # channel opens/closes are announced in batches this often
RECONNECT_CAP = 10.0  # the listener reconnects with backoff up to this


class Duty(IntEnum):
    """The periodic duties done by one controller of a cluster: advisory lock keys."""

    FIRST_START = 0  # migrations and first-start work: one controller at a time (blocking)
    EXPIRE_OPERATIONS = 1  # pending activations/fixes past their deadline
    AGENT_WATCH = 2  # agent-lost / agent-back events
    WEBHOOKS = 3  # webhook dispatch and delivery
    LOGIN_FAILURES = 4  # old rows of the shared login throttle swept (services/auth.py)
    PRESENCE_VACUUM = 5  # the presence rows' dead versions reclaimed (migration 0016)
    KEPT_COUNTS = 6  # the listing's kept counts folded and compacted (store/kept_counts.py)
    STORAGE_MIGRATION = 100  # + the resource kind's index: one lock per kind


def storage_migration_key(index: int) -> int:
    return int(Duty.STORAGE_MIGRATION) + index


def clustered(db: Database) -> bool:
    """Several controllers may share this database (PostgreSQL)."""
    return db.dialect == "postgresql"


# A lock-holding session's controller host may vanish without closing it (power cut, network
# cut): the server then finds the dead session by TCP keepalive after about
# idle + interval * count seconds (not the operating system's two hours), and its locks go.
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def _server_keepalive(conn: Connection) -> None:
    """This session's server side probes its client (ignored over a Unix socket)."""
    for name in ("idle", "interval", "count"):
        conn.exec_driver_sql(f"SET tcp_keepalives_{name} = {KEEPALIVE['keepalives_' + name]}")
    conn.commit()


def _try_lock(conn: Connection, key: int) -> bool:
    query = text("SELECT pg_try_advisory_lock(:space, :key)")
    got = bool(conn.execute(query, {"space": LOCK_SPACE, "key": key}).scalar())
    conn.commit()
    return got


def held_anywhere(db: Database, key: int) -> bool:
    """Whether some session (of any controller, this one included) holds the lock."""
    if not clustered(db):
        return False
    query = text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid::bigint = :space AND objid::bigint = :key AND objsubid = 2 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
    with db.read() as conn:
        return bool(conn.execute(query, {"space": LOCK_SPACE, "key": key}).scalar())


class Duties:
    """Which periodic duties this controller does: those whose advisory lock its own session
    holds. `leads(duty)` takes the lock if it is free and keeps it for the process's life
    (so a duty does not wander between controllers, and its in-memory state stays valid);
    when the session is lost every duty is given up and taken again by whoever gets it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.enabled = clustered(db)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._held: set[int] = set()
        self._checked = 0.0  # monotonic time the session was last known alive

    def leads(self, duty: int) -> bool:
        """Whether this process does `duty` now (may raise DatabaseUnavailable)."""
        if not self.enabled:
            return True
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._db.engine.connect()
                    self._held.clear()
                    _server_keepalive(self._conn)
                if duty in self._held:
                    if time.monotonic() - self._checked >= LIVENESS_CHECK_SECONDS:
                        self._conn.exec_driver_sql("SELECT 1")
                        self._conn.commit()
                        self._checked = time.monotonic()
                    return True
                got = _try_lock(self._conn, duty)
            except Exception:
                self._drop()
                raise
            if got:
                self._held.add(duty)
                self._checked = time.monotonic()
                log.info("this controller now does the duty %s", _name(duty))
            return got

    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def _drop(self) -> None:
        """The session failed: its locks are gone with it (never back into the pool)."""
        conn, self._conn = self._conn, None
        if self._held:
            log.warning("lost the database session of the duties %s", sorted(self._held))
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Give every duty up (at shutdown), so another controller takes it at once."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is None:
                return
            _unlock_all_and_close(conn)


def _unlock_all_and_close(conn: Connection) -> None:
    """Release every advisory lock of this session and close it; a session that cannot is
    thrown away (its locks go with the server-side session)."""
    try:
        conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        conn.commit()
        conn.close()
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()


def _name(duty: int) -> str:
    try:
        return Duty(duty).name.lower()
    except ValueError:
        return f"storage_migration[{duty - Duty.STORAGE_MIGRATION}]"


@contextlib.contextmanager
def first_start(db: Database) -> Iterator[None]:
    """Controllers starting together migrate and bootstrap one after the other (PostgreSQL):
    the second finds the schema current and the first start done."""
    if not clustered(db):
        yield
        return
    conn = db.engine.connect()
    try:
        conn.execute(
            text("SELECT pg_advisory_lock(:space, :key)"),
            {"space": LOCK_SPACE, "key": int(Duty.FIRST_START)},
        )
        conn.commit()
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()
        conn.close()
        raise
    try:
        yield
    finally:
        _unlock_all_and_close(conn)


class MigrationLock:
    """The lock of one running storage migration, held by its worker thread's session."""

    def __init__(self, db: Database, key: int) -> None:
        self._db = db
        self._key = key
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        """True: this process runs it now; False: another controller does (nothing held)."""
        if not clustered(self._db):
            return True
        conn = self._db.engine.connect()
        try:
            _server_keepalive(conn)
            got = _try_lock(conn, self._key)
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(
                text("SELECT pg_advisory_unlock(:space, :key)"),
                {"space": LOCK_SPACE, "key": self._key},
            )
            conn.commit()
            conn.close()
        except Exception:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()


def parse_nodes(payload: str) -> tuple[str, set[int]] | None:
    """`sender:id,id` → (sender, ids); None for anything else."""
    sender, _, rest = payload.partition(":")
    try:
        return sender, {int(part) for part in rest.split(",") if part}
    except ValueError:
        return None


def parse_agents(payload: str) -> tuple[str, str, set[int]] | None:
    """`sender:open|closed:id,id` → (sender, kind, ids); None for anything else."""
    sender, _, rest = payload.partition(":")
    kind, _, ids = rest.partition(":")
    if kind not in ("open", "closed"):
        return None
    try:
        return sender, kind, {int(part) for part in ids.split(",") if part}
    except ValueError:
        return None


def agent_payloads(sender: str, kind: str, node_ids: Iterable[int]) -> list[str]:
    prefix = f"{sender}:{kind}:"
    payloads: list[str] = []
    current: list[str] = []
    size = len(prefix)
    for node_id in sorted(node_ids):
        item = str(node_id)
        if current and size + len(item) + 1 > MAX_NOTIFY_PAYLOAD:
            payloads.append(prefix + ",".join(current))
            current, size = [], len(prefix)
        current.append(item)
        size += len(item) + 1
    if current:
        payloads.append(prefix + ",".join(current))
    return payloads


def health_payload(sender: str, node_id: int, roles: dict[str, tuple[str, str | None]]) -> str:
    """`sender:node:{"code": [state, message]}`, messages shortened to fit one notification."""
    budget = 600
    while True:
        body = json.dumps(
            {
                code: [state, (message or "")[:budget] or None]
                for code, (state, message) in roles.items()
            },
            separators=(",", ":"),
        )
        payload = f"{sender}:{node_id}:{body}"
        if len(payload.encode()) <= MAX_NOTIFY_PAYLOAD or budget == 0:
            return payload
        budget //= 2


def parse_health(payload: str) -> tuple[str, int, dict[str, tuple[str, str | None]]] | None:
    sender, _, rest = payload.partition(":")
    node, _, body = rest.partition(":")
    try:
        decoded = json.loads(body)
        roles = {
            str(code): (str(value[0]), None if value[1] is None else str(value[1]))
            for code, value in decoded.items()
        }
        return sender, int(node), roles
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg's connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Cluster:
    """This controller's link to the others (PostgreSQL only): LISTENs for node changes and
    channel opens/closes of the other controllers, and announces its own opens/closes.

    `on_nodes(ids)` is called (in the event loop) with the nodes another controller changed;
    `on_agents(sender, kind, ids)` with the channels another controller opened or closed;
    `local_channels()` answers the nodes whose channels this process holds (announced again,
    and all woken, after the listening connection was lost and regained)."""

    def __init__(
        self,
        db: Database,
        *,
        on_nodes: Callable[[set[int]], None],
        on_agents: Callable[[str, str, set[int]], None],
        local_channels: Callable[[], set[int]],
        on_health: Callable[[int, dict[str, tuple[str, str | None]]], None] | None = None,
    ) -> None:
        self._db = db
        self._on_nodes = on_nodes
        self._on_agents = on_agents
        self._on_health = on_health
        self._local_channels = local_channels
        self._queued: dict[str, set[int]] = {"open": set(), "closed": set()}
        self._health: dict[int, dict[str, tuple[str, str | None]]] = {}
        self._queued_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()  # the listener is up (tests wait for it)
        self.received = 0  # notifications from other controllers, for the metrics

    @property
    def instance(self) -> str:
        return self._db.instance

    def announce(self, kind: str, node_id: int) -> None:
        """In the event loop: a channel of this process opened or closed."""
        other = "closed" if kind == "open" else "open"
        self._queued[other].discard(node_id)
        self._queued[kind].add(node_id)
        if self._queued_event is not None:
            self._queued_event.set()

    def share_health(self, node_id: int, roles: dict[str, tuple[str, str | None]]) -> None:
        """Thread-safe: the role health an agent of this controller reported, for the others
        to show (the events of its changes are recorded here, once)."""
        loop, event = self._loop, self._queued_event
        if loop is None or event is None or loop.is_closed():
            return

        def queue() -> None:
            self._health[node_id] = roles
            event.set()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue)

    async def run(self) -> None:
        """Listen and announce until cancelled, reconnecting with backoff."""
        import psycopg
        from psycopg.conninfo import make_conninfo

        self._queued_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        delay = 0.5
        first = True
        while True:
            try:
                # client-side keepalive: a database that vanished is noticed while listening
                conninfo = make_conninfo(libpq_url(self._db.url), **KEEPALIVE)
                listen = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                try:
                    talk = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                except BaseException:
                    await listen.close()
                    raise
            except Exception as exc:
                log.warning("cluster: cannot listen (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP)
                continue
            try:
                async with listen, talk:
                    await listen.execute(f"LISTEN {NODES_CHANNEL}")
                    await listen.execute(f"LISTEN {AGENTS_CHANNEL}")
                    await listen.execute(f"LISTEN {HEALTH_CHANNEL}")
                    if not first:  # notifications may have been missed meanwhile
                        mine = self._local_channels()
                        self._on_nodes(mine)
                        self._queued["open"] |= mine
                        self._queued_event.set()
                    first = False
                    delay = 0.5
                    self.connected.set()
                    log.info("cluster: listening as %s", self.instance)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._listen(listen))
                        group.create_task(self._announce(talk))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.connected.clear()
                cause = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc
                log.warning("cluster: link lost (%s); reconnecting", cause)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP)

    async def _listen(self, conn: object) -> None:
        async for notice in conn.notifies():  # type: ignore[attr-defined]
            self._dispatch(notice.channel, notice.payload)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == NODES_CHANNEL:
            parsed = parse_nodes(payload)
            if parsed is not None and parsed[0] != self.instance:
                self.received += 1
                self._on_nodes(parsed[1])
        elif channel == AGENTS_CHANNEL:
            agents = parse_agents(payload)
            if agents is not None and agents[0] != self.instance:
                self.received += 1
                self._on_agents(*agents)
        elif channel == HEALTH_CHANNEL and self._on_health is not None:
            health = parse_health(payload)
            if health is not None and health[0] != self.instance:
                self.received += 1
                self._on_health(health[1], health[2])

    async def _announce(self, conn: object) -> None:
        assert self._queued_event is not None
        while True:
            await self._queued_event.wait()
            self._queued_event.clear()
            for kind in ("closed", "open"):
                ids, self._queued[kind] = self._queued[kind], set()
                for payload in agent_payloads(self.instance, kind, ids):
                    await conn.execute(  # type: ignore[attr-defined]
                        "SELECT pg_notify(%s, %s)", (AGENTS_CHANNEL, payload)
                    )
            reports, self._health = self._health, {}
            for node_id, roles in reports.items():
                await conn.execute(  # type: ignore[attr-defined]
                    "SELECT pg_notify(%s, %s)",
                    (HEALTH_CHANNEL, health_payload(self.instance, node_id, roles)),
                )
            await asyncio.sleep(ANNOUNCE_SECONDS)
