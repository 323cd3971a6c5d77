"""`voipcloud agent`: run a node's agent until its node is deleted.

Over https:// the agent first establishes which CA it trusts (`voipcloud.agent.trust`):
`--ca-fingerprint` at first contact, the CA kept in the state dir afterwards, or
`--ca-file`. A controller that does not verify at first contact ends the process (exit 2)
before anything is sent to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from voipcloud.agent import trust
from voipcloud.agent.handlers import AgentConfig
from voipcloud.agent.runner import EXIT_REFUSED, Agent
from voipcloud.agent.state import StateStore

log = logging.getLogger("voipcloud.agent")
TRUST_REFRESH_SECONDS = 300.0  # how often a pinned agent asks which CA(s) to trust
TRUST_REFRESH_ENV = "VOIPCLOUD_TRUST_REFRESH"


async def _refresh_trust(
    controller_trust: trust.ControllerTrust, state_dir: Path, every: float
) -> None:
    """Take the CA the controller announces (docs/security.md, replacing the CA)."""
    store = StateStore(state_dir)

    def token() -> str | None:
        return store.load().agent_token

    while True:
        try:
            await controller_trust.refresh(token)
        except Exception as exc:  # unreachable, or an older controller: next round
            log.debug("trust refresh failed: %s", exc)
        await asyncio.sleep(every)


async def _main(
    *,
    controller: str,
    session_key: str,
    state_dir: Path,
    config: AgentConfig,
    inventory_interval: float,
    ca_fingerprint: str | None,
    ca_file: Path | None,
    trust_refresh: float,
) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, task.cancel)  # type: ignore[union-attr]
    refresher: asyncio.Task[None] | None = None
    try:
        try:
            pinned = await trust.establish_with_retry(
                controller, fingerprint=ca_fingerprint, ca_file=ca_file, state_dir=state_dir
            )
        except trust.Untrusted as exc:
            log.error("%s", exc)
            return EXIT_REFUSED
        if pinned is None and not trust.is_loopback(_host(controller)):
            log.warning(
                "the controller %s is plain http://: the session key, the agent credential and "
                "the roles' configuration cross the network unencrypted",
                controller,
            )
        agent = Agent(
            controller_url=controller,
            session_key=session_key,
            state_dir=state_dir,
            config=config,
            inventory_interval=inventory_interval,
            ssl_context=pinned.context if pinned is not None else None,
            before_connect=pinned.before_connect if pinned is not None else None,
        )
        if pinned is not None:
            refresher = asyncio.create_task(_refresh_trust(pinned, state_dir, trust_refresh))
        return await agent.run()
    except asyncio.CancelledError:
        log.info("stopping on signal")
        return 0
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


def run(
    *,
    controller: str,
    session_key: str,
    state_dir: Path,
    config_file: Path | None,
    inventory_interval: float,
    ca_fingerprint: str | None = None,
    ca_file: Path | None = None,
    trust_refresh: float | None = None,
) -> int:
    if trust_refresh is None:
        trust_refresh = float(os.environ.get(TRUST_REFRESH_ENV) or TRUST_REFRESH_SECONDS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig.load(config_file or state_dir / "agent.toml")
    return asyncio.run(
        _main(
            controller=controller,
            session_key=session_key,
            state_dir=state_dir,
            config=config,
            inventory_interval=inventory_interval,
            ca_fingerprint=ca_fingerprint,
            ca_file=ca_file,
            trust_refresh=trust_refresh,
        )
    )
