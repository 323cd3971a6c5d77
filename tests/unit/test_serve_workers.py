"""`serve --workers`: when the parent starts a dead worker again, and when it gives up; what is
refused on SQLite (voipcloud.cli.workers)."""

from __future__ import annotations

import socket
from pathlib import Path

from voipcloud.cli.workers import RestartPolicy, Restarts, port_taken, sqlite_refusal
from voipcloud.config import Settings

POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, stable_after=30.0, give_up_after=3)


def test_deaths_in_a_row_double_the_delay_up_to_the_cap() -> None:
    restarts = Restarts(POLICY)
    delays = [restarts.died(was_ready=True, ready_for=1.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_stable_run_brings_the_delay_back_to_the_first() -> None:
    restarts = Restarts(POLICY)
    for _ in range(4):
        restarts.died(was_ready=True, ready_for=1.0)
    assert restarts.died(was_ready=True, ready_for=30.0) == 0.5
    assert restarts.died(was_ready=True, ready_for=29.0) == 1.0


def test_dying_before_ready_gives_up_after_the_limit() -> None:
    restarts = Restarts(POLICY)
    assert restarts.died(was_ready=False, ready_for=0.0) == 0.5
    assert restarts.died(was_ready=False, ready_for=0.0) == 1.0
    assert restarts.died(was_ready=False, ready_for=0.0) is None


def test_a_ready_run_resets_the_count_towards_giving_up() -> None:
    restarts = Restarts(POLICY)
    restarts.died(was_ready=False, ready_for=0.0)
    restarts.died(was_ready=False, ready_for=0.0)
    assert restarts.died(was_ready=True, ready_for=2.0) is not None  # it got ready once
    assert restarts.died(was_ready=False, ready_for=0.0) is not None
    assert restarts.died(was_ready=False, ready_for=0.0) is not None
    assert restarts.died(was_ready=False, ready_for=0.0) is None


def test_sqlite_is_refused_above_one_worker(tmp_path: Path) -> None:
    assert sqlite_refusal(Settings(data_dir=tmp_path, workers=1)) is None
    refusal = sqlite_refusal(Settings(data_dir=tmp_path, workers=2))
    assert refusal is not None
    assert "needs PostgreSQL" in refusal
    assert "one writer" in refusal
    url = "postgresql+psycopg://voipcloud@127.0.0.1/voipcloud"
    assert sqlite_refusal(Settings(data_dir=tmp_path, workers=4, database_url=url)) is None


def test_a_port_someone_listens_on_is_seen_as_taken() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert port_taken("127.0.0.1", port) is not None
    assert port_taken("127.0.0.1", port) is None
