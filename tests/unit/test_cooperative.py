"""services/cooperative.py: long loops of the duty threads pause every so many items, and
give the interpreter to a thread that waits for it."""

from __future__ import annotations

import sys
import threading

import pytest
from sqlalchemy import create_engine, text

from voipcloud.services import cooperative


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each pause, as the number of items handed out before it."""
    taken: list[int] = []
    monkeypatch.setattr(cooperative, "pause", lambda: taken.append(len(handed)))
    handed.clear()
    return taken


handed: list[object] = []


def test_rows_come_in_order_with_a_pause_after_each_part(pauses: list[int]) -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (:n)"), [{"n": n} for n in range(23)])
        for row in cooperative.rows(conn.execute(text("SELECT n FROM t ORDER BY n")), every=10):
            handed.append(row.n)
    assert handed == list(range(23))
    assert pauses == [10, 20, 23]  # after each part, the last one short


def test_items_pause_after_every_so_many(pauses: list[int]) -> None:
    for item in cooperative.items("abcdefg", every=3):
        handed.append(item)
    assert handed == list("abcdefg")
    assert pauses == [3, 6]
    handed.clear()
    pauses.clear()
    assert list(cooperative.items([], every=3)) == []
    assert pauses == []


def _loop_with_a_waiter(loop: object) -> list[int]:
    """Where in `loop` (200,000 items of some work of the interpreter's own) a thread, woken
    at item 1,000, first ran; the switch interval made longer than the loop, so that only a
    pause can let it in before the loop ends."""
    released = threading.Event()
    ran_at: list[int] = []
    position = [0]

    def waiter() -> None:
        released.wait()
        ran_at.append(position[0])

    interval = sys.getswitchinterval()
    thread = threading.Thread(target=waiter)
    thread.start()
    sys.setswitchinterval(30.0)
    try:
        for number in loop:  # type: ignore[attr-defined]
            position[0] = number
            if number == 1_000:
                released.set()
            sum(range(20))
    finally:
        sys.setswitchinterval(interval)
        released.set()
        thread.join(timeout=10)
    return ran_at


def test_a_pause_lets_a_waiting_thread_run() -> None:
    """The waiting thread runs during the loop's pauses (at the first one after it woke,
    unless the machine is too busy to wake it in time: then at a later one); a plain loop
    (checked here too) keeps it out until it ends."""
    during = _loop_with_a_waiter(cooperative.items(range(200_000), every=1_000))
    assert during, "the waiting thread never ran"
    assert 1_000 <= during[0] < 199_000, during
    after = _loop_with_a_waiter(iter(range(200_000)))
    assert after == [199_999], after
