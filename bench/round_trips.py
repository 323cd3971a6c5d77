"""What a transaction costs on PostgreSQL, in round trips: the figures behind the listing's ninth
pass (docs/benchmarks.md). Each case runs `--runs` times after a warm-up, on a private database
of the server named by --postgres-url (dropped afterwards), and prints its median in µs:

- a raw psycopg round trip (`SELECT 1`, autocommit): the floor;
- one statement in a transaction through SQLAlchemy, with `pool_pre_ping` (a ping at every
  checkout: what the controller did until 2026-12-02) and without it;
- one statement outside a transaction (autocommit: `Database.lookup()`, the session lookup);
- five statements in one transaction, without the ping: what each further statement adds;
- one statement through the controller's own `Database.read()` and `Database.lookup()` (the
  pool pings a connection only after it sat idle for a second).

Never passes or fails. Usage:

    .venv/bin/python bench/round_trips.py [--runs 2000]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, literal, make_url, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import private_database

from voipcloud.store.database import Database

ONE = select(literal(1))


def median_us(call: Callable[[], object], runs: int) -> float:
    for _ in range(min(200, runs)):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return round(statistics.median(samples), 1)


def _through_sqlalchemy(url: str, runs: int, *, pinged: bool) -> dict[str, float]:
    engine = create_engine(url, pool_pre_ping=pinged)
    label = "with pool_pre_ping" if pinged else "no ping"

    def one() -> None:
        with engine.begin() as conn:
            conn.execute(ONE).scalar()

    def autocommit() -> None:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(ONE).scalar()

    def five() -> None:
        with engine.begin() as conn:
            for _ in range(5):
                conn.execute(ONE).scalar()

    try:
        figures = {
            f"one statement in a transaction, {label}": median_us(one, runs),
            f"one statement, autocommit, {label}": median_us(autocommit, runs),
        }
        if not pinged:
            figures["five statements in a transaction, no ping"] = median_us(five, runs)
        return figures
    finally:
        engine.dispose()


def measure(url: str, runs: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    plain = make_url(url).set(drivername="postgresql")
    raw = psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True)
    try:
        figures["raw psycopg round trip"] = median_us(
            lambda: raw.execute("SELECT 1").fetchone(), runs
        )
    finally:
        raw.close()
    for pinged in (True, False):
        figures |= _through_sqlalchemy(url, runs, pinged=pinged)
    db = Database(url)
    try:

        def read() -> None:
            with db.read() as conn:
                conn.execute(ONE).scalar()

        def lookup() -> None:
            with db.lookup() as conn:
                conn.execute(ONE).scalar()

        figures["Database.read(), one statement"] = median_us(read, runs)
        figures["Database.lookup(), one statement"] = median_us(lookup, runs)
    finally:
        db.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "VOIPCLOUD_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    with private_database(args.postgres_url) as url:
        figures = measure(url, args.runs)
    result: dict[str, Any] = {"runs": args.runs, "load": os.getloadavg(), "median_us": figures}
    for what, value in figures.items():
        print(f"  {what:<52} {value:8.1f} µs")
    print(f"  (load average {os.getloadavg()[0]:.2f}, {args.runs} runs each)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
