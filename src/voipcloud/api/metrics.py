"""GET /metrics (Prometheus text format) and the HTTP latency middleware.

Scraping needs an API token (any account's, `read` scope is enough) or a client address in
`VOIPCLOUD_METRICS_ALLOW` (comma-separated CIDRs; the TCP peer's address, not a forwarded
header). Anything else is answered 401, as any API request without a valid token.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from voipcloud.api.deps import ControllerDep
from voipcloud.domain.access import Permission
from voipcloud.domain.errors import NotAuthenticated
from voipcloud.services.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_bearer = HTTPBearer(auto_error=False)
router = APIRouter(tags=["metrics"])


def _allowed_address(request: Request) -> bool:
    networks = getattr(request.app.state, "metrics_networks", [])
    if not networks or request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def metrics_access(
    request: Request,
    controller: ControllerDep,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """An allowed address, or an account's token holding `read`."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        controller.auth.principal(credentials.credentials).require(Permission.READ)
        return
    if _allowed_address(request):
        return
    raise NotAuthenticated(
        "Authentication required: send Authorization: Bearer <token>, or scrape from an "
        "address in VOIPCLOUD_METRICS_ALLOW."
    )


metrics_access.permission = Permission.READ  # type: ignore[attr-defined]  # the route audit


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request, _access: None = Depends(metrics_access)) -> Response:
    """The controller's metrics in the Prometheus text format (docs/operations.md)."""
    collected: Metrics = request.app.state.metrics
    body = await anyio.to_thread.run_sync(collected.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class RequestTimer:
    """Times every HTTP request; labels it with its route template ("/api/v1/nodes/{node_id}"),
    never the raw path, so the series stay few. Unmatched paths count as "<unmatched>"."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Callable[[], Metrics | None],
        prefixed: tuple[set[int], str] = (set(), ""),
    ) -> None:
        self.app = app
        self._metrics = metrics
        # routes of a router included under a prefix know only their own part of the path
        self._prefixed, self._prefix = prefixed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            collected = self._metrics()
            if collected is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or (
                    "/static" if scope.get("path", "").startswith("/static/") else "<unmatched>"
                )
                if id(route) in self._prefixed:
                    template = self._prefix + template
                collected.http_duration.labels(scope["method"], template, str(status[0])).observe(
                    time.perf_counter() - started
                )
