"""The state diagram of docs/state-diagram.md, generated from the lifecycle table.

Regenerate with `python -m voipcloud.domain.diagram > docs/state-diagram.md`; a test
fails when the file and the table disagree.
"""

from __future__ import annotations

from collections import defaultdict

from voipcloud.domain.lifecycle import OUTCOMES, STARTS, TRANSITIONS, Actor
from voipcloud.domain.statuses import STATUS_INFO, NodeStatus

_ARROW = {Actor.ADMIN: "-->", Actor.AGENT: "-->", Actor.CONTROLLER: "-->"}
_WHO = {Actor.ADMIN: "", Actor.AGENT: " (agent)", Actor.CONTROLLER: " (controller)"}


def mermaid() -> str:
    edges: dict[tuple[NodeStatus, NodeStatus], list[str]] = defaultdict(list)
    for t in TRANSITIONS:
        if t.source is not t.target:
            edges[(t.source, t.target)].append(f"{t.operation}{_WHO[t.fired_by]}")
    lines = ["stateDiagram-v2", "    [*] --> Offline: add-node"]
    for (source, target), labels in edges.items():
        lines.append(f"    {source} {_ARROW[Actor.ADMIN]} {target}: {', '.join(labels)}")
    return "\n".join(lines)


def staying_operations() -> dict[NodeStatus, list[str]]:
    """Operations allowed in a status that leave the status as it is."""
    result: dict[NodeStatus, list[str]] = defaultdict(list)
    for t in TRANSITIONS:
        if t.source is t.target:
            result[t.source].append(t.operation.value)
    return result


def outcomes() -> str:
    """The outcome table: how each pending operation ends."""
    starts = {pending: op for op, pending in STARTS.items()}
    rows = "\n".join(
        f"| {e.pending} (started by {starts[e.pending]}) | {e.outcome} | "
        f"{e.fires or '—'} | {'yes' if e.keeps_pending else 'no'} | {e.note} |"
        for e in OUTCOMES
    )
    return (
        "| pending operation | outcome | transition fired | still pending | the node |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n"
    )


def document() -> str:
    staying = staying_operations()
    rows = "\n".join(
        f"| {s} | {STATUS_INFO[s].colour} | {STATUS_INFO[s].meaning} | "
        f"{', '.join(staying.get(s, [])) or '—'} |"
        for s in NodeStatus
    )
    return (
        "# Node lifecycle (generated)\n\n"
        "Generated from `src/voipcloud/domain/lifecycle.py` by "
        "`python -m voipcloud.domain.diagram > docs/state-diagram.md`. Do not edit by hand.\n\n"
        "Activate and Fix leave the status as it is, with an operation pending for the node's "
        "agent; the agent's report (or the activation timeout) moves the node on.\n\n"
        f"```mermaid\n{mermaid()}\n```\n\n"
        "| status | colour | meaning | operations that keep the status |\n"
        "|---|---|---|---|\n"
        f"{rows}\n\n"
        "## How pending operations end (generated from `lifecycle.OUTCOMES`)\n\n"
        f"{outcomes()}"
    )


if __name__ == "__main__":
    print(document(), end="")
