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
        async def handle(self, websocket: object) -> None:
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
    finally:
        app.state.controller.ctx.db.dispose()


def test_inbox_hands_items_in_order_and_wakes_a_waiter() -> None:
    async def scenario() -> list[object]:
        inbox = _Inbox()
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
        return got

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_inbox_a_cancelled_waiter_does_not_take_the_next_item_from_another() -> None:
    async def scenario() -> object:
        inbox = _Inbox()
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
        inbox = _Inbox()
        first = asyncio.create_task(inbox.get())
        second = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        inbox.put_nowait("x")  # wakes the first waiter ...
        first.cancel()  # ... which is cancelled before it runs again
        result = await asyncio.wait_for(second, 1)
        assert first.cancelled()
        return result

    assert asyncio.run(scenario()) == "x"
