"""An agent given several controllers of one cluster (docs/protocol.md, "Several
controllers"): tried in order, the next after every failure, in a ring; a real failing
controller address is left for the next one."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.support.server import free_port
from voipcloud.agent.runner import Agent
from voipcloud.cli.agent import controller_urls


def test_controller_addresses_are_split_trimmed_and_deduplicated() -> None:
    assert controller_urls("https://a:8080") == ["https://a:8080"]
    assert controller_urls(" https://a:8080/, https://b:8080 ,,https://a:8080") == [
        "https://a:8080",
        "https://b:8080",
    ]


def _agent(tmp_path: Path, first: str, *more: str) -> Agent:
    return Agent(
        controller_url=first,
        more_controllers=more,
        session_key="k" * 32,
        state_dir=tmp_path / "state",
    )


def test_the_next_controller_in_a_ring(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "http://a:1/", "http://b:2", "http://a:1", "http://c:3")
    assert agent.controller_urls == ["http://a:1", "http://b:2", "http://c:3"]
    seen = [agent.controller_url]
    for _ in range(4):
        agent._next_controller()
        seen.append(agent.controller_url)
    assert seen == ["http://a:1", "http://b:2", "http://c:3", "http://a:1", "http://b:2"]


def test_one_controller_stays_the_one(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "http://a:1")
    agent._next_controller()
    assert agent.controller_url == "http://a:1"


def test_an_unreachable_first_controller_is_left_for_the_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two closed ports: the agent's attempts alternate between them (joins fail)."""
    dead_a, dead_b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    agent = _agent(tmp_path, dead_a, dead_b)
    tried: list[str] = []
    join = agent._join

    async def counting_join() -> None:
        tried.append(agent.controller_url)
        await join()

    monkeypatch.setattr(agent, "_join", counting_join)

    async def run_a_while() -> None:
        task = asyncio.create_task(agent.run())
        for _ in range(200):
            if len(tried) >= 3:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    monkeypatch.setattr("voipcloud.agent.runner.random.uniform", lambda _a, _b: 0.01)
    asyncio.run(run_a_while())
    assert tried[:3] == [dead_a, dead_b, dead_a]
