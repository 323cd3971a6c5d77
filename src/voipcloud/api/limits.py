"""Refuse oversized request bodies (413) before the application sees them.

A declared Content-Length over the limit is refused at once. A body without one (sent with
`Transfer-Encoding: chunked`) or one longer than it declared is read up to the limit and
refused as soon as it passes it; a body within the limit is handed on to the application.
The limit is small (about a megabyte), so holding one body in memory is fine.

Stored resources (`PUT /api/v1/storage/{kind}/resources/{key}`) are the exception: their route
streams the body to a temporary file, so they pass through unbuffered under their own, much
larger limit (`max_upload_bytes`): a declared length over it is refused at once, and a body
that grows past it is cut off (the route sees the client go away and stores nothing).

The import of many nodes (`POST /api/v1/nodes/import`, up to 5,000 rows; the web's CSV upload
`POST /nodes/import`) is read under IMPORT_BYTES instead, still held in memory.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STREAMED_UPLOAD = re.compile(r"^/api/v1/storage/[^/]+/resources/.+")
IMPORT_PATHS = frozenset({"/api/v1/nodes/import", "/nodes/import"})
IMPORT_BYTES = 8 * 1024 * 1024  # 5,000 rows with parameters; a CSV of 4 MiB in a form


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "PUT" and STREAMED_UPLOAD.match(scope["path"]):
            await self._stream(scope, receive, send)
            return
        limit = self.max_bytes
        if scope["method"] == "POST" and scope["path"] in IMPORT_PATHS:
            limit = max(limit, IMPORT_BYTES)
        if _declared_length(scope) > limit:
            await self._refuse(send, limit)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: only http.disconnect may come
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_upload_bytes
        if _declared_length(scope) > limit:
            await self._refuse(send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = json.dumps({"detail": f"Request body larger than {limit} bytes."})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():  # bytes: ASCII digits only
            return int(value) if len(value) <= 18 else 10**18  # more: larger than any limit
    return -1
