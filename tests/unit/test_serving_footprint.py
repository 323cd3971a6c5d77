"""What one serving process holds (issue 15, docs/benchmarks.md "Idle upkeep and what a
channel costs"): the modules it imports, the way an agent channel reaches the hub, and the
lighter WebSocket protocol's queue and flow-control flag."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import lean_websocket_server
from voipcloud.api.agent_channel import CHANNEL_PATH, ChannelDispatch
from voipcloud.api.ws_protocol import LeanWebSocketProtocol, _Inbox, _Writable

# click stays: uvicorn imports it (its command line)
HEAVY = ("boto3", "botocore", "s3transfer", "httpx", "rich", "typer")


def test_a_serving_worker_imports_no_s3_client_no_http_client_no_terminal_ui() -> None:
    code = (
        "import json, sys; import voipcloud.api.app, voipcloud.api.server, voipcloud.cli.serve; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_the_s3_backend_loads_botocore_when_one_is_made() -> None:
    code = (
        "import sys; from voipcloud.services import storage_backends as b; "
        "assert 'botocore' not in sys.modules; "
        "print(b._errors()[1].__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "botocore.exceptions"


async def _dispatch(path: str, kind: str) -> str:
    seen: list[str] = []

    class Hub:
        async def handle(self, websocket: object, receive: object = None) -> None:
            assert receive is nothing  # the ASGI receive itself: no Starlette frame in between
            seen.append("hub")

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append("app")

    async def nothing() -> dict[str, str]:
        return {}

    async def drop(message: object) -> None:
        pass

    dispatch = ChannelDispatch(app, Hub())  # type: ignore[arg-type]
    scope = {"type": kind, "path": path, "headers": [], "query_string": b""}
    await dispatch(scope, nothing, drop)
    return seen[0]


@pytest.mark.parametrize(
    ("path", "kind", "goes_to"),
    [
        (CHANNEL_PATH, "websocket", "hub"),
        (CHANNEL_PATH, "http", "app"),  # a plain GET of the channel's path: FastAPI answers
        ("/api/v1/agent/channel/x", "websocket", "app"),
        ("/api/v1/nodes", "http", "app"),
        ("/", "lifespan", "app"),
    ],
)
def test_only_the_channel_upgrade_goes_to_the_hub(path: str, kind: str, goes_to: str) -> None:
    assert asyncio.run(_dispatch(path, kind)) == goes_to


def test_served_config_gives_uvicorn_the_dispatcher_and_the_lean_protocol(tmp_path: Path) -> None:
    from voipcloud.api import server
    from voipcloud.api.app import create_app
    from voipcloud.config import Settings

    settings = Settings(data_dir=tmp_path)
    app = create_app(settings)
    try:
        config = server.config(app, settings)
        assert isinstance(config.app, ChannelDispatch)
        assert config.app.app is app
        assert config.app.hub is app.state.hub
        assert config.ws is LeanWebSocketProtocol
        # the dispatcher's `__call__` returns the coroutine it hands on (not a coroutine
        # function): uvicorn must be told it is ASGI 3, not guess ASGI 2 from it
        assert config.interface == "asgi3"
    finally:
        app.state.controller.ctx.db.dispose()


def test_inbox_hands_items_in_order_and_wakes_a_waiter() -> None:
    async def scenario() -> list[object]:
        drained: list[int] = []
        inbox = _Inbox(lambda: drained.append(inbox.qsize()))
        assert inbox.empty()
        got: list[object] = []

        async def reader() -> None:
            for _ in range(3):
                got.append(await inbox.get())

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)  # the reader waits on an empty inbox
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        await asyncio.sleep(0)
        inbox.put_nowait(3)
        await asyncio.wait_for(task, 1)
        assert inbox.empty()
        assert inbox.qsize() == 0
        # told each time a get took the last item (uvicorn resumes reading then), not after 1
        assert drained == [0, 0]
        return got

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_inbox_a_cancelled_waiter_does_not_take_the_next_item_from_another() -> None:
    async def scenario() -> object:
        inbox = _Inbox(lambda: None)
        first = asyncio.create_task(inbox.get())
        second = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        inbox.put_nowait("x")
        result = await asyncio.wait_for(second, 1)
        assert first.cancelled()
        return result

    assert asyncio.run(scenario()) == "x"


def test_writable_blocks_while_cleared_and_resumes_on_set() -> None:
    async def scenario() -> None:
        flag = _Writable()
        assert flag.is_set()
        await asyncio.wait_for(flag.wait(), 1)  # set: no wait
        flag.clear()
        waiter = asyncio.create_task(flag.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        flag.set()
        assert await asyncio.wait_for(waiter, 1) is True

    asyncio.run(scenario())


def test_inbox_a_waiter_woken_then_cancelled_passes_the_item_on() -> None:
    async def scenario() -> object:
        inbox = _Inbox(lambda: None)
        first = asyncio.create_task(inbox.get())
        second = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        inbox.put_nowait("x")  # wakes the first waiter ...
        first.cancel()  # ... which is cancelled before it runs again
        result = await asyncio.wait_for(second, 1)
        assert first.cancelled()
        return result

    assert asyncio.run(scenario()) == "x"


async def _served_scope(path: str) -> tuple[dict[str, object], list[object], object]:
    """A real uvicorn server with the lean protocol on loopback; a real WebSocket client
    opens `path` with a credential header and sends one frame. What the protocol and the
    ASGI scope still hold once the application has that frame."""
    from websockets.asyncio.client import connect

    held: dict[str, object] = {}
    got_frame = asyncio.Event()

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "websocket":
            return
        assert await receive() == {"type": "websocket.connect"}  # type: ignore[operator]
        # what the hub does: read the credential, then accept
        held["authorization"] = dict(scope["headers"]).get(b"authorization")  # type: ignore[call-overload]
        await send({"type": "websocket.accept"})  # type: ignore[operator]
        held["frame"] = await receive()  # type: ignore[operator]
        held["scope"] = scope
        got_frame.set()
        await receive()  # type: ignore[operator]  # the client's close

    async with lean_websocket_server(app) as (server, port):
        headers = {"Authorization": "Bearer secret-credential", "X-Padding": "p" * 500}
        async with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers) as ws:
            await ws.send("hello")
            await asyncio.wait_for(got_frame.wait(), 10)
            (protocol,) = server.server_state.connections
            request = protocol.conn.parser.gi_frame.f_locals.get("request")  # type: ignore[attr-defined]
            scope = held["scope"]
            assert isinstance(scope, dict)
            snapshot = dict(scope)
            if "headers" in scope:
                snapshot["headers"] = list(scope["headers"])
            return snapshot, [held["authorization"], held["frame"]], request


def test_an_accepted_agent_channel_keeps_no_handshake_headers_and_a_small_scope() -> None:
    scope, seen, request = asyncio.run(_served_scope(CHANNEL_PATH))
    # the application read the credential before accepting, and frames still flow
    assert seen == [b"Bearer secret-credential", {"type": "websocket.receive", "text": "hello"}]
    assert sorted(scope) == ["client", "path", "query_string", "scheme", "server", "type"]
    assert scope["path"] == CHANNEL_PATH
    assert request is not None
    assert list(request.headers.raw_items()) == []


def test_another_websocket_path_keeps_its_whole_scope() -> None:
    scope, seen, request = asyncio.run(_served_scope("/some/other/socket"))
    assert seen[0] == b"Bearer secret-credential"
    assert {"headers", "subprotocols", "extensions", "raw_path"} <= set(scope)
    assert (b"authorization", b"Bearer secret-credential") in scope["headers"]  # type: ignore[operator]
    assert request is not None
    assert request.headers["X-Padding"] == "p" * 500
