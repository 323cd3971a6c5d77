"""Load shedding of agent channel opens (issue 15, "mass reconnect"), with real processes.

- A real `voipcloud serve` with a tiny bound on channel handshakes in progress (2) gets more
  simultaneous agents than it admits: the excess is answered HTTP 503 with `Retry-After`
  before any database work, the answers are counted in /metrics, and every agent, coming
  back when told (plus jitter, as the real agent does), ends up connected.
- A real `voipcloud agent` process honours `Retry-After`: told to come back in 2 s it waits
  that long (plus at most its jitter) instead of its own backoff, and logs it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.responses import PlainTextResponse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.agent_channel import DESIRED, returning_agent
from tests.support.processes import AgentProcess, Controller, wait_for
from tests.support.server import serve_in_thread
from voipcloud import protocol
from voipcloud.agent.runner import retry_after, retry_after_delay

pytestmark = pytest.mark.e2e

AGENTS = 10
BOUND = 2
HELLO_DELAY = 0.4  # each agent holds its handshake this long (a slow hello): they overlap


def join_agents(admin: httpx.Client, count: int) -> list[tuple[int, str]]:
    joined = []
    for n in range(count):
        created = admin.post(
            "/api/v1/nodes", json={"hostname": f"shed-{n:02d}", "private_ip": f"10.1.2.{n + 1}"}
        )
        assert created.status_code == 201, created.text
        node_id = created.json()["node_id"]
        assigned = admin.post(f"/api/v1/nodes/{node_id}/roles", json={"role": "wk"})
        assert assigned.status_code == 201, assigned.text
        answer = admin.post(
            "/api/v1/agent/join", json={"session_key": assigned.json()["session_key"]}
        )
        assert answer.status_code == 200, answer.text
        joined.append((node_id, answer.json()["agent_token"]))
    return joined


async def open_channel(url: str, token: str) -> ClientConnection | float:
    """The open channel, or the seconds of the 503's Retry-After."""
    refusal: InvalidStatus | None = None
    try:
        return await connect(
            url.replace("http://", "ws://") + "/api/v1/agent/channel",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
            ping_interval=None,
        )
    except InvalidStatus as exc:
        refusal = exc
    seconds = retry_after(refusal)
    value = refusal.response.headers.get("Retry-After", "")
    assert seconds is not None, f"refused without Retry-After: {refusal}"
    assert value.isdigit(), value  # whole seconds
    assert seconds >= 1
    return seconds


async def agent(url: str, token: str, refusals: list[float], opened: list[int]) -> None:
    """Speaks the protocol as the agent does on (re)connect; honours 503 Retry-After."""
    hello = protocol.Hello(
        inventory_digest=protocol.inventory_digest(protocol.Inventory()),
        features=[protocol.FEATURE_INVENTORY_DIGEST, protocol.FEATURE_RECONNECT_WINDOW],
    ).model_dump_json(exclude_none=True)
    for _attempt in range(30):  # bounded
        answer = await open_channel(url, token)
        if not isinstance(answer, ClientConnection):  # shed: come back when told
            refusals.append(answer)
            await asyncio.sleep(retry_after_delay(answer))
            continue
        ws = answer
        async with ws:
            await asyncio.sleep(HELLO_DELAY)
            await ws.send(hello)
            for _ in range(5):
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                if message["type"] == "inventory-request":
                    await ws.send(
                        protocol.InventoryUpdate(inventory=protocol.Inventory()).model_dump_json()
                    )
                elif message["type"] == "desired":
                    assert message["reconnect_window"] >= protocol.RECONNECT_BASE
                    opened.append(message["node_id"])
                    await asyncio.sleep(2.0)  # stays open while the others come in
                    return
        raise AssertionError("no desired state on an admitted channel")
    raise AssertionError("never admitted")


def metric(admin: httpx.Client, name: str) -> float:
    scrape = admin.get("/metrics")
    scrape.raise_for_status()
    for line in scrape.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_controller_over_its_handshake_bound_sheds_with_retry_after_and_all_connect(
    tmp_path: Path,
) -> None:
    controller = Controller(
        data_dir=tmp_path / "controller",
        env={"VOIPCLOUD_MAX_CHANNEL_HANDSHAKES": str(BOUND)},
    ).start()
    try:
        admin = controller.admin()
        joined = join_agents(admin, AGENTS)
        refusals: list[float] = []
        opened: list[int] = []

        async def everyone() -> None:
            async with asyncio.timeout(120):
                await asyncio.gather(
                    *(agent(controller.url, token, refusals, opened) for _, token in joined)
                )

        started = time.monotonic()
        asyncio.run(everyone())
        took = time.monotonic() - started
        print(f"{AGENTS} agents, bound {BOUND}: {len(refusals)} refusals, all open in {took:.1f} s")
        assert sorted(opened) == sorted(node_id for node_id, _ in joined)  # every one of them
        # 10 at once, 2 admitted, each holding its handshake 0.4 s: the rest were shed
        assert len(refusals) >= AGENTS - BOUND
        assert metric(admin, "voipcloud_agent_channel_refused_total") == len(refusals)
        assert metric(admin, "voipcloud_agent_channel_handshakes") == 0
        assert controller.process is not None
        assert controller.process.poll() is None
    finally:
        controller.stop()


# --- the real agent honours Retry-After ---------------------------------------------------


def shedding_controller(attempts: list[float], *, refuse: int, seconds: int) -> FastAPI:
    """The first `refuse` upgrades get 503 Retry-After: `seconds`; then it accepts."""
    app = FastAPI()

    @app.websocket("/api/v1/agent/channel")
    async def channel(websocket: WebSocket) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= refuse:
            await websocket.send_denial_response(
                PlainTextResponse("busy", status_code=503, headers={"Retry-After": str(seconds)})
            )
            return
        await websocket.accept()
        await websocket.receive_text()  # the hello
        await websocket.send_text(json.dumps(DESIRED))
        with suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await websocket.receive_text()

    return app


def test_a_real_agent_waits_the_retry_after_of_a_503_instead_of_its_backoff(
    tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    attempts: list[float] = []
    seconds = 2
    app = shedding_controller(attempts, refuse=2, seconds=seconds)
    with serve_in_thread(app) as url:
        agent = returning_agent(url, tmp_path / "agent-shed")
        try:
            wait_for(lambda: "channel open" in agent.log(), timeout=30, what="the channel open")
        finally:
            agent.stop()
    assert len(attempts) == 3, attempts
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # its own backoff would have waited uniform(0, 1) and uniform(0, 2) s
    for gap in gaps:
        assert seconds <= gap <= seconds + protocol.RETRY_AFTER_JITTER + 1.0, gaps
    assert agent.log().count(f"controller busy (503, Retry-After {seconds} s)") == 2
