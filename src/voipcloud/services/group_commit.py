"""Group commit: many callers' writes in one transaction, each caller with its own answer.

A caller awaits `submit(item)`. While one batch is being written (in a worker thread: the
database calls block), the items that arrive meanwhile wait, and the next batch takes them
all (at most `max_batch`): under load, one transaction (one WAL sync on SQLite, one round of
commits on PostgreSQL) serves many callers; alone, a caller's item is written at once, with no
added wait. `write` returns one outcome per item, in order: a value, or the exception that
caller gets (so one caller's refusal never fails another's). An exception of the whole batch
(the database away) goes to each of its callers.

One instance serves one event loop (the server's); used from another loop (a test's client
after the first one closed) it starts a new writer there.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio

log = logging.getLogger("voipcloud.group_commit")

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 256,
        name: str = "group",
    ) -> None:
        self._write = write
        self._max = max_batch
        self._name = name
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # what was written: for the metrics and the benchmarks (batches, items, largest)
        self.batches = 0
        self.items = 0
        self.largest = 0

    async def submit(self, item: T) -> R:
        """Write `item` with whatever else is waiting; its own outcome (or its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._loop is not loop:  # a new loop: the old writer (and its waiters) are gone
            self._loop, self._writer = loop, None
            self._pending = deque()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), name=f"{self._name}-writer")
        return await future

    async def _drain(self) -> None:
        pending = self._pending
        while pending:  # ends when a batch finds nobody waiting behind it
            batch = [pending.popleft() for _ in range(min(self._max, len(pending)))]
            outcomes: Sequence[R | BaseException]
            try:
                outcomes = await anyio.to_thread.run_sync(self._write, [i for i, _ in batch])
                if len(outcomes) != len(batch):  # pragma: no cover - a programming error
                    raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(batch)}")
            except asyncio.CancelledError:
                for _item, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # the whole batch failed: each caller gets the error
                outcomes = [exc] * len(batch)
            self.batches += 1
            self.items += len(batch)
            self.largest = max(self.largest, len(batch))
            for (_item, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its caller went away (a closed connection)
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
