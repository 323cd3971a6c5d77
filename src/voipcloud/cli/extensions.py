"""`voipcloud extension ...`: the extensions registry (two rules depend on how many exist)."""

from __future__ import annotations

from typing import Annotated

import typer

from voipcloud.cli.client import client_from_context
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
    when,
)

app = typer.Typer(no_args_is_help=True, help="The extensions registry.")


@app.command("list")
def list_extensions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List the provisioned extensions, by number."""
    page = client_from_context(ctx).get("/extensions", params={"limit": limit, "offset": offset})
    if wants_json(output):
        print_json(page)
        return
    items = page["items"]
    print_table(
        ["Number", "Label", "Created"],
        ([e["number"], e["label"], when(e["created_at"])] for e in items),
        caption=f"{len(items)} shown of {page['total']} extensions",
    )


@app.command("add")
def add_extension(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="The extension number, e.g. 1001.")],
    label: Annotated[str, typer.Option(help="A label for people.")] = "",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Provision an extension."""
    created = client_from_context(ctx).post("/extensions", json={"number": number, "label": label})
    if wants_json(output):
        print_json(created)
        return
    note(f"Extension {created['number']} provisioned.")


@app.command("delete")
def delete_extension(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="The extension number.")],
) -> None:
    """Remove an extension."""
    from urllib.parse import quote

    client_from_context(ctx).delete(f"/extensions/{quote(number, safe='')}")
    note(f"Extension {number} removed.")
