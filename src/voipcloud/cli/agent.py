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
from collections.abc import Callable
from pathlib import Path

from voipcloud.agent import trust
from voipcloud.agent.handlers import AgentConfig
from voipcloud.agent.runner import EXIT_REFUSED, Agent
from voipcloud.agent.state import StateStore

log = logging.getLogger("voipcloud.agent")
TRUST_REFRESH_SECONDS = 300.0  # how often a pinned agent asks which CA(s) to trust
TRUST_REFRESH_ENV = "VOIPCLOUD_TRUST_REFRESH"


def controller_urls(given: str) -> list[str]:
    """`--controller` names one controller, or several (comma-separated) of one cluster."""
    urls = [part.strip().rstrip("/") for part in given.split(",") if part.strip()]
    return list(dict.fromkeys(urls))


async def _refresh_trust(
    trusts: dict[str, trust.ControllerTrust],
    current: Callable[[], str],
    state_dir: Path,
    every: float,
) -> None:
    """Take the CA the controller announces (docs/security.md, replacing the CA); with
    several controllers, ask the current one and give its answer to the others' links."""
    store = StateStore(state_dir)

    def token() -> str | None:
        return store.load().agent_token

    while True:
        asked = trusts.get(current()) or next(iter(trusts.values()))
        try:
            await asked.refresh(token)
            for other in trusts.values():
                if other is not asked:
                    other.adopt(asked.anchors_pem)
        except Exception as exc:  # unreachable, or an older controller: next round
            log.debug("trust refresh failed: %s", exc)
        await asyncio.sleep(every)


async def _establish(
    urls: list[str], *, fingerprint: str | None, ca_file: Path | None, state_dir: Path
) -> dict[str, trust.ControllerTrust] | None:
    """The trust of every controller (one CA for all of them); first contact with whichever
    answers first. None: plain http://."""
    pinned: trust.ControllerTrust | None = None
    if len(urls) == 1:
        pinned = await trust.establish_with_retry(
            urls[0], fingerprint=fingerprint, ca_file=ca_file, state_dir=state_dir
        )
    else:
        from voipcloud.agent.runner import Backoff

        backoff = Backoff()
        turn = 0
        while True:
            url = urls[turn % len(urls)]
            try:
                pinned = await asyncio.to_thread(
                    trust.establish,
                    url,
                    fingerprint=fingerprint,
                    ca_file=ca_file,
                    state_dir=state_dir,
                )
                break
            except (OSError, TimeoutError) as exc:
                log.info("controller %s unreachable (%s); trying the next", url, exc)
                turn += 1
                await asyncio.sleep(backoff.next_delay())
    if pinned is None:
        return None
    trusts = {pinned.endpoint.url: pinned}
    for url in urls:
        if url not in trusts:  # the same CA, checked against each controller's own name
            trusts[url] = trust.ControllerTrust(
                trust.Endpoint.of(url), pinned.anchors_pem, source=pinned.source, pins=pinned.pins
            )
    return trusts


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
    urls = controller_urls(controller)
    try:
        try:
            trusts = await _establish(
                urls, fingerprint=ca_fingerprint, ca_file=ca_file, state_dir=state_dir
            )
        except trust.Untrusted as exc:
            log.error("%s", exc)
            return EXIT_REFUSED
        for url in urls:
            if trusts is None and not trust.is_loopback(_host(url)):
                log.warning(
                    "the controller %s is plain http://: the session key, the agent credential "
                    "and the roles' configuration cross the network unencrypted",
                    url,
                )
        agent = Agent(
            controller_url=urls[0],
            more_controllers=urls[1:],
            session_key=session_key,
            state_dir=state_dir,
            config=config,
            inventory_interval=inventory_interval,
        )
        if trusts is not None:
            links = trusts  # the link to whichever controller the agent is at
            agent.set_trust(
                lambda: links[agent.controller_url].context(),
                lambda: links[agent.controller_url].before_connect(),
            )
            refresher = asyncio.create_task(
                _refresh_trust(trusts, lambda: agent.controller_url, state_dir, trust_refresh)
            )
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
