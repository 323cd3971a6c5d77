"""ETag and If-Match for the API (optimistic concurrency, `domain/versions.py`).

`GET /nodes/{id}`, `GET /infrastructure/properties` and `GET /storage` answer an `ETag`; each
role assignment in a node's detail carries its own `etag`. `PATCH`/`PUT`/`DELETE` of the same
resource take it back in `If-Match`: when the resource changed since, nothing is written and
the answer is 412 `{"detail", "rule": "stale-version", "changed": [field names]}` with the
current `ETag`. Without `If-Match` a write proceeds as before (last writer wins), so existing
clients keep working. A malformed `If-Match` is a 422 naming the header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.versions import Expected, Snapshot, StaleVersion

# what `Expected.parse` accepts, published so a client knows: `*`, or ETags separated by commas
_ETAG = r'(?:W/)?"?[0-9]{1,10}(?:\.[0-9]{1,10}){0,7}(?:-[A-Za-z0-9_-]*)?"?'
IF_MATCH_PATTERN = rf"^(?:\*|{_ETAG}(?:[ \t]*,[ \t]*{_ETAG})*)?$"
IF_MATCH_HELP = (
    "the ETag this resource was read with: the write is refused with 412 (rule "
    "`stale-version`) when it changed since; without it the write proceeds as before"
)


def if_match(
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=1024,
            # the schema says what parses; the check stays `Expected.parse` (its own message)
            # published as a string (absent when not sent), never as null
            json_schema_extra={"type": "string", "pattern": IF_MATCH_PATTERN},
            description=IF_MATCH_HELP,
        ),
    ] = None,
) -> Expected | None:
    """The `If-Match` header as the versions the writer read (None when absent)."""
    try:
        return Expected.parse(if_match)
    except ValueError as exc:
        raise InvalidInput.one(("header", "If-Match"), str(exc)) from None


def set_etag(response: Response, snapshot: Snapshot) -> None:
    response.headers["ETag"] = snapshot.etag


def stale_answer(exc: StaleVersion) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.message, "rule": exc.rule, "changed": exc.changed},
        status_code=412,
        headers={"ETag": exc.current.etag},
    )


def install(app: FastAPI) -> None:
    """412 for a stale If-Match (more specific than the 409 of every other rule)."""

    @app.exception_handler(StaleVersion)
    async def _stale(_request: Request, exc: StaleVersion) -> JSONResponse:
        return stale_answer(exc)


STALE_RESPONSE: dict[int | str, dict[str, object]] = {
    412: {
        "description": "`If-Match` names an older version: nothing was written; `rule` is "
        "`stale-version`, `changed` names the fields that changed, `ETag` is the current one"
    }
}


IfMatch = Annotated[Expected | None, Depends(if_match)]
