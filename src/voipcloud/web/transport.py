"""Over HTTPS, every cookie is `Secure` and every answer carries HSTS.

A pure ASGI middleware (no body buffering): on a request that came over TLS (scheme
`https`), the response head gains `Strict-Transport-Security` and each `Set-Cookie` without
the `Secure` attribute gets it, so no session, CSRF or flash cookie is ever sent back over
plain HTTP. Plain-HTTP requests (loopback, `--tls off`) are left as they are.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = b"max-age=31536000"  # one year; no includeSubDomains: the controller's name only


def _secure(cookie: bytes) -> bytes:
    attributes = [part.strip().lower() for part in cookie.split(b";")[1:]]
    return cookie if b"secure" in attributes else cookie + b"; Secure"


class SecureTransport:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = []
                for name, value in message.get("headers", []):
                    lower = name.lower()
                    if lower == b"strict-transport-security":
                        continue
                    headers.append((name, _secure(value) if lower == b"set-cookie" else value))
                headers.append((b"strict-transport-security", HSTS))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured)
