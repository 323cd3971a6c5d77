"""The Node Listing at 50,000 nodes: search, filters, sorts and the total, on SQLite and PostgreSQL.

For each database (SQLite in a temporary data dir; PostgreSQL in a private database created on
the server named by --postgres-url and dropped afterwards) a temporary controller is filled with
N nodes written straight through the store (every status, 5 % Deleted, one to three roles each,
~200 reported components per node as a real agent reports them; host names such as
`sip-04217.fra1.voip.example`), the app is served on 127.0.0.1 and, signed in as the
administrator over real HTTP, each listing request is made `--requests` times after a warm-up.
It reports the **server time** of each request (ASGI in to out), p50 and p95, beside the same
run's ceiling: `GET /healthz`, an endpoint that touches no database; and the same listing
through the REST API (`GET /api/v1/nodes`, 25 a page: the query and JSON, without the page's
view and HTML). The total alone (what
every poll of the listing pays for its count) is timed in-process. Prints a table and, with
--json, one JSON document. With --beats N, N heartbeats a second are written beside the requests
as the controller's presence flush writes them (5000: a fleet of 50,000 agents beating every
10 s), so that the listing is read as it is beside a live fleet. The requests are timed from
3 s after the app is served, its agent-lost watch's first round done (a one-off after a start,
timed by `watch_rounds.py`). Never passes or fails. Usage:

    .venv/bin/python bench/listing_scale.py [--nodes 50000] [--requests 40] [--only sqlite]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--json FILE]
        [--beats 5000]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import private_database
from tests.support.server import serve_in_thread
from web_listing import PASSWORD, ROLE_SETS, ServerClock, served, sign_in

from voipcloud.api.app import create_app, start
from voipcloud.config import Settings
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.agent_watch import AGENT_LOST
from voipcloud.services.context import CONTROLLER_ACTOR
from voipcloud.services.controller import Controller
from voipcloud.store import kept_counts
from voipcloud.store import nodes as node_rows

try:
    from voipcloud.store import node_search
except ImportError:  # before migration 0008: a COUNT over the rows
    node_search = None  # type: ignore[assignment]
from voipcloud.store.tables import events, nodes, role_assignments

PREFIXES = ("sip", "pbx", "wk", "sql", "que", "web")  # follows ROLE_SETS
SITES = ("fra1", "ams2", "nyc3", "sgp1")
LIVE = [s for s in NodeStatus if s is not NodeStatus.DELETED]

# (label, web listing path): what an administrator does with the listing
REQUESTS = (
    ("first page", "/"),
    ("hostname search, 10 matches (q=sip-0420)", "/?q=sip-0420"),
    ("hostname search, broad (q=fra1: 1/4 of nodes)", "/?q=fra1"),
    ("hostname search, 2 characters (q=42)", "/?q=42"),
    ("private IP search (q=10.0.42.)", "/?q=10.0.42."),
    ("public IP search (q=203.0.113.7)", "/?q=203.0.113.7"),
    ("NodeID search (q=31337)", "/?q=31337"),
    ("status filter (Online)", "/?status=Online"),
    ("status filter (Deleted)", "/?status=Deleted"),
    ("status + role (Online, sip)", "/?status=Online&role=sip"),
    ("role filter (que)", "/?role=que"),
    ("search + status (q=ams2, StandBy)", "/?q=ams2&status=StandBy"),
    ("sort hostname", "/?sort=hostname"),
    ("sort -hostname", "/?sort=-hostname"),
    ("sort status", "/?sort=status"),
    ("sort private_ip", "/?sort=private_ip"),
    ("sort created_at", "/?sort=created_at"),
    ("sort -updated_at", "/?sort=-updated_at"),
    ("sort -last_seen", "/?sort=-last_seen"),
    ("deep page (page=1000)", "/?page=1000"),
    # added with migration 0009: the edges of the paths it chose
    ("hostname search, 1 character (q=4: half the nodes)", "/?q=4"),
    ("hostname search, 2 rare characters (q=zq: none)", "/?q=zq"),
    ("role filter, rare (ic: the controller alone)", "/?role=ic"),
    ("role + sort (que, -hostname)", "/?role=que&sort=-hostname"),
    ("search + sort (q=fra1, -last_seen)", "/?q=fra1&sort=-last_seen"),
    # added with migration 0014: a common role sorted by keys its nodes spread along
    ("role + sort (que, status)", "/?role=que&sort=status"),
    ("role + sort (que, -last_seen)", "/?role=que&sort=-last_seen"),
    ("role + sort, a later page (que, hostname, page=40)", "/?role=que&sort=hostname&page=40"),
)


def api_path(web_path: str) -> str:
    """The same listing through the REST API (`GET /api/v1/nodes`, JSON, 25 a page): the
    query and the nodes' JSON without the web page's view and HTML."""
    query = dict(httpx.QueryParams(web_path.partition("?")[2]))
    page = int(query.pop("page", "1"))
    query |= {"limit": "25", "offset": str((page - 1) * 25)}
    return "/api/v1/nodes?" + str(httpx.QueryParams(query))


def fill(controller: Controller, count: int) -> float:
    """N nodes and their roles in a few multi-row statements (the services would take minutes).

    The nodes have no agent here: each live node's agent was last seen an hour or more ago and
    is recorded lost (an `agent-lost` event), as a controller that has watched them would have
    it. Filled before the app starts, so that the agent-lost watch starts from those events
    instead of finding 50,000 agents lost at once while the requests are timed (it records
    1,000 a round, reading every node each round: 250 s of rounds competing with the pages).
    """
    started = time.perf_counter()
    components = [{"name": f"package-{i:03d}", "version": f"1.{i}.0-1"} for i in range(200)]
    now = controller.ctx.clock()
    gone = now - timedelta(hours=1)
    with controller.ctx.db.write() as conn:
        first_id = (conn.execute(select(func.max(nodes.c.id))).scalar() or 0) + 1
        for start in range(0, count, 1000):
            node_values, role_values, event_values = [], [], []
            for number in range(start, min(count, start + 1000)):
                node_id = first_id + number
                kind = number % len(ROLE_SETS)
                deleted = number % 20 == 7
                node_values.append(
                    {
                        "id": node_id,
                        "hostname": f"{PREFIXES[kind]}-{number:05d}.{SITES[number // 7 % 4]}"
                        ".voip.example",
                        "private_ip": f"10.{number // 65536}.{number // 256 % 256}.{number % 256}",
                        "public_ip": f"203.0.{113 + number // 65536}.{number % 256}"
                        if number % 3
                        else None,
                        "status": NodeStatus.DELETED.value
                        if deleted
                        else LIVE[number % len(LIVE)].value,
                        "is_controller": False,
                        "config_generation": 1,
                        "os": "Debian GNU/Linux 12 (bookworm)",
                        "kernel": "Linux 6.1.0-21-amd64",
                        "agent_version": "0.1.0",
                        "components": components,
                        "created_at": now,
                        "updated_at": now,
                        "row_version": 1,
                    }
                )
                role_values.extend(
                    {
                        "node_id": node_id,
                        "role": role,
                        "parameters": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for role in ROLE_SETS[kind]
                )
                if not deleted:
                    status = node_values[-1]["status"]
                    event_values.append(
                        {
                            "at": gone,
                            "actor": CONTROLLER_ACTOR,
                            "node_id": node_id,
                            "operation": AGENT_LOST,
                            "status_before": status,
                            "status_after": status,
                            "reason": "no heartbeat for 30 s",
                        }
                    )
            conn.execute(insert(nodes), node_values)
            conn.execute(insert(role_assignments), role_values)
            conn.execute(insert(events), event_values)
            # the agents' last-seen times through the store (their own rows since 0015)
            node_rows.touch_last_seen(
                conn, {v["id"]: gone - timedelta(seconds=v["id"] - first_id) for v in node_values}
            )
    if controller.ctx.db.dialect == "postgresql":
        with controller.ctx.db.engine.connect() as conn:  # what autovacuum does after a load
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        # what the served controller's kept-counts compaction has done a minute after the load
        # (two rounds: the folded rows moved to the tables' first page, the rest given back)
        for _ in range(2):
            kept_counts.compact(controller.ctx.db.engine)
    else:
        with controller.ctx.db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    for _ in range(3):
        call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def total(controller: Controller, flt: NodeFilter) -> int:
    """The listing's total alone: the store's own function when it has one (since 0008; since
    0009 a `Total`, counted up to 1,000 for a search)."""
    with controller.ctx.db.read() as conn:
        if node_search is not None:
            found: Any = node_search.total(conn, flt, node_rows._where(flt))
            return int(getattr(found, "count", found))
        where = [nodes.c.status != NodeStatus.DELETED.value]
        if flt.status is not None:
            where = [nodes.c.status == flt.status.value]
        return int(conn.execute(select(func.count()).select_from(nodes).where(*where)).scalar_one())


class Beats:
    """`per_second` heartbeats written as the controller's presence flush writes them (one
    `touch_last_seen` a second, through the store of the code under test), cycling through the
    nodes, while the requests are timed: the listing as it is read beside a fleet of that many
    agents. Stops when the requests end (bounded: at most `limit_s` seconds)."""

    def __init__(self, controller: Controller, per_second: int, limit_s: float = 3600) -> None:
        self.controller, self.per_second, self.limit_s = controller, per_second, limit_s
        self.stop = threading.Event()
        self.written = 0
        self.flush_ms: list[float] = []  # each flush's transaction, commit included
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.controller.ctx.db.read() as conn:
            ids = list(conn.execute(select(nodes.c.id).order_by(nodes.c.id)).scalars())
        position, deadline = 0, time.monotonic() + self.limit_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            chunk = [ids[(position + i) % len(ids)] for i in range(self.per_second)]
            position += self.per_second
            now = self.controller.ctx.clock()
            flushed = time.perf_counter()
            with self.controller.ctx.db.write() as conn:
                node_rows.touch_last_seen(conn, dict.fromkeys(chunk, now))
            self.flush_ms.append((time.perf_counter() - flushed) * 1000)
            self.written += len(chunk)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def __enter__(self) -> Beats:
        if self.per_second:
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.per_second:
            self.thread.join()


SETTLE_S = 3.0


def run(
    label: str, database_url: str | None, count: int, repeats: int, beats: int = 0
) -> dict[str, Any]:
    results: dict[str, Any] = {"database": label, "nodes": count, "requests": [], "beats": beats}
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir), database_url=database_url, admin_password=PASSWORD
        )
        app = create_app(settings)
        controller: Controller = app.state.controller
        clock = ServerClock(app)
        start(controller, settings)  # migrated (the app's start-up does it again: a no-op)
        results["fill_s"] = round(fill(controller, count), 1)
        print(f"{label}: {count} nodes filled in {results['fill_s']} s", file=sys.stderr)
        with serve_in_thread(clock) as url, Beats(controller, beats) as beating:  # type: ignore[arg-type]
            results["load_before"] = os.getloadavg()
            with httpx.Client(base_url=url, timeout=120, follow_redirects=True) as client:
                sign_in(client)
                # the served app's agent-lost watch reads every node's record once after its
                # start (~0.3-0.7 s at 50,000 nodes): a one-off, timed by watch_rounds.py, let
                # pass before the requests are
                time.sleep(SETTLE_S)
                ceiling = summary(served(clock, functools.partial(client.get, "/healthz"), repeats))
                results["ceiling"] = ceiling
                token = client.post(
                    "/api/v1/auth/token", json={"username": "admin", "password": PASSWORD}
                ).json()["access_token"]
                api = {"Authorization": f"Bearer {token}"}
                for what, path in REQUESTS:
                    answer = client.get(path)
                    rows = answer.text.count('data-node-id="')
                    figures = summary(served(clock, functools.partial(client.get, path), repeats))
                    listed = api_path(path)
                    through_api = functools.partial(client.get, listed, headers=api)
                    api_rows = len(through_api().json()["items"])
                    api_figures = summary(served(clock, through_api, repeats))
                    results["requests"].append(
                        {
                            "what": what,
                            "path": path,
                            "rows": rows,
                            **figures,
                            "api": {"path": listed, "rows": api_rows, **api_figures},
                        }
                    )
            for what, flt in (
                ("total, no filter", NodeFilter()),
                ("total, status=Online", NodeFilter(status=NodeStatus.ONLINE)),
                ("total, role=que", NodeFilter(role="que")),
                ("total, q=fra1", NodeFilter(q="fra1")),
            ):
                figures = summary(timed(functools.partial(total, controller, flt), repeats))
                results["requests"].append({"what": what, "path": "(in-process)", **figures})
            results["load_after"] = os.getloadavg()
            results["beats_written"] = beating.written
            if beating.flush_ms:
                results["beat_flush"] = summary(beating.flush_ms)
        controller.ctx.db.dispose()
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        ceiling = result["ceiling"]
        lines.append(
            f"\n{result['database']}, {result['nodes']} nodes, "
            f"{result.get('beats', 0)} beats/s beside ({result.get('beats_written', 0)} written, "
            f"a flush p50 {result.get('beat_flush', {}).get('p50_ms', '-')} ms) "
            f"(load {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after); "
            f"ceiling GET /healthz p50 {ceiling['p50_ms']} ms, p95 {ceiling['p95_ms']} ms"
        )
        lines.append(
            f"  {'request':<50} {'rows':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
            f"   {'API p50':>8} {'API p95':>8} {'API max':>8}"
        )
        for row in result["requests"]:
            api = row.get("api")
            lines.append(
                f"  {row['what']:<50} {row.get('rows', ''):>5} {row['p50_ms']:>8.1f} "
                f"{row['p95_ms']:>8.1f} {row['max_ms']:>8.1f}"
                + (
                    f"   {api['p50_ms']:>8.1f} {api['p95_ms']:>8.1f} {api['max_ms']:>8.1f}"
                    if api
                    else ""
                )
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--beats",
        type=int,
        default=0,
        help="heartbeats a second written beside the requests (5000: 50,000 agents at 10 s)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    results = []
    if args.only in (None, "sqlite"):
        results.append(run("sqlite", None, args.nodes, args.requests, args.beats))
    if args.only in (None, "postgresql"):
        with private_database(args.postgres_url) as url:
            results.append(run("postgresql", url, args.nodes, args.requests, args.beats))
    document = {"uptime": Path("/proc/loadavg").read_text().strip(), "results": results}
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document))
    print(table(results))


if __name__ == "__main__":
    main()
