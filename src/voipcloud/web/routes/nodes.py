"""Node pages: add, edit, View Info, roles, lifecycle actions, confirmations."""

from __future__ import annotations

from voipcloud.web.deps import web_router

router = web_router()
