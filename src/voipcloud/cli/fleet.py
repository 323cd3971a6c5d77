"""`voipcloud node maintenance` and `voipcloud node bulk`: maintenance mode and bulk actions.

    voipcloud node maintenance web-02 --reason "disk replacement"
    voipcloud node maintenance web-02 --off
    voipcloud node bulk fix --filter-status Damaged --yes
    voipcloud node bulk standby 12 13 web-02 --yes
    voipcloud node bulk assign-role --filter-search edge- --role jabber --yes

`bulk` prints one row per node (done, or refused with the rule and why) and exits 0 when
every node was done, 1 when any was refused.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from voipcloud.cli.client import UsageProblem, client_from_context
from voipcloud.cli.follow import label
from voipcloud.cli.node_views import report
from voipcloud.cli.nodes import NodeArgument, node_id_of
from voipcloud.cli.output import OutputFormat, OutputOption, print_json, print_table, wants_json
from voipcloud.cli.prompts import confirm
from voipcloud.cli.roles import parse_parameters
from voipcloud.domain import bulk
from voipcloud.domain.statuses import NodeStatus


def maintenance(
    ctx: typer.Context,
    node: NodeArgument,
    reason: Annotated[
        str | None,
        typer.Option(help="Why the node is kept apart (one line): enters maintenance."),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Take the node out of maintenance.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Enter maintenance (--reason) or leave it (--off). A node in maintenance keeps its
    status; bulk actions and rollouts leave it out unless included, and no webhook
    notification is sent about it."""
    if off == (reason is not None):
        raise UsageProblem("give either --reason TEXT (enter maintenance) or --off (leave it)")
    client = client_from_context(ctx)
    node_id = node_id_of(client, node)
    path = f"/nodes/{node_id}/maintenance"
    if off:
        answer = client.delete(path)
        report(answer, output, f"{label(answer).capitalize()} left maintenance.")
        return
    answer = client.post(path, json={"reason": reason})
    report(
        answer,
        output,
        f"{label(answer).capitalize()} is in maintenance: {answer['maintenance']['reason']}.",
    )


ActionArgument = Annotated[
    str, typer.Argument(help=f"One of: {', '.join(bulk.ACTIONS)}.", show_default=False)
]


def bulk_action(
    ctx: typer.Context,
    action: ActionArgument,
    nodes: Annotated[
        list[str] | None,
        typer.Argument(help="NodeIDs or hostnames; or select with --filter-* / --all-matching."),
    ] = None,
    filter_status: Annotated[
        NodeStatus | None,
        typer.Option("--filter-status", case_sensitive=False, help="Every node in this status."),
    ] = None,
    filter_role: Annotated[
        str | None, typer.Option("--filter-role", help="Every node carrying this role code.")
    ] = None,
    filter_search: Annotated[
        str | None,
        typer.Option("--filter-search", help="Every node whose hostname, NodeID or IP matches."),
    ] = None,
    filter_maintenance: Annotated[
        bool | None,
        typer.Option(
            "--filter-maintenance/--filter-no-maintenance",
            help="Only the nodes in maintenance / only the others.",
            show_default=False,
        ),
    ] = None,
    all_matching: Annotated[
        bool,
        typer.Option(
            "--all-matching",
            help="Every node the --filter-* options match (every live node without them).",
        ),
    ] = False,
    include_maintenance: Annotated[
        bool,
        typer.Option(
            "--include-maintenance", help="Act on nodes in maintenance too (left out otherwise)."
        ),
    ] = False,
    role: Annotated[
        str | None, typer.Option(help="assign-role / delete-assignment: the role code.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="assign-role: NAME=VALUE, repeatable."),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why: recorded in each node's history.")] = (
        None
    ),
    force: Annotated[
        bool, typer.Option("--force", help="deactivate: force (needs --reason).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Run one action on many nodes: each is checked against its own rules and changed on
    its own; a table shows each node's result. Exit 0 when all were done, 1 when any was
    refused."""
    if action not in bulk.ACTIONS:
        raise UsageProblem(f"unknown action {action!r}; one of: {', '.join(bulk.ACTIONS)}")
    filters: dict[str, Any] = {
        "status": filter_status.value if filter_status else None,
        "role": filter_role,
        "q": filter_search,
        "maintenance": filter_maintenance,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    by_filter = bool(filters) or all_matching
    if nodes and by_filter:
        raise UsageProblem("name nodes, or select them with --filter-*/--all-matching; not both")
    if not nodes and not by_filter:
        raise UsageProblem(
            "which nodes? name them, or give --filter-status/--filter-role/--filter-search, "
            "or --all-matching for every live node"
        )
    client = client_from_context(ctx)
    body: dict[str, Any] = {"include_maintenance": include_maintenance}
    if by_filter:
        body["filter"] = filters
        shown = ", ".join(f"{k} {v}" for k, v in filters.items()) or "every live node"
        what = f"every node matching {shown}" if filters else shown
    else:
        body["node_ids"] = [node_id_of(client, ref) for ref in nodes or []]
        what = f"{len(body['node_ids'])} node(s)"
    for name, value in (("role", role), ("reason", reason)):
        if value is not None:
            body[name] = value
    if param:
        body["parameters"] = parse_parameters(param)
    if force:
        body["force"] = True
    if not yes:
        confirm(f"{bulk.title(action)} on {what}?")
    answer = client.post(f"/nodes/bulk/{action}", json=body)
    if wants_json(output):
        print_json(answer)
    else:
        from rich.text import Text

        print_table(
            ["ID", "Hostname", "Outcome", "Status", "Why"],
            (
                [
                    r["node_id"],
                    r.get("hostname"),
                    Text(r["outcome"], style="green" if r["outcome"] == "done" else "red"),
                    r.get("status"),
                    f"{r['reason']} ({r['rule']})" if r.get("rule") else r.get("reason"),
                ]
                for r in answer["results"]
            ),
            title=f"{bulk.title(action)}: {answer['done']} done, {answer['refused']} refused",
        )
    if answer["refused"]:
        raise typer.Exit(1)


def register(nodes_app: typer.Typer) -> None:
    """Add the commands to `voipcloud node`."""
    nodes_app.command("maintenance")(maintenance)
    nodes_app.command("bulk")(bulk_action)
