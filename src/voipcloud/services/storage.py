"""Storage Configuration and the resource store (SPEC.md section 7)."""

from __future__ import annotations

from voipcloud.services.context import Context


class StorageService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
