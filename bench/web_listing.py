"""How long the web Node Listing takes to render its first page with 10,000 nodes.

Creates a temporary controller (SQLite in a temporary data dir by default, or
--database-url), fills it with N nodes written straight through the store in one transaction
(a realistic mix: every status, one to three roles, ~200 reported components per node, as a
real agent reports), then serves the whole app on 127.0.0.1 and times, signed in as the
administrator over real HTTP:

- GET /                      the Cloud Management page, first page of the listing (25 rows)
- GET /?sort=-hostname       sorted by hostname, descending
- GET /?q=node-0042          a search
- GET /?status=Online&role=sip  filters
- GET /nodes/listing?fp=...  the live-update poll when nothing changed (answers 204)

and, without HTTP, the server-side work of the first page alone (query + view model +
template). The page is cut in SQL (LIMIT/OFFSET with a COUNT), so its cost should not grow
with N. Prints figures; never passes or fails. Usage:

    .venv/bin/python bench/web_listing.py [--nodes 10000] [--requests 50] [--database-url URL]
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import serve_in_thread

from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.controller import Controller
from voipcloud.store import nodes as node_rows
from voipcloud.store.tables import nodes, role_assignments
from voipcloud.web import views
from voipcloud.web.templating import templates

PASSWORD = "bench-admin-password"
ROLE_SETS = (("sip",), ("pbx", "jabber"), ("wk",), ("sql", "dd", "es"), ("que",), ("web",))
STATUSES = [s for s in NodeStatus if s is not NodeStatus.DELETED]


def fill(controller: Controller, count: int) -> float:
    """N nodes and their roles in a few multi-row statements (the services would take minutes)."""
    started = time.perf_counter()
    components = [{"name": f"package-{i:03d}", "version": f"1.{i}.0-1"} for i in range(200)]
    now = controller.ctx.clock()
    with controller.ctx.db.write() as conn:
        first_id = (conn.execute(select(func.max(nodes.c.id))).scalar() or 0) + 1
        node_values, role_values = [], []
        for number in range(count):
            node_id = first_id + number
            node_values.append(
                {
                    "id": node_id,
                    "hostname": f"node-{number:05d}",
                    "private_ip": f"10.{number // 65536}.{number // 256 % 256}.{number % 256}",
                    "public_ip": f"203.0.{number // 256 % 256}.{number % 256}",
                    "status": STATUSES[number % len(STATUSES)].value,
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
                for role in ROLE_SETS[number % len(ROLE_SETS)]
            )
        for start in range(0, count, 1000):
            conn.execute(insert(nodes), node_values[start : start + 1000])
        conn.execute(insert(role_assignments), role_values)
        # the agents' last-seen times through the store (their own rows since migration 0015)
        node_rows.touch_last_seen(conn, {first_id + number: now for number in range(count)})
    return time.perf_counter() - started


class ServerClock:
    """ASGI middleware: how long the server spent on each request, first byte in to last out."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # serve_in_thread reads the app's settings from it
        self.samples: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.samples.append((time.perf_counter() - started) * 1000)


def timed(
    call: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    for _ in range(3):  # warm up
        call()
    samples = []
    for _ in range(repeats):
        started = clock()
        call()
        samples.append((clock() - started) * 1000)
    return samples


def served(server: ServerClock, call: Callable[[], object], repeats: int) -> list[float]:
    """The server's own time for each of `repeats` calls (after a warm-up)."""
    for _ in range(3):
        call()
    server.samples.clear()
    for _ in range(repeats):
        call()
    return list(server.samples)


def report(what: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"  {what:<44} p50 {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   "
        f"max {ordered[-1]:7.1f} ms"
    )


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no login form"
    answer = client.post(
        "/login",
        data={"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    answer.raise_for_status()
    assert "Node Listing" in answer.text, "sign-in failed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir), database_url=args.database_url, admin_password=PASSWORD
        )
        app = create_app(settings)
        controller: Controller = app.state.controller
        clock = ServerClock(app)
        with serve_in_thread(clock) as url:  # type: ignore[arg-type]
            seconds = fill(controller, args.nodes)
            print(
                f"voipcloud web listing: {args.nodes} nodes on {controller.ctx.db.dialect} "
                f"(filled in {seconds:.1f} s); {args.requests} requests each\n"
            )
            with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as client:
                sign_in(client)
                first = client.get("/")
                rows = first.text.count('data-node-id="')
                print(f"  first page: {rows} rows, {len(first.content) // 1024} KiB of HTML\n")
                print("server time per request (ASGI in to out; client-side in brackets):")
                for what, path in (
                    ("GET / (first page)", "/"),
                    ("GET /?sort=-hostname", "/?sort=-hostname"),
                    ("GET /?q=node-0042 (search)", "/?q=node-0042"),
                    ("GET /?status=Online&role=sip", "/?status=Online&role=sip"),
                    ("GET /?page=200 (deep page)", "/?page=200"),
                ):
                    request = functools.partial(client.get, path)
                    report(what, served(clock, request, args.requests))
                    report("  [client, over loopback]", timed(request, args.requests))
                fingerprint = re.search(r"fp=([0-9a-f]+)", first.text)
                assert fingerprint
                poll = functools.partial(
                    client.get,
                    f"/nodes/listing?fp={fingerprint.group(1)}",
                    headers={"HX-Request": "true"},
                )
                report(
                    f"GET /nodes/listing (live poll, {poll().status_code})",
                    served(clock, poll, args.requests),
                )

            print("\nin-process, no HTTP, first page (wall time; CPU time of this thread):")
            wanted = views.ListingRequest()
            build = functools.partial(views.listing, controller, wanted)
            report("query + view model", timed(build, args.requests))
            report("  [CPU]", timed(build, args.requests, time.thread_time))
            template = templates.get_template("cloud/_listing.html")
            context = {"listing": build(), "csrf_field": lambda: "", "csrf_token": ""}
            draw = functools.partial(template.render, context)
            report("template (listing fragment)", timed(draw, args.requests))
            report("  [CPU]", timed(draw, args.requests, time.thread_time))
    print("\ngoal: the first page under 150 ms of server time")


if __name__ == "__main__":
    main()
