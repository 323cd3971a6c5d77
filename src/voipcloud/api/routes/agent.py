"""The node agent's endpoints (authenticated by session key, then by the agent credential)."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket

from voipcloud import protocol
from voipcloud.services.controller import Controller

router = APIRouter(prefix="/agent", tags=["agent"])


@router.post("/join", response_model=protocol.JoinAnswer)
async def join(body: protocol.JoinRequest, request: Request) -> protocol.JoinAnswer:
    """An agent presents its node's session key and gets its own credential. The joins that
    arrive together are written in one transaction (group commit), each answered alone."""
    peer = request.client.host if request.client else "unknown"
    # read here, not through a dependency: a plain one would cost a worker thread per join
    controller: Controller = request.app.state.controller
    joined = await controller.agents.join_grouped(body, peer=peer)
    return protocol.JoinAnswer(
        node_id=joined.node_id,
        agent_token=joined.agent_token,
        heartbeat_interval=controller.ctx.heartbeat_interval,
    )


@router.websocket("/channel")
async def channel(websocket: WebSocket) -> None:
    """The agent's persistent channel (Authorization: Bearer <agent_token>)."""
    await websocket.app.state.hub.handle(websocket)
