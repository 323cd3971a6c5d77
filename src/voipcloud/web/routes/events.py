"""The Events page: the audit history, filterable by node."""

from __future__ import annotations

from voipcloud.web.deps import web_router

router = web_router()
