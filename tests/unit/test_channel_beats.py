"""Beats handed from the WebSocket protocol to the hub without waking the channel's task
(api/ws_protocol.py, docs/benchmarks.md "Beats past the channel's task").

A real uvicorn server with `voipcloud serve`'s protocol on loopback, a real WebSocket client,
and an ASGI application that registers a beat callback as the hub does. What must hold: the
exact beat frame reaches the callback and never the application's `receive`; every other
frame (another spelling of a beat, a binary frame with the same bytes, any message) reaches
the application as before, in order; without a callback (none registered, or taken back)
beats reach the application too."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect

from tests.support.server import lean_websocket_server
from voipcloud.api.agent_channel import BEAT_TEXT, BEATS_EXTENSION, CHANNEL_PATH

END = "end-of-test"


async def _serve(path: str, frames: list[str | bytes], *, register: str) -> dict[str, Any]:
    """Send `frames` on `path`, then END; return what the application and the callback got.
    `register`: "yes" (callback for the whole channel), "no", or "then-drop" (the callback is
    taken back after the first message the application receives)."""
    got: dict[str, Any] = {"app": [], "beats": 0, "offered": False}
    done = asyncio.Event()

    def on_beat() -> None:
        got["beats"] += 1

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert await receive() == {"type": "websocket.connect"}
        take = scope.get("extensions", {}).get(BEATS_EXTENSION)
        got["offered"] = take is not None
        await send({"type": "websocket.accept"})
        if take is not None and register != "no":
            take(on_beat)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text", message.get("bytes"))
            got["app"].append(data)
            if register == "then-drop" and take is not None and len(got["app"]) == 1:
                take(None)
                await send({"type": "websocket.send", "text": "taken back"})
            if data == END:
                done.set()

    async with lean_websocket_server(app) as (_server, port):
        ws = await connect(f"ws://127.0.0.1:{port}{path}")
        try:
            for index, frame in enumerate(frames):
                await ws.send(frame)
                if register == "then-drop" and index == 0:  # until the callback is taken back
                    assert await asyncio.wait_for(ws.recv(), 10) == "taken back"
            await ws.send(END)
            await asyncio.wait_for(done.wait(), 10)
        finally:
            await ws.close()
    return got


def test_the_beat_frame_goes_to_the_callback_and_every_other_frame_to_the_application() -> None:
    spaced = '{"type": "beat"}'  # a beat too, but not the exact frame: the application's
    frames: list[str | bytes] = [
        "hello",
        BEAT_TEXT,
        BEAT_TEXT,
        spaced,
        BEAT_TEXT.encode(),  # binary: the hub closes the channel for it (1008)
        "report",
        BEAT_TEXT,
    ]
    got = asyncio.run(_serve(CHANNEL_PATH, frames, register="yes"))
    assert got["offered"]
    assert got["beats"] == 3
    assert got["app"] == ["hello", spaced, BEAT_TEXT.encode(), "report", END]


def test_without_a_callback_beats_reach_the_application() -> None:
    frames: list[str | bytes] = [BEAT_TEXT, "hello", BEAT_TEXT]
    got = asyncio.run(_serve(CHANNEL_PATH, frames, register="no"))
    assert got["offered"]
    assert got["beats"] == 0
    assert got["app"] == [BEAT_TEXT, "hello", BEAT_TEXT, END]


def test_a_callback_taken_back_leaves_the_beats_to_the_application() -> None:
    # the first message reaches the application, which takes its callback back, then says so
    frames: list[str | bytes] = ["hello", BEAT_TEXT, BEAT_TEXT]
    got = asyncio.run(_serve(CHANNEL_PATH, frames, register="then-drop"))
    assert got["beats"] == 0
    assert got["app"] == ["hello", BEAT_TEXT, BEAT_TEXT, END]


def test_only_the_agent_channel_is_offered_the_beat_callback() -> None:
    got = asyncio.run(_serve("/some/other/socket", [BEAT_TEXT], register="yes"))
    assert not got["offered"]
    assert got["app"] == [BEAT_TEXT, END]
