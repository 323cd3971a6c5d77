"""The agent channels' batched reads (api/agent_channel.py `_Batcher`): one thread call answers
every request waiting; while requests keep coming, a batch not yet full waits a moment for
more (docs/benchmarks.md, "Batches that gather"), and one after a quiet moment does not."""

from __future__ import annotations

import asyncio

from voipcloud.api.agent_channel import _Batcher


def _batcher(calls: list[list[int]], *, gather: float, size: int = 64) -> _Batcher[int, int]:
    def run(items: list[int]) -> list[int | Exception]:
        calls.append(list(items))
        return [item * 10 if item >= 0 else ValueError(f"bad {item}") for item in items]

    async def thread(call: object, items: list[int]) -> list[int | Exception]:
        return run(items)

    return _Batcher(run, thread, size, gather=gather, busy=5.0)  # type: ignore[arg-type]


def test_after_a_quiet_moment_a_request_is_read_at_once_then_later_ones_gather() -> None:
    calls: list[list[int]] = []

    async def scenario() -> tuple[list[int], float, list[int]]:
        batcher = _batcher(calls, gather=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = [await batcher(1)]
        alone = loop.time() - started
        # busy now: three requests 20 ms apart go into one batch (the gather is 500 ms)
        pending = []
        for item in (2, 3, 4):
            pending.append(asyncio.ensure_future(batcher(item)))
            await asyncio.sleep(0.02)
        return first, alone, list(await asyncio.gather(*pending))

    first, alone, later = asyncio.run(scenario())
    assert first == [10]
    assert alone < 0.4  # not held for the gather: nothing had been read before
    assert later == [20, 30, 40]
    assert calls == [[1], [2, 3, 4]]


def test_a_full_batch_does_not_wait_and_a_refusal_reaches_only_its_request() -> None:
    calls: list[list[int]] = []

    async def scenario() -> tuple[list[object], float]:
        batcher = _batcher(calls, gather=30.0, size=3)
        await batcher(0)  # now busy: a batch under 3 would wait 30 s
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.gather(
            *(batcher(item) for item in (5, -1, 7)), return_exceptions=True
        )
        return list(answers), loop.time() - started

    answers, took = asyncio.run(scenario())
    assert answers[0] == 50
    assert answers[2] == 70
    assert isinstance(answers[1], ValueError)
    assert took < 10  # full: read at once, not after the 30 s gather
    assert calls == [[0], [5, -1, 7]]
