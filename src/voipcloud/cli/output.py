"""What the operator commands print: Rich tables for people, JSON for scripts.

Read commands take `output: OutputOption = "table"` and branch on `wants_json(output)`.
JSON goes to stdout exactly as the API answered it (indented), so `jq` and scripts can rely
on the field names of API.md. Tables, confirmations and progress go through Rich; messages
for the operator that are not the command's result go to stderr (`note`).

Without a terminal (a pipe, a file, CI) Rich would lay everything out for 80 columns and fold
IPs, keys and hostnames in the middle; there the console is as wide as the content needs
(`NO_TERMINAL_WIDTH`), so a value is never split across lines. On a terminal, long values
fold to its width as before.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from voipcloud.domain.statuses import STATUS_INFO, NodeStatus

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table for people, json for scripts.", show_default=True),
]

# Rich knows the 256 xterm names; the status palette uses CSS names, so map the few that differ.
_RICH_COLOURS = {
    "grey": "grey50",
    "gray": "grey50",
    "orange": "dark_orange",
    "black": "bright_black",
}


def wants_json(output: OutputFormat | str) -> bool:
    return str(output) == OutputFormat.JSON.value


# wide enough for any row: a table is as wide as its content, never padded to this
NO_TERMINAL_WIDTH = 100_000

IfMatchOption = Annotated[
    str | None,
    typer.Option(
        "--if-match",
        help="The ETag you read the resource at (`-o json` of its read command shows it): "
        "refused if it changed since. Default: the version this command reads first.",
    ),
]


def _width(stream: Any) -> int | None:
    """None on a terminal (Rich measures it); else a width no value has to fold at."""
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        pass
    return NO_TERMINAL_WIDTH


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=_width(sys.stdout))


def error_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, width=_width(sys.stderr))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """A message for the operator beside the result (stderr, so stdout stays parseable)."""
    typer.echo(message, err=True)


def rich_colour(name: str) -> str:
    from rich.color import Color, ColorParseError

    candidate = _RICH_COLOURS.get(name, name)
    try:
        Color.parse(candidate)
    except ColorParseError:
        return "default"
    return candidate


def status_text(status: str, reason: str | None = None) -> Text:
    """The status in its colour (from the one status definition), with its reason if any."""
    from rich.text import Text

    try:
        colour = rich_colour(STATUS_INFO[NodeStatus(status)].colour)
    except ValueError:
        colour = "default"
    text = Text(status, style=f"bold {colour}")
    if reason:
        text.append(f" ({reason})", style="dim")
    return text


def cell(value: Any) -> Any:
    """A table cell: Rich renderables as they are, lists comma separated, None as a dash."""
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or Text("-", style="dim")
    return Text(str(value))


def when(value: str | None) -> str | None:
    """An API timestamp shortened for a table: 2026-01-02 03:04:05 (UTC as sent)."""
    if not value:
        return None
    return value.replace("T", " ").split(".")[0].removesuffix("Z").split("+")[0]


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    from rich.table import Table

    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    console().print(table)


def print_record(title: str, fields: Mapping[str, Any]) -> None:
    """A two-column table: field, value (the Quick info layout)."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in fields.items():
        table.add_row(name, cell(value))
    console().print(table)
