"""What a node needs to join: the controller's address, the CA pin, the agent command.

Shown with the session key (web confirmation, `POST /nodes/{id}/roles` answer, the CLI). The
key itself never appears in the command: it is read from a file (or standard input), so it
stays out of `ps` and shell history. Also: `GET /api/v1/agent/trust`, where a pinned agent
fetches the CA(s) the controller announces (replacing the CA, docs/security.md); a plain
route, authenticated by the agent credential, outside the account permissions and OpenAPI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voipcloud.agent import trust
from voipcloud.domain.errors import NodeGone, NotAuthenticated

KEY_FILE = trust.SESSION_KEY_FILE


class EnrolmentPublic(BaseModel):
    controller_url: str
    ca_fingerprint: str | None  # null: plain http (loopback, or TLS ended by a proxy)
    session_key_file: str
    agent_command: str
    install_command: str = Field(
        description="one line that installs and starts the agent as a systemd service on a "
        "Debian node (the key read from session_key_file; over https the CA is checked "
        "against ca_fingerprint before anything is trusted)"
    )


def for_request(request: Request) -> EnrolmentPublic:
    """The controller as this request reached it; the pin when it came over our TLS."""
    url = str(request.base_url).rstrip("/")
    transport = getattr(request.app.state, "transport", None)
    fingerprint = getattr(transport, "ca_fingerprint", None)
    if request.url.scheme != "https":
        fingerprint = None
    return EnrolmentPublic(
        controller_url=url,
        ca_fingerprint=fingerprint,
        session_key_file=KEY_FILE,
        agent_command=trust.agent_command(url, fingerprint),
        install_command=trust.install_command(url, fingerprint),
    )


# --- GET /api/v1/agent/trust -----------------------------------------------------------------

AGENTS_FILE = "agents-trust.json"  # read by `voipcloud tls ca status`


def _record(data_dir: Path, node_id: int, fingerprints: list[str]) -> None:
    from voipcloud.services import tls

    with tls.locked(data_dir) as directory:
        path = directory / AGENTS_FILE
        try:
            seen: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            seen = {}
        seen[str(node_id)] = {"fingerprints": fingerprints, "at": time.time()}
        tls.write_atomically(path, (json.dumps(seen, indent=2) + "\n").encode(), 0o600)


def _announce(request: Request, token: str) -> Response:
    from voipcloud.services import tls

    controller = request.app.state.controller
    try:
        node_id = controller.agents.authenticate(token)
    except (NotAuthenticated, NodeGone):
        return JSONResponse({"detail": "The agent credential is not valid."}, status_code=401)
    data_dir: Path = controller.ctx.data_dir
    certs = tls.announced(data_dir)
    fingerprints = [tls.cert_fingerprint(c) for c in certs]
    if certs:
        _record(data_dir, node_id, fingerprints)
    return JSONResponse({"anchors": [tls.pem(c) for c in certs], "fingerprints": fingerprints})


async def agent_trust(request: Request) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return JSONResponse({"detail": "Not authenticated."}, status_code=401)
    return await run_in_threadpool(_announce, request, token.strip())


def install(app: FastAPI) -> None:
    app.router.routes.insert(0, Route("/api/v1/agent/trust", agent_trust, methods=["GET"]))
