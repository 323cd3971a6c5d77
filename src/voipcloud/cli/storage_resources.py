"""`voipcloud storage put|get|list|delete`: stored resources, streamed over HTTP.

Resources are bytes, not JSON, so these commands use their own streaming httpx client with the
stored login, and translate error answers with the API client's `refusal_from`.
"""

from __future__ import annotations

import hashlib
import mimetypes
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer

from voipcloud.cli.client import (
    CliError,
    Unreachable,
    client_from_context,
    refusal_from,
    stored_login,
)
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
    when,
)

if TYPE_CHECKING:
    import httpx

CHUNK = 1024 * 1024


class Kind(StrEnum):
    faxes = "faxes"
    recordings = "recordings"
    voicemail = "voicemail"


class Backend(StrEnum):
    local = "local"
    s3 = "s3"


KindArgument = Annotated[Kind, typer.Argument(help="faxes, recordings or voicemail.")]
KeyArgument = Annotated[str, typer.Argument(help="The resource key, e.g. 1001/msg-0001.wav.")]


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _raw(ctx: typer.Context) -> httpx.Client:
    """A streaming HTTP client with the stored login (resources are bytes, not JSON)."""
    import httpx

    login = stored_login(ctx)
    client = httpx.Client(
        base_url=login.controller.rstrip("/") + "/api/v1",
        headers={"Authorization": f"Bearer {login.token}"},
        timeout=httpx.Timeout(60.0, connect=10.0),
    )
    ctx.call_on_close(client.close)
    return client


def _check(answer: httpx.Response) -> None:
    if answer.status_code >= 400:
        answer.read()
        try:
            body = answer.json()
        except ValueError:
            body = None
        raise refusal_from(answer.status_code, body, answer.reason_phrase)


def _resource_path(kind: Kind, key: str) -> str:
    # dots encoded too: httpx would resolve a "." or ".." segment away and the controller
    # would answer "Not Found" instead of naming what is wrong with the key
    encoded = quote(key, safe="/").replace(".", "%2E")
    return f"/storage/{kind.value}/resources/{encoded}"


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def put(
    ctx: typer.Context,
    kind: KindArgument,
    key: KeyArgument,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="What to store.")],
    content_type: Annotated[
        str | None, typer.Option(help="Media type (default: guessed from the file name).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Store a file as a resource (streamed; its sha256 is checked by the controller)."""
    import httpx

    guessed = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    headers = {"Content-Type": guessed, "X-Checksum-Sha256": _file_sha256(file)}
    try:
        with file.open("rb") as body:
            answer = _raw(ctx).put(_resource_path(kind, key), content=body, headers=headers)
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach the controller: {exc}") from exc
    _check(answer)
    stored = answer.json()
    if wants_json(output):
        print_json(stored)
        return
    note(
        f"Stored {kind.value}/{stored['key']}: {size_text(stored['size'])}, "
        f"sha256 {stored['sha256']}, on {stored['backend']}."
    )


def get(
    ctx: typer.Context,
    kind: KindArgument,
    key: KeyArgument,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Where to write (default: stdout).")
    ] = None,
) -> None:
    """Fetch a resource (streamed), verifying its sha256."""
    import httpx

    hasher = hashlib.sha256()
    target = file.with_name(f".{file.name}.part") if file else None
    try:
        with _raw(ctx).stream("GET", _resource_path(kind, key)) as answer:
            _check(answer)
            expected = answer.headers.get("x-checksum-sha256")
            sink = target.open("wb") if target else sys.stdout.buffer
            try:
                for chunk in answer.iter_bytes(CHUNK):
                    hasher.update(chunk)
                    sink.write(chunk)
            finally:
                if target:
                    sink.close()
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach the controller: {exc}") from exc
    if expected and hasher.hexdigest() != expected:
        if target:
            target.unlink(missing_ok=True)
        raise CliError(f"{kind.value}/{key} arrived damaged (sha256 mismatch); try again")
    if target and file:
        target.replace(file)
        note(f"Wrote {kind.value}/{key} to {file} (sha256 verified).")


def list_resources(
    ctx: typer.Context,
    kind: KindArgument,
    prefix: Annotated[str, typer.Option(help="Only keys starting with this.")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List stored resources of a kind, by key."""
    page = client_from_context(ctx).get(
        f"/storage/{kind.value}/resources",
        params={"prefix": prefix or None, "limit": limit, "offset": offset},
    )
    if wants_json(output):
        print_json(page)
        return
    items = page["items"]
    print_table(
        ["Key", "Type", "Size", "Backend", "sha256", "Updated"],
        (
            [
                r["key"],
                r["content_type"],
                size_text(r["size"]),
                r["backend"],
                r["sha256"][:16] + "…",
                when(r["updated_at"]),
            ]
            for r in items
        ),
        caption=f"{len(items)} shown of {page['total']} {kind.value}",
    )


def delete(ctx: typer.Context, kind: KindArgument, key: KeyArgument) -> None:
    """Delete a resource from its backend and the store."""
    client_from_context(ctx).delete(_resource_path(kind, key))
    note(f"Deleted {kind.value}/{key}.")
