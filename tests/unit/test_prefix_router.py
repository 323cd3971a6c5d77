"""The API's router skips its routes for a path outside its prefix (api/prefix_router.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from tests.support.server import serve_in_thread
from voipcloud.api.prefix_router import PrefixRouter


class CountedRoute(APIRoute):
    """An APIRoute that counts how often the router asks it whether a request is its."""

    asked: ClassVar[list[str]] = []

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        CountedRoute.asked.append(scope["path"])
        return super().matches(scope)


def _app() -> FastAPI:
    app = FastAPI()
    things = APIRouter(prefix="/things", route_class=CountedRoute)

    @things.get("")
    def list_things() -> dict[str, Any]:
        return {"things": []}

    @things.get("/{thing_id}")
    def one_thing(thing_id: int) -> dict[str, Any]:
        return {"id": thing_id}

    api = PrefixRouter(prefix="/api/v1")
    api.include_router(things)

    @api.get("")
    def api_root() -> dict[str, str]:
        return {"api": "v1"}

    app.include_router(api)

    @app.get("/")
    def page() -> dict[str, str]:
        return {"page": "home"}

    @app.get("/api/v1x")
    def beside() -> dict[str, str]:
        return {"beside": "the prefix"}

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with serve_in_thread(_app()) as url:
        yield url


@pytest.fixture
def client(served: str) -> Iterator[httpx.Client]:
    CountedRoute.asked.clear()
    with httpx.Client(base_url=served, timeout=30) as client:
        yield client


def test_a_path_outside_the_prefix_never_walks_the_api_routes(client: httpx.Client) -> None:
    assert client.get("/").json() == {"page": "home"}
    assert client.get("/api/v1x").json() == {"beside": "the prefix"}  # a prefix of the text only
    assert client.get("/nowhere").status_code == 404
    assert CountedRoute.asked == []


def test_the_paths_under_the_prefix_match_as_before(client: httpx.Client) -> None:
    assert client.get("/api/v1/things").json() == {"things": []}
    assert client.get("/api/v1/things/7").json() == {"id": 7}
    assert client.get("/api/v1").json() == {"api": "v1"}
    assert client.get("/api/v1/things/seven").status_code == 422
    assert client.get("/api/v1/nothing").status_code == 404
    assert client.post("/api/v1/things").status_code == 405  # a partial match: the method
    assert "/api/v1/things/7" in CountedRoute.asked


def _scope(path: str, root_path: str = "") -> Scope:
    return {"type": "http", "method": "GET", "path": path, "root_path": root_path}


def test_the_root_path_is_taken_off_before_the_prefix_is_checked() -> None:
    api = PrefixRouter(prefix="/api/v1")
    assert [api.owns(p) for p in ("/api/v1", "/api/v1/things/3")] == [True, True]
    assert [api.owns(p) for p in ("/", "/api/v1x", "/api")] == [False, False, False]
    assert api.matches(_scope("/proxy/things", root_path="/proxy")) == (Match.NONE, {})
    # a path under the prefix behind a proxy's root path is left to FastAPI's own matching
    app = _app()
    (included,) = [r for r in app.router.routes if getattr(r, "original_router", None)]
    scope = _scope("/proxy/api/v1/things/3", root_path="/proxy")
    assert included.matches(scope)[0] is Match.FULL


@pytest.mark.parametrize("prefix", ["", "api", "/api/"])
def test_a_prefix_must_be_a_path_without_a_trailing_slash(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        PrefixRouter(prefix=prefix)
