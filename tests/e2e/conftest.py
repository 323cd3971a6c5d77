"""End-to-end fixtures: real processes, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import AgentProcess, Controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    started = Controller(data_dir=tmp_path / "controller").start()
    yield started
    started.stop()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(
        controller: Controller, session_key: str, *, name: str, **kwargs: Any
    ) -> AgentProcess:
        agent = AgentProcess(
            controller_url=controller.url,
            session_key=session_key,
            state_dir=tmp_path / f"agent-{name}",
            **kwargs,
        ).start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
