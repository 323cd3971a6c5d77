"""`voipcloud node ...`: list, Quick info, add, edit, delete, lifecycle actions, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from voipcloud.cli.client import (
    SESSION_KEY_FILE,
    ApiClient,
    Refused,
    UsageProblem,
    agent_command,
    client_from_context,
    install_command,
)
from voipcloud.cli.follow import follow_and_report, label
from voipcloud.cli.node_views import agent_text, print_events, print_quick_info, report
from voipcloud.cli.output import (
    IfMatchOption,
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    status_text,
    wants_json,
)
from voipcloud.cli.prompts import confirm
from voipcloud.domain.numbers import is_whole
from voipcloud.domain.statuses import NodeStatus

if TYPE_CHECKING:
    from rich.text import Text

app = typer.Typer(no_args_is_help=True, help="Nodes: list, inspect, add, edit, lifecycle.")

NodeArgument = Annotated[str, typer.Argument(help="The NodeID, or the node's exact hostname.")]
ReasonOption = Annotated[str | None, typer.Option(help="Why: recorded in the node's history.")]
WaitOption = Annotated[
    bool,
    typer.Option("--wait", help="Follow the node until it settles; non-zero exit on failure."),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds --wait waits at most.")
]


def node_id_of(client: ApiClient, ref: str) -> int:
    """A NodeID given as digits, or the one live (or Deleted) node with that hostname."""
    if is_whole(ref.strip()):  # ASCII digits only: '³' is a hostname to look up, not a NodeID
        return int(ref.strip())
    # the exact hostname (one indexed query on the server): live first, else the latest Deleted
    for status, sort in ((None, "id"), ("Deleted", "-id")):
        page = client.get(
            "/nodes", params={"hostname": ref.strip(), "status": status, "sort": sort, "limit": 1}
        )
        if page["items"]:
            return int(page["items"][0]["node_id"])
    raise Refused(f"not found: no node has the hostname {ref!r}", status_code=404)


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    status: Annotated[
        NodeStatus | None,
        typer.Option(case_sensitive=False, help="Only this status (Deleted shows deleted ones)."),
    ] = None,
    role: Annotated[str | None, typer.Option(help="Only nodes carrying this role code.")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Hostname, NodeID or IP (substring).")
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="id, hostname, status, private_ip, created_at, updated_at, last_seen; "
            "- in front for descending."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    maintenance: Annotated[
        bool | None,
        typer.Option(
            "--maintenance/--no-maintenance",
            help="Only the nodes in maintenance / only the others.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List nodes, with filters, search and sort (Deleted ones only with --status Deleted)."""
    params = {
        "maintenance": None if maintenance is None else str(maintenance).lower(),
        "status": status.value if status else None,
        "role": role,
        "q": search,
        "sort": sort,
        "limit": limit,
        "offset": offset,
    }
    page = client_from_context(ctx).get("/nodes", params=params)
    if wants_json(output):
        print_json(page)
        return
    items = page["items"]
    shown = f"{offset + 1}-{offset + len(items)}" if items else "none"
    print_table(
        ["ID", "Hostname", "Private IP", "Public IP", "Roles", "Status", "Agent"],
        (
            [
                n["node_id"],
                n["hostname"] + (" (IC)" if n.get("is_controller") else ""),
                n["private_ip"],
                n["public_ip"],
                n["roles"],
                _with_maintenance(status_text(n["status"], n.get("status_reason")), n),
                agent_text(n),
            ]
            for n in items
        ),
        caption=f"{shown} of {'' if page.get('total_exact', True) else 'more than '}"
        f"{page['total']} nodes",
    )


def _with_maintenance(status: Text, node: dict[str, Any]) -> Text:
    if node.get("maintenance"):
        status.append(f" [maintenance: {node['maintenance']['reason']}]", style="yellow")
    return status


@app.command("info")
def info(
    ctx: typer.Context,
    node: NodeArgument,
    events: Annotated[int, typer.Option(min=0, max=500, help="How many recent events.")] = 10,
    components: Annotated[
        bool, typer.Option("--components", help="List every installed component (a count else).")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The node's Quick info: identity, status, roles, session key, history, and how many
    components are installed (`--components` lists them). `-o json` adds `etag`: the version
    read, for `--if-match` of a later edit or delete."""
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    detail = client.get(f"/nodes/{node_id}")
    if wants_json(output):
        print_json({**detail, "etag": client.last_etag})
        return
    recent = (
        client.get(f"/nodes/{node_id}/events", params={"limit": events})["items"] if events else []
    )
    print_quick_info(detail, recent, components=components)


@app.command("add")
def add(
    ctx: typer.Context,
    hostname: Annotated[str, typer.Argument(help="Unique among nodes that are not Deleted.")],
    private_ip: Annotated[str, typer.Option("--private-ip", help="Required, e.g. 10.0.0.11.")],
    public_ip: Annotated[
        str | None, typer.Option("--public-ip", help="Needed by web, sip and pbx.")
    ] = None,
    container_id: Annotated[str | None, typer.Option("--container-id")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a node; it starts Offline. Assign it roles next (`voipcloud role assign`)."""
    body = {
        "hostname": hostname,
        "private_ip": private_ip,
        "public_ip": public_ip,
        "container_id": container_id,
    }
    created = client_from_context(ctx).post("/nodes", json=body)
    report(created, output, f"Added {label(created)}, status {created['status']}.")
    if not wants_json(output):
        typer.echo(created["node_id"])


@app.command("edit")
def edit(
    ctx: typer.Context,
    node: NodeArgument,
    hostname: Annotated[str | None, typer.Option(help="New hostname.")] = None,
    private_ip: Annotated[str | None, typer.Option("--private-ip")] = None,
    public_ip: Annotated[
        str | None, typer.Option("--public-ip", help='"" removes the public IP.')
    ] = None,
    container_id: Annotated[
        str | None, typer.Option("--container-id", help='"" removes it.')
    ] = None,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Edit the hostname, IPs or container id (any status but Deleted). Sends If-Match:
    refused (exit 1, naming what changed) if the node changed since it was read."""
    changes: dict[str, Any] = {}
    if hostname is not None:
        changes["hostname"] = hostname
    if private_ip is not None:
        changes["private_ip"] = private_ip
    if public_ip is not None:
        changes["public_ip"] = public_ip or None
    if container_id is not None:
        changes["container_id"] = container_id or None
    if not changes:
        raise UsageProblem(
            "nothing to change: give --hostname, --private-ip, --public-ip or --container-id"
        )
    client = client_from_context(ctx)
    path = f"/nodes/{node_id_of(client, node)}"
    edited = client.patch(path, json=changes, if_match=if_match or client.etag_of(path))
    report(edited, output, f"Edited {label(edited)}: {', '.join(changes)}.")


@app.command("delete")
def delete(
    ctx: typer.Context,
    node: NodeArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    if_match: IfMatchOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete Node: roles released, session key revoked, agent told to stop (not when
    Online or Damaged). The record stays for history. Sends If-Match with the version that
    was shown for confirmation: refused if the node changed meanwhile."""
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    current = client.get(f"/nodes/{node_id}")
    read = if_match or client.last_etag
    if not yes:
        confirm(f"Delete {label(current)} ({current['status']})?")
    deleted = client.delete(f"/nodes/{node_id}", if_match=read)
    report(deleted, output, f"Deleted {label(deleted)}.")


def _act(
    ctx: typer.Context,
    node: str,
    action: str,
    *,
    reason: str | None,
    output: OutputFormat,
    wait: bool = False,
    timeout: float = 300.0,
) -> None:
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    body = {"reason": reason} if reason else None
    answer = client.post(f"/nodes/{node_id}/actions/{action}", json=body)
    if not wait:
        pending = answer.get("pending_operation")
        doing = f", {pending['kind']} pending" if pending else ""
        report(answer, output, f"{action}: {label(answer)} is {answer['status']}{doing}.")
        return
    follow_and_report(client, answer, action=action, output=output, timeout=timeout)


@app.command("standby")
def standby(
    ctx: typer.Context,
    node: NodeArgument,
    reason: ReasonOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Set StandBy (from Offline, ActivateFailed or Deactivated)."""
    _act(ctx, node, "standby", reason=reason, output=output)


@app.command("activate")
def activate(
    ctx: typer.Context,
    node: NodeArgument,
    reason: ReasonOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 300.0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Activate: the node's agent applies its roles, then it is Online or ActivateFailed."""
    _act(ctx, node, "activate", reason=reason, output=output, wait=wait, timeout=timeout)


@app.command("deactivate")
def deactivate(
    ctx: typer.Context,
    node: NodeArgument,
    reason: ReasonOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="End a DeactivatePending node's deactivation that its agent cannot complete: "
            "Deactivated at once, the roles may still run on the machine. Needs --reason.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --force.")] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = 300.0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Deactivate: Online nodes go DeactivatePending until the agent signs completion.
    With --force --reason, a DeactivatePending node becomes Deactivated without it."""
    if not force:
        _act(ctx, node, "deactivate", reason=reason, output=output, wait=wait, timeout=timeout)
        return
    if not (reason or "").strip():
        raise UsageProblem("--force needs --reason: it is recorded with who forced it")
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    if not yes:
        current = client.get(f"/nodes/{node_id}")
        confirm(
            f"Force deactivation of {label(current)} ({current['status']})? It is recorded "
            "Deactivated without its agent's signature; the roles may still be running on "
            "the machine."
        )
    answer = client.post(
        f"/nodes/{node_id}/actions/deactivate", json={"reason": reason, "force": True}
    )
    report(answer, output, f"deactivate --force: {label(answer)} is {answer['status']}.")


@app.command("mark-damaged")
def mark_damaged(
    ctx: typer.Context,
    node: NodeArgument,
    reason: ReasonOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Mark an Online node Damaged, with a reason."""
    _act(ctx, node, "mark-damaged", reason=reason, output=output)


@app.command("fix")
def fix(
    ctx: typer.Context,
    node: NodeArgument,
    reason: ReasonOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 300.0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Fix a Damaged node: the agent re-applies its configuration; Online on success."""
    _act(ctx, node, "fix", reason=reason, output=output, wait=wait, timeout=timeout)


@app.command("events")
def events(
    ctx: typer.Context,
    node: NodeArgument,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The node's history, newest first."""
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    page = client.get(f"/nodes/{node_id}/events", params={"limit": limit, "offset": offset})
    if wants_json(output):
        print_json(page)
        return
    print_events(page["items"], title=f"Node {node_id}: {page['total']} events")


@app.command("session-key")
def session_key(
    ctx: typer.Context,
    node: NodeArgument,
    regenerate: Annotated[
        bool, typer.Option("--regenerate", help="A new key; the old one stops working.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show the node's session key (what its agent joins with), or regenerate it."""
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    if regenerate:
        detail = client.post(f"/nodes/{node_id}/actions/regenerate-session-key")
    else:
        detail = client.get(f"/nodes/{node_id}")
    key = detail.get("session_key")
    if wants_json(output):
        print_json({"node_id": detail["node_id"], "session_key": key})
        return
    if not key:
        note(f"{label(detail).capitalize()} has no session key yet: assign it a role first.")
        return
    typer.echo(key)
    if regenerate:
        note(f"The previous key no longer works. Put the new one in {SESSION_KEY_FILE} on the")
        note("node and install the agent again (it restarts the voipcloud-agent service):")
        note(f"  {install_command(client)}")
        note("or restart an agent you run yourself:")
        note(f"  {agent_command(client)}")
