"""`voipcloud rollout ...`: Fix / Activate / Deactivate over many nodes in batches.

    voipcloud rollout start fix --status Damaged --batch-size 10 --pause 30 --tolerance 2 --wait
    voipcloud rollout start deactivate web-01 web-02 --batch-size 1 --pause 0 --tolerance 0
    voipcloud rollout list
    voipcloud rollout show 3
    voipcloud rollout pause 3 | resume 3 | cancel 3

The rollout runs in the controller: the CLI may exit (or be interrupted) without stopping it.
With --wait, a progress bar follows it until it ends; the exit status is 0 when it finished
with no failed node, 1 when it stopped at its failure tolerance (or was cancelled, or
finished with failures within the tolerance).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from voipcloud.cli.client import (
    ApiClient,
    CliError,
    Interrupted,
    Unreachable,
    UsageProblem,
    WaitTimedOut,
    client_from_context,
)
from voipcloud.cli.nodes import node_id_of
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    console,
    error_console,
    note,
    print_json,
    print_record,
    print_table,
    wants_json,
    when,
)
from voipcloud.domain import rollouts as rules

app = typer.Typer(no_args_is_help=True, help="Rollouts: one action over many nodes, in batches.")
POLL_INTERVAL = 0.5
ENDED = {"finished", "stopped", "cancelled"}


class NotAllDone(CliError):
    """--wait: the rollout stopped, was cancelled, or finished with failed nodes (exit 1)."""

    exit_code = 1


RolloutId = Annotated[int, typer.Argument(min=1, max=2**31 - 1, help="The rollout's id.")]


def _counts(r: dict[str, Any]) -> str:
    c = r["counts"]
    text = f"{c['done']} done, {c['failed']} failed, {c['skipped']} skipped"
    if c["running"] or c["pending"]:
        text += f", {c['running']} running, {c['pending']} not started"
    return text


def _headline(r: dict[str, Any]) -> str:
    batch = f", batch {r['current_batch']} of {r['batches']}" if r.get("current_batch") else ""
    return f"Rollout {r['id']} ({r['action']}): {r['state']}{batch}, {r['progress']:g}%"


@app.command("start")
def start(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="fix, activate or deactivate.")],
    batch_size: Annotated[int, typer.Option(help=f"Nodes per batch (1-{rules.MAX_BATCH_SIZE}).")],
    pause: Annotated[
        float, typer.Option(help=f"Seconds between batches (0-{rules.MAX_PAUSE_SECONDS}).")
    ],
    tolerance: Annotated[
        int, typer.Option(help="Stop when more than this many nodes failed (0: at the first).")
    ],
    nodes: Annotated[
        list[str] | None,
        typer.Argument(help="NodeIDs or hostnames; or leave them out and give a filter."),
    ] = None,
    status: Annotated[str | None, typer.Option(help="Filter: nodes in this status.")] = None,
    role: Annotated[str | None, typer.Option(help="Filter: nodes carrying this role.")] = None,
    q: Annotated[
        str | None, typer.Option("--q", help="Filter: hostname, NodeID or IP contains this.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Recorded with each node's operation.")] = None,
    include_maintenance: Annotated[
        bool, typer.Option(help="Act on nodes in maintenance too (left out otherwise).")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(help="Follow it with a progress bar until it ends (exit 1 if not all done)."),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="With --wait: give up following after this many seconds.")
    ] = 3600.0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Start a rollout over the given nodes, or over every node the filter matches now."""
    chosen_filter = {k: v for k, v in {"status": status, "role": role, "q": q}.items() if v}
    if nodes and chosen_filter:
        raise UsageProblem("give NODE arguments or a filter (--status/--role/--q), not both")
    if not nodes and not chosen_filter:
        raise UsageProblem("give NODE arguments or a filter (--status/--role/--q)")
    client = client_from_context(ctx)
    body: dict[str, Any] = {
        "action": action,
        "batch_size": batch_size,
        "pause_seconds": pause,
        "failure_tolerance": tolerance,
        "include_maintenance": include_maintenance,
    }
    if reason:
        body["reason"] = reason
    if nodes:
        body["node_ids"] = [node_id_of(client, ref) for ref in nodes]
    else:
        body["filter"] = chosen_filter
    created = client.post("/rollouts", json=body)
    if not wait:
        if wants_json(output):
            print_json(created)
            return
        skipped = created["counts"]["skipped"]
        note(
            f"Rollout {created['id']} started: {created['action']} over "
            f"{created['counts']['total'] - skipped} node(s) in {created['batches']} batch(es)"
            + (f", {skipped} in maintenance left out" if skipped else "")
            + f". Follow it with `voipcloud rollout show {created['id']}`."
        )
        return
    ended = follow(client, created, timeout=timeout)
    report_end(ended, output)


def follow(client: ApiClient, rollout: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Poll the rollout with a Rich progress bar (stderr) until it ends."""
    deadline = time.monotonic() + timeout
    rollout_id = rollout["id"]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    try:
        with Progress(*columns, console=error_console(), transient=False) as bar:
            task = bar.add_task(_headline(rollout), total=100, counts=_counts(rollout))
            while not (rollout["state"] in ENDED and rollout["counts"]["running"] == 0):
                if time.monotonic() >= deadline:
                    raise WaitTimedOut(
                        f"rollout {rollout_id} is still {rollout['state']} after {timeout:g} s; "
                        f"it goes on: follow it with `voipcloud rollout show {rollout_id}`"
                    )
                time.sleep(POLL_INTERVAL)
                try:
                    rollout = client.get(f"/rollouts/{rollout_id}")
                except Unreachable:  # a controller restart: it resumes the rollout
                    bar.update(task, description=f"Rollout {rollout_id}: controller unreachable")
                    continue
                bar.update(
                    task,
                    completed=rollout["progress"],
                    description=_headline(rollout),
                    counts=_counts(rollout),
                )
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped following rollout {rollout_id}; it goes on in the controller: "
            f"`voipcloud rollout show {rollout_id}`, `voipcloud rollout pause {rollout_id}`"
        ) from None
    return rollout


def report_end(rollout: dict[str, Any], output: OutputFormat) -> None:
    """Print how it ended; OperationFailed (exit 1) unless every node it acted on is done."""
    if wants_json(output):
        print_json(rollout)
    else:
        _print_nodes(rollout)
        console().print(_headline(rollout) + ": " + _counts(rollout))
    why = f": {rollout['state_reason']}" if rollout.get("state_reason") else ""
    if rollout["state"] == "stopped":
        raise NotAllDone(f"rollout {rollout['id']} stopped{why}")
    if rollout["state"] == "cancelled":
        raise NotAllDone(f"rollout {rollout['id']} was cancelled{why}")
    if rollout["counts"]["failed"]:
        raise NotAllDone(
            f"rollout {rollout['id']} finished with {rollout['counts']['failed']} failed "
            "node(s), within its failure tolerance"
        )


@app.command("list")
def list_rollouts(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The rollouts, newest first."""
    page = client_from_context(ctx).get("/rollouts", params={"limit": limit, "offset": offset})
    if wants_json(output):
        print_json(page)
        return
    print_table(
        ["ID", "Action", "State", "Progress", "Nodes", "Started", "By"],
        (
            [
                r["id"],
                r["action"],
                r["state"],
                f"{r['progress']:g}%",
                _counts(r),
                when(r["created_at"]),
                r["created_by"],
            ]
            for r in page["items"]
        ),
        caption=f"{len(page['items'])} shown of {page['total']} rollouts",
    )


def _print_nodes(r: dict[str, Any]) -> None:
    print_table(
        ["#", "Batch", "Node", "Status", "Outcome", "Why"],
        (
            [
                n["position"],
                n["batch"] or "—",
                n["hostname"] or f"#{n['node_id']}",
                n["status"],
                n["outcome"],
                " ".join(filter(None, [n["reason"], f"({n['rule']})" if n["rule"] else None])),
            ]
            for n in r["nodes"] or []
        ),
    )


@app.command("show")
def show(ctx: typer.Context, rollout: RolloutId, output: OutputOption = OutputFormat.TABLE) -> None:
    """One rollout: its state, progress and each node's outcome."""
    found = client_from_context(ctx).get(f"/rollouts/{rollout}")
    if wants_json(output):
        print_json(found)
        return
    print_record(
        f"Rollout {found['id']}",
        {
            "Action": found["action"],
            "State": found["state"]
            + (f" — {found['state_reason']}" if found["state_reason"] else ""),
            "Progress": f"{found['progress']:g}% ({_counts(found)})",
            "Batches": f"{found['batches']} of {found['batch_size']}, "
            f"{found['pause_seconds']:g} s between them"
            + (f"; now batch {found['current_batch']}" if found["current_batch"] else ""),
            "Failure tolerance": found["failure_tolerance"],
            "Started": f"{when(found['created_at'])} by {found['created_by']}",
            "Ended": when(found["finished_at"]) or "—",
            "Reason": found["reason"] or "—",
        },
    )
    _print_nodes(found)


def _command(ctx: typer.Context, rollout: int, command: str, output: OutputFormat) -> None:
    answer = client_from_context(ctx).post(f"/rollouts/{rollout}/{command}")
    if wants_json(output):
        print_json(answer)
        return
    note(_headline(answer) + ": " + _counts(answer))


@app.command("pause")
def pause(
    ctx: typer.Context, rollout: RolloutId, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Pause: no new batch starts; operations already started run to their end."""
    _command(ctx, rollout, "pause", output)


@app.command("resume")
def resume(
    ctx: typer.Context, rollout: RolloutId, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Resume a paused rollout."""
    _command(ctx, rollout, "resume", output)


@app.command("cancel")
def cancel(
    ctx: typer.Context, rollout: RolloutId, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Cancel: the nodes not started are skipped."""
    _command(ctx, rollout, "cancel", output)
