"""How a node looks on the terminal: its Quick info, its history, one-line reports."""

from __future__ import annotations

from typing import Any

from voipcloud.cli.output import (
    OutputFormat,
    console,
    note,
    print_json,
    print_record,
    print_table,
    status_text,
    wants_json,
    when,
)


def agent_text(node: dict[str, Any]) -> str:
    seen = when(node.get("last_seen"))
    text = f"{node['connectivity']} (last seen {seen})" if seen else node["connectivity"]
    if node.get("agent_outdated"):  # older than the controller (domain/agent_versions)
        text += f", version {node.get('version')} OUTDATED"
    return text


def print_quick_info(
    node: dict[str, Any], events: list[dict[str, Any]], *, components: bool = False
) -> None:
    """The Quick info; the installed components as a count unless `components` (a node
    reports hundreds of packages: `node info --components` lists them)."""
    pending = node.get("pending_operation")
    print_record(
        f"Node {node['node_id']}: {node['hostname']}",
        {
            "NodeID": node["node_id"],
            "Hostname": node["hostname"],
            "Status": status_text(node["status"], node.get("status_reason")),
            "Pending": f"{pending['kind']} since {when(pending.get('started_at'))}"
            if pending
            else None,
            "Agent": agent_text(node),
            "Private IP": node["private_ip"],
            "Public IP": node["public_ip"],
            "Container": node["container_id"],
            "Role(s) Assigned": node["roles"],
            "Session Key": node.get("session_key"),
            "Created": when(node["created_at"]),
            "Updated": when(node["updated_at"]),
            "VoipNow Version": node["version"],
            "OS": node["os"],
            "Kernel": node["kernel"],
            "Controller node": node.get("is_controller", False),
        },
    )
    for assignment in node.get("assignments", []):
        print_table(
            ["Parameter", "Value", "Source"],
            (
                [name, p["value"], p["source"]]
                for name, p in sorted(assignment["parameters"].items())
            ),
            title=f"Role {assignment['role']}: {assignment['name']}",
        )
    print_actions(node.get("actions") or [])
    installed = node.get("components") or []
    if installed and components:
        print_table(
            ["Component", "Version"],
            ([c["name"], c["version"]] for c in installed),
            title=f"Components ({len(installed)})",
        )
    elif installed:
        console().print(
            f"Components: {len(installed)} installed (list them with "
            f"`voipcloud node info {node['node_id']} --components`)."
        )
    else:
        console().print("Components: none reported yet (no agent has joined).")
    print_events(events, title="Recent events")


def print_actions(actions: list[dict[str, Any]]) -> None:
    """The controller's rulebook for this node now: what may be done, and why not."""
    if not actions:
        return
    print_table(
        ["Action", "Role", "Allowed", "Rule", "Why not"],
        (
            [
                a["name"],
                a.get("role") or "",
                "yes" if a["allowed"] else "no",
                a.get("rule") or "",
                a.get("reason") or "",
            ]
            for a in actions
        ),
        title="Actions now",
    )


def print_events(events: list[dict[str, Any]], *, title: str) -> None:
    print_table(
        ["When", "Who", "Operation", "Status", "Reason"],
        (
            [
                when(e["at"]),
                e["actor"],
                e["operation"],
                f"{e['status_before'] or '-'} -> {e['status_after'] or '-'}"
                if e["status_before"] != e["status_after"]
                else e["status_after"],
                e["reason"],
            ]
            for e in events
        ),
        title=title,
    )


def report(node: dict[str, Any], output: OutputFormat, message: str) -> None:
    if wants_json(output):
        print_json(node)
    else:
        note(message)
