"""A real uvicorn server on 127.0.0.1 in a background thread, for HTTP-level tests; and one
in the test's own event loop with `voipcloud serve`'s WebSocket protocol, for its tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from voipcloud.api import server as voipcloud_server
from voipcloud.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    port = free_port()
    settings = getattr(app.state, "settings", None)
    if isinstance(settings, Settings):  # the server `voipcloud serve` runs, with its limits
        config: uvicorn.Config = voipcloud_server.config(app, settings, host="127.0.0.1", port=port)
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start within 30 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def lean_websocket_server(app: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """uvicorn on loopback in this event loop, serving the ASGI `app` with `voipcloud serve`'s
    WebSocket protocol (no lifespan): the server and its port."""
    from voipcloud.api.ws_protocol import LeanWebSocketProtocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, ws=LeanWebSocketProtocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
