"""`voipcloud serve`: the controller, plus the IC node's own agent in a thread beside it."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
from typing import TYPE_CHECKING

from fastapi import FastAPI

from voipcloud.agent import trust
from voipcloud.agent.handlers import AgentConfig
from voipcloud.api import enrolment, server
from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.services import instance_lock, key_guard, tls
from voipcloud.services.controller import Controller
from voipcloud.web.transport import SecureTransport

if TYPE_CHECKING:
    from voipcloud.agent.runner import Agent


def _local_url(settings: Settings, scheme: str = "http") -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping "all interfaces" to loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.port}"


def _ic_agent_context(secure: server.Transport) -> ssl.SSLContext | None:
    """The IC node's agent trusts exactly what its own controller presents: our CA (from the
    data dir), or the top of the chain that was brought (host name not checked then: it
    connects to its own listening address, which a brought certificate need not name)."""
    if secure.context is None:
        return None
    if secure.ca_file is not None:  # every CA announced (current, next, retired): replacement
        announced = tls.announced(secure.ca_file.parent.parent)
        return trust.client_context("".join(tls.pem(c) for c in announced))
    assert secure.watcher is not None
    top = tls.load_pem_certs(secure.watcher.files.cert_file.read_bytes())[-1]
    return trust.client_context(tls.pem(top), check_hostname=False)


def announce(settings: Settings, secure: server.Transport) -> None:
    """What serve prints at start: the address, and loudly when the network sees plain HTTP."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{secure.scheme}://{host}:{settings.port}"
    if secure.context is not None:
        print(
            f"voipcloud: serving on {url} (TLS: {secure.reason})\n"
            f"voipcloud: agents and `voipcloud login` pin the CA with "
            f"--ca-fingerprint {secure.ca_fingerprint}",
            file=sys.stderr,
            flush=True,
        )
        return
    print(f"voipcloud: serving on {url}", file=sys.stderr, flush=True)
    if secure.reason == "off":
        exposed = "" if trust.is_loopback(settings.host) else " on a network address"
        print(
            f"\n  WARNING: TLS is off (--tls off){exposed}: the controller serves PLAIN HTTP.\n"
            "  Passwords, session keys, agent credentials and role configuration cross the\n"
            "  network unencrypted and unauthenticated. Use it only behind a TLS reverse\n"
            "  proxy or on a network you trust completely (docs/security.md, Transport).\n",
            file=sys.stderr,
            flush=True,
        )
        logging.getLogger("voipcloud").warning(
            "TLS is off: serving plain HTTP on %s%s", url, exposed
        )


def _ic_session_key(controller: Controller) -> str:
    try:
        key = controller.nodes.controller_session_key()
    except Exception as exc:  # the database is not migrated yet at the very first start
        raise OSError(f"the controller is not ready: {type(exc).__name__}") from exc
    if key is None:
        raise OSError("the controller node has no session key yet")
    return key


def start_ic_agent(
    settings: Settings, controller: Controller, secure: server.Transport | None = None
) -> threading.Thread:
    agent = ic_agent(settings, controller, secure)
    thread = threading.Thread(target=lambda: asyncio.run(agent.run()), name="ic-agent", daemon=True)
    thread.start()
    return thread


def ic_agent(
    settings: Settings, controller: Controller, secure: server.Transport | None = None
) -> Agent:
    """The IC node's agent, talking to this controller over its own address."""
    # here, not at the top: a `--workers` worker imports this module and runs no agent (the
    # agent's HTTP client, httpx, imports rich and click: about 10 MiB per worker)
    from voipcloud.agent.runner import Agent

    state_dir = settings.data_dir / "ic-agent"
    secure = secure or server.Transport()
    transport = secure
    return Agent(
        controller_url=_local_url(settings, secure.scheme),
        session_key=lambda: _ic_session_key(controller),
        state_dir=state_dir,
        config=AgentConfig.load(state_dir / "agent.toml"),
        # built at each connection: it follows a CA replacement (voipcloud tls ca ...)
        ssl_context=(lambda: _ic_agent_context(transport)) if secure.context else None,  # type: ignore[arg-type, return-value]
    )


def setup_logging(prefix: str = "") -> None:
    # force: a process forked by `serve --workers` replaces its parent's prefix
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {prefix}%(name)s %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def secure_transport(settings: Settings) -> server.Transport:
    """HTTP or HTTPS for these settings; a refusal ends the process with one line."""
    try:
        return server.transport(settings)  # may create the CA and the server certificate
    except server.TransportRefused as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def serving_app(settings: Settings, secure: server.Transport) -> FastAPI:
    """The application one serving process runs (`serve`, or each of its `--workers`)."""
    app = create_app(settings)
    app.state.transport = secure  # the enrolment command names the scheme and the CA pin
    enrolment.install(app)  # GET /api/v1/agent/trust: the CA(s) pinned agents should trust
    app.add_middleware(SecureTransport)  # https: Secure cookies, HSTS
    key_guard.preflight(app.state.controller.ctx, settings.data_dir)  # missing key: refused
    return app


def run(settings: Settings, *, with_ic_agent: bool = True) -> None:
    if settings.workers > 1:  # several connection-holding processes: voipcloud.cli.workers
        from voipcloud.cli import workers

        workers.run(settings, with_ic_agent=with_ic_agent)
        return
    instance_lock.hold_for_process(settings.data_dir)  # one controller per data dir
    setup_logging()
    secure = secure_transport(settings)
    app = serving_app(settings, secure)
    announce(settings, secure)
    if with_ic_agent:
        start_ic_agent(settings, app.state.controller, secure)
    server.Server(  # bounded: voipcloud.api.server; reloads a rotated certificate
        server.config(app, settings, secure=secure),
        watcher=secure.watcher,
        reload_interval=settings.tls_reload_interval,
    ).run()
