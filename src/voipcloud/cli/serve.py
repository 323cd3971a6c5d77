"""`voipcloud serve`: the controller, plus the IC node's own agent in a thread beside it."""

from __future__ import annotations

import asyncio
import logging
import threading

import uvicorn

from voipcloud.agent.handlers import AgentConfig
from voipcloud.agent.runner import Agent
from voipcloud.api import server
from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.services import instance_lock, key_guard
from voipcloud.services.controller import Controller


def _local_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping "all interfaces" to loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _ic_session_key(controller: Controller) -> str:
    try:
        key = controller.nodes.controller_session_key()
    except Exception as exc:  # the database is not migrated yet at the very first start
        raise OSError(f"the controller is not ready: {type(exc).__name__}") from exc
    if key is None:
        raise OSError("the controller node has no session key yet")
    return key


def start_ic_agent(settings: Settings, controller: Controller) -> threading.Thread:
    state_dir = settings.data_dir / "ic-agent"
    agent = Agent(
        controller_url=_local_url(settings),
        session_key=lambda: _ic_session_key(controller),
        state_dir=state_dir,
        config=AgentConfig.load(state_dir / "agent.toml"),
    )
    thread = threading.Thread(target=lambda: asyncio.run(agent.run()), name="ic-agent", daemon=True)
    thread.start()
    return thread


def run(settings: Settings, *, with_ic_agent: bool = True) -> None:
    instance_lock.hold_for_process(settings.data_dir)  # one controller per data dir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    key_guard.preflight(app.state.controller.ctx, settings.data_dir)  # missing key: refused
    if with_ic_agent:
        start_ic_agent(settings, app.state.controller)
    uvicorn.Server(server.config(app, settings)).run()  # bounded: voipcloud.api.server
