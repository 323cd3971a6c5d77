"""Load shedding of agent channel opens: the bound, the Retry-After schedule, the measured
rate, and the reconnect window advertised to agents (services/admission.py)."""

from __future__ import annotations

import math

import pytest

from voipcloud import protocol
from voipcloud.services.admission import RATE_FLOOR, Admission, reconnect_window


def no_jitter(low: float, high: float) -> float:
    return low


def test_the_bound_admits_up_to_the_limit_then_refuses_with_retry_after() -> None:
    admission = Admission(3, open_rate=100.0, uniform=no_jitter)
    assert [admission.try_enter(0.0) for _ in range(3)] == [None, None, None]
    assert admission.in_progress == 3
    refused = admission.try_enter(0.0)
    assert isinstance(refused, int)
    assert refused >= 1
    assert admission.refused == 1
    assert admission.in_progress == 3  # a refusal holds nothing
    admission.leave(0.1, opened=True)
    assert admission.try_enter(0.1) is None  # a freed slot is taken again


def test_refused_agents_get_slots_spread_at_the_open_rate_after_the_backlog() -> None:
    rate = 50.0
    admission = Admission(100, open_rate=rate, uniform=no_jitter)
    for _ in range(100):
        assert admission.try_enter(0.0) is None
    waits = [admission.try_enter(0.0) for _ in range(500)]
    assert all(isinstance(w, int) for w in waits)
    # the backlog of 100 drains in 2 s: the first refused comes back after it
    assert waits[0] == 2
    # then `rate` agents per second of slot: never more told the same second (one more at
    # most where the floating-point slots straddle a second's boundary)
    counts: dict[int, int] = {}
    for wait in waits:
        assert wait is not None
        counts[wait] = counts.get(wait, 0) + 1
    assert max(counts.values()) <= rate + 1
    assert waits == sorted(waits)
    # 500 agents at 50/s after a 2 s backlog: the last slot is about 12 s out
    assert abs(waits[-1] - math.ceil(2 + 499 / rate)) <= 1


def test_jitter_never_makes_the_wait_shorter_and_the_answer_is_whole_seconds() -> None:
    admission = Admission(1, open_rate=10.0, uniform=lambda low, high: high)
    admission.try_enter(0.0)
    first = admission.try_enter(0.0)
    # the backlog (1 at 10/s = 0.1 s) plus the full second of jitter, rounded up
    assert first == 2


def test_retry_after_is_clamped() -> None:
    admission = Admission(1, open_rate=RATE_FLOOR, max_retry_after=7, uniform=no_jitter)
    admission.try_enter(0.0)
    waits = [admission.try_enter(0.0) for _ in range(200)]
    assert max(w for w in waits if w is not None) == 7
    assert min(w for w in waits if w is not None) >= 1


def test_the_rate_is_measured_over_saturated_seconds_only() -> None:
    admission = Admission(10, open_rate=400.0, uniform=no_jitter)
    # an unsaturated second (few agents): the configured rate stays
    admission.try_enter(0.0)
    admission.leave(0.5, opened=True)
    admission.try_enter(1.2)
    assert admission.rate == 400.0
    admission.leave(1.3, opened=True)
    # saturated seconds where 20 channels a second complete: the rate moves towards 20
    t = 2.0
    for _second in range(20):
        for _ in range(10):
            assert admission.try_enter(t) is None
        assert admission.try_enter(t) is not None  # at the bound: saturated
        for i in range(10):
            admission.leave(t + 0.05 * i, opened=True)
        for _ in range(10):
            admission.try_enter(t + 0.5)
        for i in range(10):
            admission.leave(t + 0.5 + 0.04 * i, opened=True)
        t += 1.0
    admission.try_enter(t + 0.01)  # closes the last second
    assert 19.0 <= admission.rate <= 25.0
    # measured below the configured rate (completions come in batches): the slots still
    # follow the configured rate, never leaving the controller idle
    slow = Admission(1, open_rate=100.0, uniform=no_jitter)
    slow.rate = 20.0
    slow.try_enter(0.0)
    waits = [slow.try_enter(0.0) for _ in range(300)]
    assert waits[-1] == 3  # 300 agents at 100/s, not 15 s at 20/s


def test_a_controller_faster_than_configured_gives_shorter_waits() -> None:
    fast = Admission(1, open_rate=100.0, uniform=no_jitter)
    fast.rate = 1000.0  # measured
    fast.try_enter(0.0)
    waits = [fast.try_enter(0.0) for _ in range(3000)]
    assert waits[-1] == 3


def test_a_failed_handshake_frees_its_slot_but_is_not_counted_as_opened() -> None:
    admission = Admission(1, open_rate=100.0)
    admission.try_enter(0.0)
    admission.leave(0.1, opened=False)
    assert admission.in_progress == 0
    assert admission.opened == 0


@pytest.mark.parametrize(
    ("fleet", "rate", "window"),
    [
        (0, 400.0, protocol.RECONNECT_BASE),
        (10, 400.0, protocol.RECONNECT_BASE),
        (400, 400.0, protocol.RECONNECT_BASE),
        (401, 400.0, 2.0),
        (1_000, 400.0, 3.0),
        (3_000, 400.0, 8.0),
        (10_000, 400.0, 25.0),
        (12_001, 400.0, protocol.RECONNECT_CAP),
        (50_000, 400.0, protocol.RECONNECT_CAP),
        (50_000, 1e9, protocol.RECONNECT_BASE),
    ],
)
def test_the_reconnect_window_scales_with_the_fleet_within_the_protocols_bounds(
    fleet: int, rate: float, window: float
) -> None:
    assert reconnect_window(fleet, rate) == window
    assert protocol.RECONNECT_BASE <= window <= protocol.RECONNECT_CAP
