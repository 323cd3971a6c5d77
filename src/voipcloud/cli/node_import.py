"""`voipcloud node import FILE`: enrol many nodes with their roles (POST /nodes/import).

    voipcloud node import nodes.csv --keys-out keys.csv
    voipcloud node import nodes.json --output json

FILE is JSON (`{"nodes": [...]}` or the list itself, rows as the API takes them) or CSV (a
header naming `hostname`, `private_ip` and optionally `public_ip`, `container_id`, `roles`
and `<role>.<parameter>` columns; docs/operations.md, "Enrolling many nodes"); `-` reads
standard input. The rows go to the controller in parts of PART; each row is created or refused
on its own. The session keys are never printed unless `--show-keys` asks: `--keys-out FILE`
writes them (node_id,hostname,session_key) to a new file only its owner can read (0600).
Exit 0 when every row was created, 1 when any was refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from voipcloud.cli.client import SESSION_KEY_FILE, UsageProblem, client_from_context
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
)
from voipcloud.domain import imports
from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.imports import ImportOutcome, ImportResult

PART = 1000  # rows per request: each answers well within the client's timeout
KEYS_MODE = 0o600


def read_rows(source: str) -> list[dict[str, Any]]:
    """The rows of FILE (JSON or CSV, by its content); UsageProblem naming what is wrong."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"cannot read {source}: {exc}") from exc
    if text.lstrip()[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageProblem(f"{source} is not valid JSON: {exc}") from exc
        rows = data.get("nodes") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UsageProblem(
                f'{source}: expected {{"nodes": [...]}} or a list of objects (one per node)'
            )
        if not rows:
            raise UsageProblem(f"{source} lists no nodes")
        return rows
    try:
        return imports.rows_from_csv(text)
    except InvalidInput as exc:
        raise UsageProblem(f"{source}: {exc.errors[0].message}") from exc


def open_keys_file(path: Path) -> int:
    """A new file for the keys, 0600 from its creation (before any node is created, so that
    a key is never made that cannot be saved); its descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        descriptor = os.open(path, flags, KEYS_MODE)
    except FileExistsError:
        raise UsageProblem(f"{path} exists; give a new file for the keys") from None
    except OSError as exc:
        raise UsageProblem(f"cannot create {path}: {exc}") from exc
    os.fchmod(descriptor, KEYS_MODE)  # whatever the umask
    return descriptor


def write_keys(descriptor: int, results: list[ImportResult]) -> int:
    """The created nodes' keys (node_id,hostname,session_key); how many."""
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(imports.keys_csv(results))
    return sum(1 for r in results if r.created and r.session_key)


def _result(found: dict[str, Any], offset: int) -> ImportResult:
    return ImportResult(
        index=offset + int(found["index"]),
        outcome=ImportOutcome(found["outcome"]),
        hostname=found.get("hostname"),
        node_id=found.get("node_id"),
        session_key=found.get("session_key"),
        field=found.get("field"),
        rule=found.get("rule"),
        reason=found.get("reason"),
    )


def import_nodes(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A JSON or CSV file of nodes; - for stdin.")],
    keys_out: Annotated[
        Path | None,
        typer.Option(
            "--keys-out",
            help="Write node_id,hostname,session_key of the created nodes to this new file "
            "(mode 0600).",
        ),
    ] = None,
    show_keys: Annotated[
        bool,
        typer.Option("--show-keys", help="Print the session keys too (never on a shared screen)."),
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add many nodes with their roles: each row checked by the rules of `node add` and `role
    assign`, created or refused on its own. Exit 0 when all were created, 1 otherwise."""
    rows = read_rows(file)
    client = client_from_context(ctx)
    descriptor = open_keys_file(keys_out) if keys_out is not None else None
    results: list[ImportResult] = []
    enrolment: dict[str, Any] = {}
    try:
        for start in range(0, len(rows), PART):
            answer = client.post("/nodes/import", json={"nodes": rows[start : start + PART]})
            results.extend(_result(r, start) for r in answer["results"])
            enrolment = answer.get("enrolment") or enrolment
    finally:  # the keys of the parts done are kept, even when a later part failed
        saved = write_keys(descriptor, results) if descriptor is not None else 0
        if keys_out is not None and not saved and not results:
            keys_out.unlink(missing_ok=True)
    created, refused = imports.summary(results)
    if wants_json(output):
        print_json(
            {
                "created": created,
                "refused": refused,
                "results": [
                    {
                        k: v
                        for k, v in _public(r).items()
                        if v is not None and (show_keys or k != "session_key")
                    }
                    for r in results
                ],
            }
        )
    else:
        _print(results, show_keys=show_keys, title=f"Import: {created} created, {refused} refused")
    with_keys = sum(1 for r in results if r.created and r.session_key)
    if keys_out is not None:
        note(f"{saved} session key(s) written to {keys_out} (mode 0600): put each in")
        note(f"{SESSION_KEY_FILE} on its node, then start its agent:")
        if enrolment.get("install_command"):
            note(f"  {enrolment['install_command']}")
    elif with_keys and not show_keys:
        note(
            f"{with_keys} session key(s) not shown: `voipcloud node session-key NODE` shows "
            "one (next time, --keys-out FILE writes them all)."
        )
    if refused:
        raise typer.Exit(1)


def _public(result: ImportResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "outcome": result.outcome.value,
        "hostname": result.hostname,
        "node_id": result.node_id,
        "session_key": result.session_key,
        "field": result.field,
        "rule": result.rule,
        "reason": result.reason,
    }


def _print(results: list[ImportResult], *, show_keys: bool, title: str) -> None:
    from rich.text import Text

    columns = ["Row", "Hostname", "Outcome", "ID", "Why"]
    if show_keys:
        columns.append("Session key")
    rows = []
    for r in results:
        why = ""
        if not r.created:
            where = f"{r.field}: " if r.field else ""
            why = f"{where}{r.reason}" + (f" ({r.rule})" if r.rule else "")
        row: list[Any] = [
            r.index + 1,
            r.hostname,
            Text(r.outcome.value, style="green" if r.created else "red"),
            r.node_id,
            why,
        ]
        if show_keys:
            row.append(r.session_key)
        rows.append(row)
    with contextlib.suppress(BrokenPipeError):
        print_table(columns, rows, title=title)


def register(nodes_app: typer.Typer) -> None:
    """Add the command to `voipcloud node`."""
    nodes_app.command("import")(import_nodes)
