"""The cyclic garbage collector of a process that holds tens of thousands of agent channels.

CPython's collector stops the whole process while it walks a generation, and a full
(generation 2) collection walks every object that ever got old: with 10,000 open channels
a worker tracks a few million objects, and its full collections took 0.1 to 2.8 s each (measured
with a `gc.callbacks` probe in `bench/agents_load.py` runs on `serve --workers 2`, 20,000
agents: 16 full collections in one worker's life, 13 over 100 ms, up to 2.1 s; 28 of them in
two minutes of a mass reconnect, 26 s of stopped event loop in all). An administrator's push
that arrives during one waits for it: that was the push p99 (1.6 s at 50,000 agents).

The policy (`CollectorPolicy`, driven by the app's lifespan):

- **After start-up**, everything alive (modules, the application, its caches) is collected
  once and frozen (`gc.freeze`): the collector never walks it again.
- **Every `TICK_SECONDS`, when channels opened since the last look**, the young generations
  are collected (cheap: only what was allocated since) and what survived is frozen. An open
  channel's objects are long-lived by nature, so generation 2 holds only what became old in
  the last few seconds, and a full collection stays short.
- **Frozen objects are still freed by reference counting** when a channel closes; only
  reference cycles among frozen objects wait. When more than `THAW_FRACTION` of the channels
  frozen since the last thaw have closed (and at most once every `THAW_MIN_SECONDS`), the
  frozen objects are thawed and collected once — one full pause, after a mass close, not on
  every passing allocation — and frozen again.
- **What start-up left to be built later settles too.** A page's compiled template, a new
  statement's compiled form, a route's first call: objects built on first use after start-up
  live as long as the process, but nothing froze them, and every full collection walked them
  again (~0.5 µs an object here). In `bench/listing_scale.py` at 50,000 nodes that was ~20,500
  objects: a pause of 6 to 19 ms every 1.5 s of a busy web interface (0.6 to 1.9 ms once
  settled). Every `SETTLE_CHECK_SECONDS` the old generation is counted; past
  `SETTLE_OBJECTS` it is collected in full (what is garbage goes) and what is left is
  frozen. What is frozen then and becomes cyclic garbage later waits for a thaw; it takes
  `SETTLE_OBJECTS` new long-lived objects to settle again (in that run: a settle of ~20,500
  objects 10 s into serving, then none while the statement cache filled; 683 objects of
  garbage waiting at the end against 622 without settles). A bounded cache that churns would
  turn settled entries into frozen garbage one settle after another: after
  `SETTLES_BEFORE_THAW` settles, the next one is a thaw instead (when the last thaw
  is `THAW_MIN_SECONDS` old), so what waits stays bounded.

Nothing here changes what the program does, only when the collector runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("voipcloud.gc")

TICK_SECONDS = 2.0
THAW_FRACTION = 0.25
THAW_MIN_SECONDS = 60.0
THAW_MIN_CLOSED = 500  # fewer closed channels than this never warrant a full pause
SETTLE_CHECK_SECONDS = 10.0
SETTLE_OBJECTS = 5_000  # unfrozen objects in the old generation that warrant a settle
SETTLES_BEFORE_THAW = 20


@dataclass(slots=True)
class Collections:
    freezes: int = 0
    thaws: int = 0
    last_thaw_seconds: float = 0.0
    settles: int = 0


class CollectorPolicy:
    """`opened()`: channels opened since start (a counter); `open_now()`: channels open."""

    def __init__(
        self,
        opened: Callable[[], int],
        open_now: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._opened = opened
        self._open_now = open_now
        self._clock = clock
        self._opened_at_freeze = 0
        # at the last thaw (or start): channels opened by then, and open then
        self._opened_at_thaw = 0
        self._open_at_thaw = 0
        self._thawed_at = clock()
        self._settle_checked_at = clock()
        self._settles_since_thaw = 0
        self.stats = Collections()

    def started(self) -> None:
        """Start-up is over: what is alive now lives as long as the process."""
        gc.collect()
        gc.freeze()
        self._opened_at_freeze = self._opened_at_thaw = self._opened()
        self._open_at_thaw = self._open_now()
        self._thawed_at = self._settle_checked_at = self._clock()
        log.info("collector: %d start-up objects frozen", gc.get_freeze_count())

    def tick(self) -> None:
        opened = self._opened()
        # since the last thaw: every channel then open or opened since may be frozen; how
        # many of them have closed (each channel opened is either open now or closed)
        population = self._open_at_thaw + (opened - self._opened_at_thaw)
        closed = population - self._open_now()
        if (
            closed >= THAW_MIN_CLOSED
            and closed > THAW_FRACTION * population
            and self._clock() - self._thawed_at >= THAW_MIN_SECONDS
        ):
            self.thaw()
            return
        if opened != self._opened_at_freeze:
            gc.collect(1)
            gc.freeze()
            self._opened_at_freeze = opened
            self.stats.freezes += 1
        if self._clock() - self._settle_checked_at >= SETTLE_CHECK_SECONDS:
            self._settle_checked_at = self._clock()
            self.settle()

    def settle(self) -> bool:
        """Freeze the old generation when enough has grown old there since the last freeze
        (a full collection first, so that only the living are frozen)."""
        if len(gc.get_objects(generation=2)) < SETTLE_OBJECTS:
            return False
        if (
            self._settles_since_thaw >= SETTLES_BEFORE_THAW
            and self._clock() - self._thawed_at >= THAW_MIN_SECONDS
        ):
            self.thaw()
            return True
        gc.collect()
        gc.freeze()
        self._settles_since_thaw += 1
        self.stats.settles += 1
        return True

    def thaw(self) -> None:
        """Collect everything once (cycles among closed channels' objects), freeze again."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        spent = time.perf_counter() - started
        self._opened_at_freeze = self._opened_at_thaw = self._opened()
        self._open_at_thaw = self._open_now()
        self._thawed_at = self._clock()
        self._settles_since_thaw = 0
        self.stats.thaws += 1
        self.stats.last_thaw_seconds = spent
        log.info("collector: thawed and collected %d objects in %.2f s", found, spent)

    async def run(self, started: asyncio.Event) -> None:
        """Once the controller has started, tick until cancelled (in the event loop: the
        collector stops the whole process anyway, and this keeps it out of the threads')."""
        await started.wait()
        self.started()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.tick()
