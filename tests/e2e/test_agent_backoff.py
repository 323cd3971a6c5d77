"""An agent does not hammer a controller that accepts its channel and then fails: its
reconnect delay grows (capped exponential backoff, full jitter) and only a channel that stayed
healthy resets it. The failing controller here is a real HTTP/WebSocket server (uvicorn)
that accepts the channel, reads the hello, maybe sends a desired state, and closes; the agent
is a real `voipcloud agent` process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from tests.support.agent_channel import DESIRED, returning_agent
from tests.support.processes import AgentProcess
from tests.support.server import serve_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

WINDOW = 12.0  # seconds watched


def failing_controller(connections: list[float], *, send_desired: bool, code: int) -> FastAPI:
    app = FastAPI()

    @app.websocket("/api/v1/agent/channel")
    async def channel(websocket: WebSocket) -> None:
        connections.append(time.monotonic())
        await websocket.accept()
        await websocket.receive_text()  # the agent's hello
        if send_desired:
            await websocket.send_text(json.dumps(DESIRED))
            await asyncio.sleep(0.3)
        with suppress(WebSocketDisconnect, RuntimeError):  # the agent may have gone first
            await websocket.close(code)

    return app


@pytest.mark.parametrize(
    ("send_desired", "code"),
    [(False, 1011), (True, 1013)],
    ids=["closes-after-hello", "closes-after-desired-try-again-later"],
)
def test_an_agent_backs_off_from_a_controller_that_accepts_then_fails(
    tmp_path: Path, start_agent: Callable[..., AgentProcess], send_desired: bool, code: int
) -> None:
    connections: list[float] = []
    app = failing_controller(connections, send_desired=send_desired, code=code)
    with serve_in_thread(app) as url:
        agent = returning_agent(url, tmp_path / "agent-backoff")
        try:
            time.sleep(WINDOW)
            assert agent.process is not None
            assert agent.process.poll() is None, agent.log()  # it keeps trying, never exits
        finally:
            agent.stop()
    reconnects = len(connections)
    print(f"{reconnects} channels opened in {WINDOW:g} s")  # the figure, with -s
    # delays of at most 1, 2, 4, 8 s... (full jitter): about 5 tries in 12 s; the agent before
    # this rule reset its backoff on every hello and came back every 0.1-0.2 s (60 or more)
    assert 2 <= reconnects <= 10, reconnects
