"""Long loops of the duty threads that let the requests' threads in.

The interpreter runs one thread at a time, and a thread that wants it back waits until the one
holding it blocks or has held it for the switch interval (5 ms). A request makes a dozen such
hand-overs (the event loop, a worker thread, each round trip to the database): beside a duty
that spends a quarter of a second in Python -- the agent-lost watch's full round at 50,000
nodes, 200-270 ms of a core -- a 7 ms listing took up to 175 ms (docs/benchmarks.md, "The
listing's twelfth pass"). These loops give the interpreter away every `EVERY` items for a
moment, long enough for a waiting thread to take it: a request then waits a fraction of a
millisecond for the duty, not the switch interval at each hand-over.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

EVERY = 500  # items between two pauses (~1-2 ms of a full round's work at 50,000 nodes)
# a bare time.sleep(0) gives the interpreter up for ~1 µs: a waiting thread, woken by the
# operating system, usually comes too late and the loop takes it back
PAUSE_SECONDS = 0.0001


def pause() -> None:
    """Give the interpreter to a thread waiting for it, if any."""
    time.sleep(PAUSE_SECONDS)


def rows(result: Any, every: int | None = None) -> Iterator[Any]:
    """A query's rows (a SQLAlchemy `Result`), fetched and converted `every` (`EVERY`) at a
    time, with a pause between."""
    for part in result.partitions(every or EVERY):
        yield from part
        pause()


def items(iterable: Iterable[T], every: int | None = None) -> Iterator[T]:
    """The items of `iterable`, with a pause after every `every` (`EVERY`) of them."""
    step = every or EVERY
    for count, item in enumerate(iterable, 1):
        yield item
        if count % step == 0:
            pause()
