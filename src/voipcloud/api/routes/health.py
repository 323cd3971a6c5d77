"""Readiness."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 once the server is ready (migrations applied, first start done)."""
    return {"status": "ok"}
