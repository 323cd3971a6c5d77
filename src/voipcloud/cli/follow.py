"""`--wait`: follow a node until its operation settles, with a spinner on stderr.

A node has settled when it has no pending operation (activation, fix, ...) and is not
DeactivatePending. The controller itself moves a silent activation to ActivateFailed at its
activation timeout, so the wait normally ends there; `timeout` is the CLI's own bound.
"""

from __future__ import annotations

import time
from typing import Any

from voipcloud.cli.client import (
    ApiClient,
    Interrupted,
    OperationFailed,
    Unreachable,
    WaitTimedOut,
)
from voipcloud.cli.output import (
    OutputFormat,
    console,
    error_console,
    print_json,
    status_text,
    wants_json,
)

POLL_INTERVAL = 0.25  # seconds between two GET /nodes/{id}

# the statuses in which each followed operation succeeded
SUCCEEDED_IN = {
    "activate": frozenset({"Online"}),
    "deactivate": frozenset({"Deactivated"}),
    "fix": frozenset({"Online"}),
}


def settled(node: dict[str, Any]) -> bool:
    return not node.get("pending_operation") and node.get("status") != "DeactivatePending"


def label(node: dict[str, Any]) -> str:
    return f"node {node['node_id']} ({node['hostname']})"


def progress(node: dict[str, Any]) -> str:
    pending = node.get("pending_operation") or {}
    kind = f", {pending['kind']} pending" if pending.get("kind") else ""
    return f"{node['status']}{kind}, agent {node.get('connectivity', 'unknown')}"


def follow(
    client: ApiClient, node: dict[str, Any], *, action: str, timeout: float
) -> dict[str, Any]:
    """The settled node; OperationFailed if it settled in failure, WaitTimedOut at `timeout`,
    Interrupted on Ctrl-C (the operation itself goes on)."""
    try:
        return _follow(client, node, timeout=timeout)
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped following {label(node)}; the operation goes on on the controller: "
            f"follow it with `voipcloud node info {node['node_id']}`"
        ) from None


def _follow(client: ApiClient, node: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    node_id = node["node_id"]
    with error_console().status(f"Waiting for {label(node)}: {progress(node)}") as spinner:
        while not settled(node):
            if time.monotonic() >= deadline:
                raise WaitTimedOut(
                    f"{label(node)} has not settled after {timeout:g} s: {progress(node)}; "
                    f"follow it with `voipcloud node info {node_id}`"
                )
            time.sleep(POLL_INTERVAL)
            try:
                node = client.get(f"/nodes/{node_id}")
            except Unreachable as exc:  # a controller restart: keep following until the deadline
                spinner.update(f"Waiting for {label(node)}: {exc.message}; retrying")
                continue
            spinner.update(f"Waiting for {label(node)}: {progress(node)}")
    return node


def check_outcome(node: dict[str, Any], *, action: str) -> None:
    if node["status"] in SUCCEEDED_IN[action]:
        return
    reason = f": {node['status_reason']}" if node.get("status_reason") else ""
    raise OperationFailed(f"{action} failed: {label(node)} is {node['status']}{reason}")


def follow_and_report(
    client: ApiClient,
    node: dict[str, Any],
    *,
    action: str,
    output: OutputFormat,
    timeout: float,
) -> None:
    """`--wait`: follow the node, print where it settled, and fail if the action did not."""
    settled = follow(client, node, action=action, timeout=timeout)
    if wants_json(output):
        print_json(settled)
    try:
        check_outcome(settled, action=action)
    finally:
        if not wants_json(output):
            console().print(
                f"{label(settled).capitalize()} is ",
                status_text(settled["status"], settled.get("status_reason")),
                sep="",
            )
