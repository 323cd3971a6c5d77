"""`voipcloud role ...`: the role catalogue and the roles assigned to nodes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from voipcloud.cli.client import (
    SESSION_KEY_FILE,
    ApiClient,
    CliError,
    Refused,
    UsageProblem,
    agent_command,
    client_from_context,
    install_command,
)
from voipcloud.cli.follow import label
from voipcloud.cli.node_views import report
from voipcloud.cli.nodes import NodeArgument, node_id_of
from voipcloud.cli.output import (
    IfMatchOption,
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
)
from voipcloud.cli.prompts import confirm

app = typer.Typer(no_args_is_help=True, help="Roles: the catalogue and role assignments.")

RoleArgument = Annotated[str, typer.Argument(help="The role code, e.g. sip (see `role list`).")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="NAME=VALUE, repeatable; the controller checks each against the role's schema.",
    ),
]


def parse_parameters(pairs: list[str] | None) -> dict[str, str]:
    """NAME=VALUE pairs as sent to the API (the controller normalizes the types)."""
    parameters: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageProblem(f"--param takes NAME=VALUE, not {pair!r}")
        parameters[name.strip()] = value
    return parameters


def _role_path(client: ApiClient, node: str, role: str) -> tuple[int, str]:
    node_id = node_id_of(client, node)
    return node_id, f"/nodes/{node_id}/roles/{role.strip().lower()}"


def _role_etag(client: ApiClient, node_id: int, role: str) -> str | None:
    """The assignment's version as read now (its `etag` in the node's detail)."""
    code = role.strip().lower()
    detail = client.get(f"/nodes/{node_id}")
    found = [a.get("etag") for a in detail.get("assignments", []) if a["role"] == code]
    return found[0] if found else None


@app.command("list")
def list_roles(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """The role catalogue: code, name, public IP need, administrative removal."""
    catalogue = client_from_context(ctx).get("/roles")
    if wants_json(output):
        print_json(catalogue)
        return
    print_table(
        ["Code", "Name", "Public IP", "Admin-removable from IC", "Parameters"],
        (
            [
                r["code"],
                r["name"],
                r["public_ip"],
                r["admin_removable"],
                ", ".join(p["name"] for p in r["parameters"]),
            ]
            for r in catalogue
        ),
    )


@app.command("show")
def show_role(
    ctx: typer.Context, role: RoleArgument, output: OutputOption = OutputFormat.TABLE
) -> None:
    """One role's parameters: type, default (or where it comes from), limits."""
    catalogue = client_from_context(ctx).get("/roles")
    found = next((r for r in catalogue if r["code"] == role.strip().lower()), None)
    if found is None:
        codes = ", ".join(r["code"] for r in catalogue)
        raise Refused(f"not found: no role {role!r}; the roles are {codes}", status_code=404)
    if wants_json(output):
        print_json(found)
        return
    print_table(
        ["Parameter", "Type", "Default", "Limits", "Description"],
        (
            [
                p["name"] + (" (customer connectivity)" if p["customer_connectivity"] else ""),
                p["type"],
                p["default_from"] or p["default"],
                _limits(p),
                p["description"] or p["label"],
            ]
            for p in found["parameters"]
        ),
        title=f"{found['code']}: {found['name']} (public IP: {found['public_ip']})",
    )


def _limits(parameter: dict[str, Any]) -> str | None:
    low, high = parameter.get("minimum"), parameter.get("maximum")
    if low is None and high is None:
        return None
    return f"{'' if low is None else low}..{'' if high is None else high}"


@app.command("assign")
def assign(
    ctx: typer.Context,
    node: NodeArgument,
    role: RoleArgument,
    param: ParamOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Assign a role with parameters; prints the node's session key and its agent command."""
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    body = {"role": role.strip().lower(), "parameters": parse_parameters(param)}
    assigned = client.post(f"/nodes/{node_id}/roles", json=body)
    if wants_json(output):
        print_json(assigned)
        return
    key = assigned.get("session_key")
    note(f"Assigned {body['role']} to {label(assigned)}; roles: {', '.join(assigned['roles'])}.")
    if key:
        note("Session key (write it down, you will need it later):")
        typer.echo(key)
        joining = assigned.get("enrolment") or {}
        note(f"Save the key in {SESSION_KEY_FILE} on the node (root only; never on a command")
        note("line), then install and start its agent as a service with this one line:")
        typer.echo(joining.get("install_command") or install_command(client))
        note("or, with the agent installed already, run it:")
        note(f"  {joining.get('agent_command') or agent_command(client)}")


@app.command("edit")
def edit(
    ctx: typer.Context,
    node: NodeArgument,
    role: RoleArgument,
    param: ParamOption = None,
    reset: Annotated[
        list[str] | None,
        typer.Option("--reset", help="NAME: put this parameter back to its default; repeatable."),
    ] = None,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change role parameters. While Online only Customer Connectivity may change; any other
    change marks the node Damaged. Sends If-Match: refused if the role changed since read."""
    parameters: dict[str, str | None] = dict(parse_parameters(param))
    for name in reset or []:
        parameters[name.strip()] = None
    if not parameters:
        raise UsageProblem("nothing to change: give --param NAME=VALUE or --reset NAME")
    client = client_from_context(ctx)
    node_id, path = _role_path(client, node, role)
    read = if_match or _role_etag(client, node_id, role)
    edited = client.patch(path, json={"parameters": parameters}, if_match=read)
    message = (
        f"Edited {role} on {label(edited)}: {', '.join(parameters)}; it is {edited['status']}."
    )
    report(edited, output, message)


@app.command("unassign")
def unassign(
    ctx: typer.Context,
    node: NodeArgument,
    role: RoleArgument,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a role assignment (Offline, ActivateFailed or Deactivated nodes only). Sends
    If-Match: refused if the role changed since read."""
    client = client_from_context(ctx)
    node_id, path = _role_path(client, node, role)
    changed = client.delete(path, if_match=if_match or _role_etag(client, node_id, role))
    report(changed, output, f"Unassigned {role} from {label(changed)}.")


def _removal_warning(error: CliError) -> str | None:
    """The warning text of the API's 422 asking for {"confirm": true}, if that is the error."""
    if not isinstance(error, Refused) or error.status_code != 422:
        return None
    detail = error.body.get("detail") if isinstance(error.body, dict) else None
    for entry in detail if isinstance(detail, list) else []:
        if isinstance(entry, dict) and list(entry.get("loc", []))[-1:] == ["confirm"]:
            return str(entry.get("msg"))
    return None


@app.command("remove")
def remove(
    ctx: typer.Context,
    node: NodeArgument,
    role: RoleArgument,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm the warning without being asked.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Administrative Remove of sip, pbx, jabber, que or web from the IC node, in any status
    (fewer than three extensions). Shows the controller's warning and asks first."""
    client = client_from_context(ctx)
    _node_id, path = _role_path(client, node, role)
    if not yes:
        try:
            removed = client.post(f"{path}/remove", json={"confirm": False})
        except CliError as refusal:
            warning = _removal_warning(refusal)
            if warning is None:
                raise
            note(warning)
            confirm(f"Remove the {role} role anyway?")
        else:  # a controller that needs no confirmation: done already
            report(removed, output, f"Removed {role} from {label(removed)}.")
            return
    removed = client.post(f"{path}/remove", json={"confirm": True})
    report(removed, output, f"Removed {role} from {label(removed)}; its agent stops it.")
