"""`voipcloud agent`: run a node's agent until its node is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from voipcloud.agent.handlers import AgentConfig
from voipcloud.agent.runner import Agent


async def _run_until_signalled(agent: Agent) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, task.cancel)  # type: ignore[union-attr]
    try:
        return await agent.run()
    except asyncio.CancelledError:
        logging.getLogger("voipcloud.agent").info("stopping on signal")
        return 0


def run(
    *,
    controller: str,
    session_key: str,
    state_dir: Path,
    config_file: Path | None,
    inventory_interval: float,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig.load(config_file or state_dir / "agent.toml")
    agent = Agent(
        controller_url=controller,
        session_key=session_key,
        state_dir=state_dir,
        config=config,
        inventory_interval=inventory_interval,
    )
    return asyncio.run(_run_until_signalled(agent))
