"""How an agent paces its reconnects: the controller's `Retry-After` on a 503 (load shedding)
and its advertised reconnect window after a healthy channel was lost (agent/runner.py)."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from voipcloud import protocol
from voipcloud.agent import runner
from voipcloud.agent.runner import Backoff, retry_after, retry_after_delay


def refused(status: int, **headers: str) -> InvalidStatus:
    return InvalidStatus(Response(status, "refused", Headers(headers), b""))


@pytest.mark.parametrize(
    ("status", "value", "seconds"),
    [
        (503, "7", 7.0),
        (503, " 12 ", 12.0),
        (503, "0", 0.0),
        (503, "2.5", 2.5),
        (503, str(10**9), float(protocol.RETRY_AFTER_MAX)),  # clamped
        (503, "Wed, 21 Oct 2026 07:28:00 GMT", None),  # a date: the agent's own backoff
        (503, "-3", None),
        (503, "nan", None),
        (503, "", None),
        (429, "7", None),  # only the controller's shedding answer
        (403, "7", None),
    ],
)
def test_retry_after_is_read_from_a_503_only(
    status: int, value: str, seconds: float | None
) -> None:
    headers = {"Retry-After": value} if value else {}
    assert retry_after(refused(status, **headers)) == seconds


def test_the_agent_waits_retry_after_plus_at_most_the_jitter() -> None:
    delays = [retry_after_delay(5.0) for _ in range(2000)]
    assert min(delays) >= 5.0
    assert max(delays) <= 5.0 + protocol.RETRY_AFTER_JITTER
    assert max(delays) - min(delays) > 0.5 * protocol.RETRY_AFTER_JITTER  # jittered


def test_after_a_healthy_channel_the_first_attempt_spreads_over_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceilings: list[float] = []
    monkeypatch.setattr(runner.random, "uniform", lambda low, high: ceilings.append(high) or high)
    backoff = Backoff(window=16.0)
    for _ in range(4):
        backoff.next_delay()
    # the first attempt over the whole window; the next ones double from the base again
    assert ceilings == [16.0, 2.0, 4.0, 8.0]
    backoff.reset()
    backoff.window = 64.0  # never beyond the protocol's cap
    backoff.next_delay()
    assert ceilings[-1] == protocol.RECONNECT_CAP
    backoff.reset()
    backoff.window = None  # an older controller sends none: the backoff as before
    backoff.next_delay()
    assert ceilings[-1] == protocol.RECONNECT_BASE


def test_first_delays_over_a_window_are_uniform() -> None:
    window = 8.0
    delays = [Backoff(window=window).next_delay() for _ in range(4000)]
    assert min(delays) >= 0
    assert max(delays) <= window
    # a quarter of the window holds about a quarter of the agents (not a herd at 0)
    share = sum(1 for d in delays if d < window / 4) / len(delays)
    assert 0.2 < share < 0.3
