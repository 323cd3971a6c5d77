"""`voipcloud storage`: where faxes, recorded calls and voicemail are kept, and the resources.

    voipcloud storage show
    voipcloud storage set recordings --backend s3 --bucket pbx-calls --region eu-west-1 \\
        --access-key-id AKIA... --secret-access-key-stdin < secret.txt
    voipcloud storage test [KIND ...]
    voipcloud storage migrate recordings --follow
    voipcloud storage put voicemail 1001/msg-0001.wav ./msg.wav
    voipcloud storage get voicemail 1001/msg-0001.wav --file ./copy.wav
    voipcloud storage list voicemail --prefix 1001/
    voipcloud storage delete voicemail 1001/msg-0001.wav
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from voipcloud.cli import storage_resources as resources
from voipcloud.cli.client import (
    CliError,
    Unreachable,
    UsageProblem,
    WaitTimedOut,
    client_from_context,
)
from voipcloud.cli.output import (
    IfMatchOption,
    OutputFormat,
    OutputOption,
    error_console,
    note,
    print_json,
    print_table,
    wants_json,
)
from voipcloud.cli.storage_resources import Backend, Kind, KindArgument, size_text

app = typer.Typer(no_args_is_help=True, help="Storage Configuration and stored resources.")
POLL_INTERVAL = 0.25


def _location(kind: dict[str, Any]) -> str:
    if kind["backend"] == "local":
        return str(kind["local"]["path"])
    s3 = kind["s3"]
    where = f"s3://{s3['bucket']}/{s3['prefix']}".rstrip("/")
    where += f" ({s3['region']}"
    where += f", {s3['endpoint_url']})" if s3["endpoint_url"] else ")"
    return where


@app.command("show")
def show(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show the Storage Configuration of each kind (secret keys are never shown)."""
    data = client_from_context(ctx).get("/storage")
    if wants_json(output):
        print_json(data)
        return
    rows = []
    for kind in data.values():
        s3 = kind["s3"]
        usage = ", ".join(
            f"{u['count']} on {u['backend']} ({size_text(u['bytes'])})" for u in kind["usage"]
        )
        rows.append(
            [
                kind["label"],
                kind["backend"],
                _location(kind),
                s3["server_side_encryption"] if kind["backend"] == "s3" else None,
                s3["access_key_id_hint"],
                "set" if s3["secret_access_key_set"] else "not set",
                usage or "none",
                kind["pending_migration"] or None,
            ]
        )
    print_table(
        [
            "Kind",
            "Backend",
            "Location",
            "SSE",
            "Access key",
            "Secret key",
            "Resources",
            "To migrate",
        ],
        rows,
        title="Storage Configuration",
    )


@app.command("set")
def set_kind(
    ctx: typer.Context,
    kind: KindArgument,
    backend: Annotated[Backend | None, typer.Option(help="local or s3.")] = None,
    path: Annotated[str | None, typer.Option(help="Local directory (absolute).")] = None,
    bucket: Annotated[str | None, typer.Option(help="S3 bucket.")] = None,
    region: Annotated[str | None, typer.Option(help="S3 region, e.g. eu-west-1.")] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible store URL; '' for AWS.")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Key prefix in the bucket.")] = None,
    access_key_id: Annotated[
        str | None, typer.Option(help="S3 access key ID (write-only).")
    ] = None,
    secret_access_key_stdin: Annotated[
        bool, typer.Option("--secret-access-key-stdin", help="Read the S3 secret key from stdin.")
    ] = False,
    sse: Annotated[
        bool | None, typer.Option("--sse/--no-sse", help="S3 server-side encryption.")
    ] = None,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change where a kind is stored; options left out keep their value."""
    change: dict[str, Any] = {}
    if backend is not None:
        change["backend"] = backend.value
    if path is not None:
        change["local"] = {"path": path}
    s3: dict[str, Any] = {
        name: value
        for name, value in {
            "bucket": bucket,
            "region": region,
            "endpoint_url": endpoint_url,
            "prefix": prefix,
            "access_key_id": access_key_id,
            "server_side_encryption": sse,
        }.items()
        if value is not None
    }
    if secret_access_key_stdin:
        secret = sys.stdin.readline().rstrip("\n")
        if not secret:
            raise UsageProblem("--secret-access-key-stdin read an empty line")
        s3["secret_access_key"] = secret
    if s3:
        change["s3"] = s3
    if not change:
        raise UsageProblem("nothing to change: give --backend, --path or S3 options")
    client = client_from_context(ctx)
    read = if_match or client.etag_of("/storage")
    data = client.put("/storage", json={kind.value: change}, if_match=read)
    if wants_json(output):
        print_json(data[kind.value])
        return
    saved = data[kind.value]
    note(f"Storage of {kind.value}: {saved['backend']} at {_location(saved)}.")
    if saved["pending_migration"]:
        note(
            f"{saved['pending_migration']} {kind.value} resources are held by the other backend; "
            f"move them with `voipcloud storage migrate {kind.value} --follow`."
        )


@app.command("test")
def probe_kinds(
    ctx: typer.Context,
    kinds: Annotated[
        list[Kind] | None, typer.Argument(help="Kinds to test (default: all).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Write, read back (checksum compared) and delete a probe object, per kind."""
    body = {"kinds": [k.value for k in kinds]} if kinds else None
    data = client_from_context(ctx).post("/storage/test", json=body)
    if wants_json(output):
        print_json(data)
    else:
        print_table(
            ["Kind", "Backend", "Result", "Time", "Message"],
            (
                [
                    r["kind"],
                    r["backend"],
                    "ok" if r["ok"] else r["reason"],
                    f"{r['milliseconds']:.0f} ms",
                    r["message"],
                ]
                for r in data["results"]
            ),
            title="Storage test",
        )
    failed = [r for r in data["results"] if not r["ok"]]
    if failed:
        raise CliError(
            "; ".join(f"storage of {r['kind']} failed the test: {r['message']}" for r in failed)
        )


# --- migration ----------------------------------------------------------------------------


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    kind: KindArgument,
    follow: Annotated[bool, typer.Option("--follow", help="Show a progress bar until done.")] = (
        False
    ),
    status: Annotated[
        bool, typer.Option("--status", help="Only show the progress; start nothing.")
    ] = False,
    pause: Annotated[bool, typer.Option("--pause", help="Pause the running migration.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="With --follow: give up after seconds.")] = (
        3600.0
    ),
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Move the kind's resources to its active backend (resumes an interrupted migration)."""
    client = client_from_context(ctx)
    path = f"/storage/{kind.value}/migration"
    if pause:
        progress = client.post(f"{path}/pause")
    elif status:
        progress = client.get(path)
    else:
        progress = client.post(path)
    if follow and progress["status"] == "running":
        progress = _follow(client, path, progress, timeout=timeout)
    if wants_json(output):
        print_json(progress)
    else:
        note(_describe(progress))
        if progress["status"] in {"paused", "interrupted"}:
            note(f"Resume it where it stopped: `voipcloud storage migrate {kind.value} --follow`.")
    if progress["status"] == "failed":
        raise CliError(
            f"the migration of {kind.value} left {progress['total'] - progress['done']} "
            f"resources unmoved: {progress['last_error']}; fix the cause and resume it with "
            f"`voipcloud storage migrate {kind.value} --follow`"
        )


def _describe(p: dict[str, Any]) -> str:
    return (
        f"Migration of {p['kind']} from {p['source']} to {p['target']}: {p['status']}, "
        f"{p['done']} of {p['total']} resources ({size_text(p['bytes_done'])} of "
        f"{size_text(p['bytes_total'])})" + (f", {p['failed']} failed" if p["failed"] else "")
    )


def _follow(client: Any, path: str, progress: dict[str, Any], *, timeout: float) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[bytes]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=error_console(), transient=False) as bar:
        task = bar.add_task(
            f"{progress['kind']} → {progress['target']}",
            total=progress["total"],
            completed=progress["done"],
            bytes="",
        )
        while progress["status"] == "running":
            if time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"the migration of {progress['kind']} still runs after {timeout:g} s; "
                    f"follow it with `voipcloud storage migrate {progress['kind']} --status`"
                )
            time.sleep(POLL_INTERVAL)
            try:
                progress = client.get(path)
            except Unreachable:
                continue  # a controller restart: the migration resumes when started again
            bar.update(
                task,
                total=progress["total"],
                completed=progress["done"],
                bytes=f"{size_text(progress['bytes_done'])}/{size_text(progress['bytes_total'])}",
            )
    return progress


app.command("put")(resources.put)
app.command("get")(resources.get)
app.command("list")(resources.list_resources)
app.command("delete")(resources.delete)
