"""REST routes: storage."""

from __future__ import annotations

from fastapi import APIRouter

from voipcloud.api.errors import REFUSALS

router = APIRouter(tags=["storage"], responses=REFUSALS)
