"""An APIRouter that says "not mine" at once to a path outside its prefix.

FastAPI (0.165) matches a request by walking every route of every included router, a regular
expression and its bookkeeping each: the REST API's ~150 routes were walked for every web page
and probe before theirs was reached (0.28 of the Cloud Management page's 0.3 ms of routing on a
2-core machine, docs/benchmarks.md, the listing's thirteenth pass). Every route of this
router's tree starts with its prefix, so a path that does not cannot match any of them: the
walk is skipped. A path that does goes through FastAPI's own matching, unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class PrefixRouter(APIRouter):
    """An APIRouter with a prefix (`/api/v1`), included at the application's top."""

    def __init__(self, *, prefix: str, **kwargs: Any) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"a prefix starts with / and does not end with one: {prefix!r}")
        super().__init__(prefix=prefix, **kwargs)

    def owns(self, path: str) -> bool:
        """Whether `path` (the route path, the root path taken off) is under the prefix."""
        return path == self.prefix or path.startswith(self.prefix + "/")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket") and not self.owns(get_route_path(scope)):
            return Match.NONE, {}
        return super().matches(scope)
