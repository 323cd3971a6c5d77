"""`voipcloud infra`: Infrastructure Properties and the Configuration Wizard."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from voipcloud.cli.client import ApiClient, UsageProblem, client_from_context
from voipcloud.cli.follow import follow_and_report, label
from voipcloud.cli.output import (
    IfMatchOption,
    OutputFormat,
    OutputOption,
    console,
    note,
    print_json,
    print_record,
    print_table,
    wants_json,
    when,
)
from voipcloud.cli.prompts import confirm

app = typer.Typer(
    no_args_is_help=True, help="Infrastructure Properties and the Configuration Wizard."
)
PROPERTIES = "/infrastructure/properties"
WIZARD = "/infrastructure/wizard"
FROM_STDIN = "-"


@app.command("show")
def show(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show the Infrastructure Properties (passwords are write-only: shown masked)."""
    data = client_from_context(ctx).get(PROPERTIES)
    if wants_json(output):
        print_json(data)
        return
    shown = {k: v for k, v in data.items() if k != "updated_at"}
    shown["updated_at"] = when(data.get("updated_at"))
    print_record("Infrastructure Properties", shown)


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; `key=-` reads the value from stdin (for passwords), or asks for it
    without echo on a terminal."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageProblem(f"{pair!r} is not key=value (e.g. system_domain=voip.example.com)")
        if key in changes:
            raise UsageProblem(f"{key} is given twice")
        if value == FROM_STDIN:
            value = _read_value(key)
        changes[key] = value
    return changes


def _read_value(key: str) -> str:
    if sys.stdin.isatty():
        return str(typer.prompt(key, hide_input=True, err=True))
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageProblem(f"{key}=- found no value on stdin (one line is read per key=-)")
    return value


def check_names(client: ApiClient, changes: dict[str, Any]) -> None:
    """Refuse (exit 2) names the controller does not know, and empty passwords: the API
    keeps a password sent empty (write-only), which on the command line would silently do
    nothing."""
    schema = {spec["name"]: spec for spec in client.get(f"{PROPERTIES}/schema")}
    unknown = [key for key in changes if key not in schema]
    if unknown:
        raise UsageProblem(
            f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(schema)}"
        )
    for key, value in changes.items():
        if schema[key]["secret"] and not str(value).strip():
            raise UsageProblem(
                f"{key} is empty: passwords are write-only and cannot be cleared; "
                f"give a new one ({key}=- reads it from stdin) or leave it out"
            )


def _property_names(incomplete: str) -> list[str]:
    """Shell completion of `infra set`: the property names, each followed by `=`."""
    from voipcloud.domain.properties import PROPERTIES as SPECS

    return [f"{spec.name}=" for spec in SPECS if spec.name.startswith(incomplete)]


def _impacts(title: str, impacts: list[dict[str, Any]]) -> None:
    rows = [
        [
            str(i["node_id"]),
            i["hostname"],
            f"{i['status_before']} → {i['status_after']}",
            i["reason"],
            ", ".join(f"{c['role']}.{c['parameter']}" for c in i["changes"]),
        ]
        for i in impacts
    ]
    print_table(["NodeID", "Hostname", "Status", "Reason", "Parameters"], rows, title=title)


@app.command("set")
def set_properties(
    ctx: typer.Context,
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="key=value ... (lists comma separated; key=- reads the value from stdin)",
            show_default=False,
            autocompletion=_property_names,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say which nodes would be marked Damaged.")
    ] = False,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change properties; Online nodes whose configuration moves are marked Damaged. Sends
    If-Match: refused if the properties changed since read."""
    changes = parse_assignments(assignments)
    client = client_from_context(ctx)
    check_names(client, changes)
    answer = client.request(
        "PUT",
        PROPERTIES,
        json=changes,
        params={"dry_run": "true" if dry_run else None},
        if_match=if_match or client.etag_of(PROPERTIES),
    )
    if wants_json(output):
        print_json(answer)
        return
    if not answer["changed"]:
        console().print("Nothing changes: these are the values already saved.")
        return
    verb = "Would change" if dry_run else "Changed"
    console().print(f"{verb}: {', '.join(answer['changed'])}.")
    if answer["affected"]:
        title = "Online nodes that would be marked Damaged" if dry_run else "Marked Damaged"
        _impacts(title, answer["affected"])
        if not dry_run:
            note("Use `voipcloud node fix NODE --wait` on each to re-apply its configuration.")
    else:
        console().print("No Online node is affected.")
    if answer["others"]:
        _impacts("Not Online (they take the new values at their next activation)", answer["others"])


def _plan_table(plan: dict[str, Any]) -> None:
    rows = []
    for role in plan["roles"]:
        params = "; ".join(
            f"{p['name']}={p['value']}"
            + (" (property)" if p["source"].startswith("property:") else "")
            for p in role["parameters"]
        )
        rows.append(
            [role["code"], role["name"], "yes" if role["already_assigned"] else "new", params]
        )
    print_table(
        ["Role", "Name", "Assigned", "Key parameters"],
        rows,
        title=f"Plan for {plan['hostname']} (public IP {plan['public_ip']}, private IP "
        f"{plan['private_ip']})",
    )
    for code, why in plan["skipped"].items():
        note(f"Role {code} left out: {why}.")


@app.command("wizard")
def wizard(
    ctx: typer.Context,
    domain: Annotated[str, typer.Option("--domain", help="The system (SIP) domain.")],
    public_ip: Annotated[str, typer.Option("--public-ip", help="This machine's public IP.")],
    private_ip: Annotated[
        str | None, typer.Option("--private-ip", help="Default: the detected one.")
    ] = None,
    management_hostname: Annotated[
        str | None,
        typer.Option("--management-hostname", help="Default: the system domain."),
    ] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA time zone.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the activation to Online; non-zero on failure.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")
    ] = 300.0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Configuration Wizard: set the properties, assign the standard single-node roles to the
    Infrastructure Controller node and activate it (only while it is the only live node)."""
    client = client_from_context(ctx)
    answers = {
        "system_domain": domain,
        "public_ip": public_ip,
        "private_ip": private_ip,
        "management_hostname": management_hostname,
        "timezone": timezone,
    }
    answers = {k: v for k, v in answers.items() if v is not None}
    plan = client.post(f"{WIZARD}/plan", json=answers)
    if not wants_json(output):
        _plan_table(plan)
    if not yes:
        confirm(f"Configure and activate {plan['hostname']} as planned?")
    run = client.post(WIZARD, json=answers)
    node = client.get(f"/nodes/{run['node_id']}")
    if not wait:
        if wants_json(output):
            print_json(run)
        else:
            console().print(
                f"The wizard ran: {label(node)} is {node['status']}, activation pending. "
                f"Follow it with `voipcloud node info {node['node_id']}`."
            )
        return
    follow_and_report(client, node, action="activate", output=output, timeout=timeout)
