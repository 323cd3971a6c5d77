"""What an open agent channel waits in and holds, on the server `voipcloud serve` runs (real
uvicorn, real WebSocket client, SQLite and PostgreSQL).

Every coroutine an open channel's task waits in is kept as long as the connection: ~0.23 KiB
each, 11 MiB at 50,000 channels (docs/benchmarks.md, "One frame a channel, and a compact
protocol object"). The chain must be uvicorn's `run_asgi`, the hub's `handle`, and the inbox's
`get`: no dispatcher, no read loop of its own, no Starlette or uvicorn `receive` in between.
The protocol object keeps only what differs from its at-rest values. And the channel still
does its work through that one frame: beats, messages, the close of a binary frame.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
from typing import Any

from tests.integration.test_agent_channel_cache import Served, served  # noqa: F401 (fixture)
from tests.integration.test_agent_security import add_node, assign, channel, close_code, expect
from tests.integration.test_agent_security import join as join_node
from voipcloud import protocol
from voipcloud.api.ws_protocol import AT_REST, LeanWebSocketProtocol

API = "/api/v1"
EXPECTED = ["WebSocketsSansIOProtocol.run_asgi", "AgentHub.handle", "_Inbox.get"]


def _chain(coroutine: Any) -> list[str]:
    names = []
    while isinstance(coroutine, types.CoroutineType):
        names.append(coroutine.__qualname__)
        coroutine = coroutine.cr_await
    return names


def channel_chains(server: Served) -> list[list[str]]:
    """The coroutine chain of every task of the server's loop that runs a channel."""
    loop = server.hub._loop
    assert loop is not None

    async def chains() -> list[list[str]]:
        found = [_chain(task.get_coro()) for task in asyncio.all_tasks()]
        return [chain for chain in found if "AgentHub.handle" in chain]

    return asyncio.run_coroutine_threadsafe(chains(), loop).result(timeout=10)


def waits_again(server: Served) -> list[list[str]]:
    """The chains once every channel is back in its inbox (or as they are after 10 s); on
    the way there a chain may only pass through the hub's own frames."""
    deadline = time.monotonic() + 10
    while True:
        chains = channel_chains(server)
        if all(chain == EXPECTED for chain in chains) or time.monotonic() > deadline:
            return chains
        for chain in chains:
            assert chain[:3] in (EXPECTED, [*EXPECTED[:2], "AgentHub._message"]), chain
        time.sleep(0.02)


def test_an_open_channel_waits_in_the_hub_frame_alone(served: Served) -> None:  # noqa: F811
    c = served.client
    node_id = add_node(c, "frames-01")
    token = expect(join_node(served.api, assign(c, node_id, "wk")), 200)["agent_token"]
    hello = protocol.Hello(inventory=protocol.Inventory()).model_dump_json(exclude_none=True)
    with channel(served.base_url, token) as ws:
        ws.send(hello)
        assert json.loads(ws.recv(timeout=10))["type"] == "desired"
        assert waits_again(served) == [EXPECTED]
        (open_channel,) = served.hub._channels[node_id]
        connection = open_channel.websocket._send.__self__  # uvicorn's protocol object
        assert isinstance(connection, LeanWebSocketProtocol)
        held = vars(connection)
        at_rest = [n for n, v in AT_REST.items() if n in held and held[n] == v]
        # (the frames read after the accept set these two again, to the same values)
        assert set(at_rest) <= {"curr_msg_data_type", "read_paused"}, at_rest
        assert sys.getsizeof(held) < 800, sorted(held)  # uvicorn's own: 38 keys, 1,584 bytes
        assert connection.handshake_complete  # read from the class
        assert not connection.close_sent
        # a beat through that frame: presence hears it (the protocol hands it to `_beat`)
        heard = open_channel.heard
        time.sleep(0.05)
        ws.send(protocol.Beat().model_dump_json())
        deadline = time.monotonic() + 10
        while open_channel.heard == heard:
            assert time.monotonic() < deadline, "the beat was not heard"
            time.sleep(0.05)
        # a message other than a beat still goes through the frame to the hub
        ws.send(protocol.Problem(reason="disk almost full").model_dump_json())
        deadline = time.monotonic() + 10
        while "disk almost full" not in json.dumps(expect(c.get(f"{API}/events"), 200)):
            assert time.monotonic() < deadline, "the problem report was not recorded"
            time.sleep(0.1)
        # the event commits in a worker thread a moment before the coroutine is back in the
        # inbox: until then the chain is the hub's own `_message` (CI saw it once)
        assert waits_again(served) == [EXPECTED]
        ws.send(b"binary")  # refused: the channel ends, and its task with it
        assert close_code(ws) == protocol.CLOSE_POLICY
        assert vars(connection)["close_sent"] is True  # set again on the instance
    deadline = time.monotonic() + 10
    while channel_chains(served):
        assert time.monotonic() < deadline, "the channel's task outlived it"
        time.sleep(0.05)
    assert served.hub.connected_count() == 0


def test_a_refused_credential_leaves_no_task_and_no_handshake_slot(
    served: Served,  # noqa: F811
) -> None:
    admission = served.hub.admission
    with channel(served.base_url, "not-a-credential") as ws:
        assert close_code(ws) == protocol.CLOSE_UNAUTHORIZED
    deadline = time.monotonic() + 10
    while channel_chains(served) or admission.in_progress:
        assert time.monotonic() < deadline, "the refused channel was not let go"
        time.sleep(0.05)
