"""Load shedding for agent channels: a bound on handshakes in progress, and when to come back.

A channel's handshake is in progress from its WebSocket upgrade until its first desired state
was sent (credential check, hello, first desired state: the part that costs the controller).
At most `limit` are in progress; beyond that the upgrade is answered with HTTP 503 and a
`Retry-After` before any database work (api/agent_channel.py).

Choosing Retry-After: the backlog in progress drains at the controller's open rate, and every
refused agent is given a slot of its own after it, one slot per 1/rate seconds (a virtual
schedule: `_next_slot`), so the refused come back spread at the rate the controller opens
channels instead of all at once when the first wait ends. The rate is measured: opens
completed per second, smoothed, over the seconds in which the bound was reached (when the
controller was the limit, not the agents); but never taken below the configured `open_rate`:
completions come in batches (a second without any is common while a batch is read), and an
agent told to come back too early costs one more 503 (about 0.4 ms), while one told too late
leaves the controller idle. The answer is whole seconds (RFC 9110), rounded up after adding
uniform(0, 1) so agents given the same slot second still differ; the agent adds its own jitter
too.

`reconnect_window` is the other half: what a controller advertises to agents (feature
"reconnect-window") so that after losing their channels together (a controller restart, a
crash) they spread their first attempts over the time the fleet needs at that rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from voipcloud import protocol

SMOOTHING = 0.3  # weight of the latest saturated second in the measured rate
RATE_FLOOR = 5.0  # channels/s: never assume less (a stalled second is not the capacity)


def reconnect_window(fleet: int, open_rate: float) -> float:
    """Seconds over which `fleet` agents should spread a reconnect to controllers opening
    `open_rate` channels per second, in whole seconds (the value is part of the desired state:
    it moves only when the fleet grows by `open_rate` agents), at least RECONNECT_BASE and at
    most RECONNECT_CAP (an agent still comes back within the protocol's cap; a fleet larger
    than the cap allows is paced by Retry-After)."""
    seconds = math.ceil(fleet / max(open_rate, 1.0))
    return float(min(protocol.RECONNECT_CAP, max(protocol.RECONNECT_BASE, seconds)))


class Admission:
    def __init__(
        self,
        limit: int,
        *,
        open_rate: float,
        max_retry_after: int = protocol.RETRY_AFTER_MAX,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.limit = limit
        self.open_rate = float(open_rate)  # configured: the slots are never slower than this
        self.rate = float(open_rate)  # measured channels/s (the configured one until then)
        self.max_retry_after = max_retry_after
        self.in_progress = 0
        self.refused = 0  # upgrades answered 503 since start
        self.opened = 0  # handshakes completed since start
        self._uniform = uniform
        self._next_slot = 0.0  # loop time of the next free slot for a refused agent
        self._second = 0.0  # start of the current measuring second
        self._count = 0  # handshakes completed in it
        self._saturated = False  # the bound was reached in it

    def try_enter(self, now: float) -> int | None:
        """None: admitted (call `leave` exactly once later); else the Retry-After seconds."""
        self._tick(now)
        if self.in_progress < self.limit:
            self.in_progress += 1
            if self.in_progress >= self.limit:
                self._saturated = True
            return None
        self._saturated = True
        self.refused += 1
        return self.retry_after(now)

    def leave(self, now: float, *, opened: bool) -> None:
        self._tick(now)
        self.in_progress = max(0, self.in_progress - 1)
        if opened:
            self.opened += 1
            self._count += 1

    def retry_after(self, now: float) -> int:
        """Whole seconds until this refused agent's slot (see the module's docstring)."""
        rate = max(self.rate, self.open_rate, RATE_FLOOR)
        drained = now + self.in_progress / rate  # when the handshakes in progress are done
        slot = max(drained, self._next_slot)
        self._next_slot = slot + 1.0 / rate
        wait = slot - now + self._uniform(0.0, 1.0)
        return max(1, min(self.max_retry_after, math.ceil(wait)))

    def _tick(self, now: float) -> None:
        if now < self._second + 1.0:
            return
        if self._saturated and now < self._second + 2.0:  # a whole second just ended
            self.rate = (1 - SMOOTHING) * self.rate + SMOOTHING * max(self._count, RATE_FLOOR)
        self._second = now if now >= self._second + 2.0 else self._second + 1.0
        self._count = 0
        self._saturated = self.in_progress >= self.limit
