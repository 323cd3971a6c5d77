"""Rollouts over real `voipcloud agent` processes, run by a real `voipcloud serve` (issue 16).

- batch size 2 over five nodes, one node's Fix fails (its agent's apply command exits 9),
  failure tolerance 0: the rollout stops at the tolerance after the first batch; the three
  nodes of the later batches are never touched (no Fix event, still Damaged);
- the sibling: the same rollout with tolerance 1 goes on and finishes;
- the controller is killed (SIGKILL) while a batch's Fix runs on its agents and started
  again on the same data dir: the rollout resumes (docs/reliability.md) and finishes, each
  node fixed exactly once, also when an agent comes back after the activation timeout
  (the batch started meanwhile waits for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import AgentProcess, Controller, node, wait_for

pytestmark = pytest.mark.e2e
API = "/api/v1"


def add_node(client: httpx.Client, hostname: str) -> tuple[int, str]:
    created = client.post(f"{API}/nodes", json={"hostname": hostname, "private_ip": "10.9.0.5"})
    assert created.status_code == 201, created.text
    node_id: int = created.json()["node_id"]
    assigned = client.post(f"{API}/nodes/{node_id}/roles", json={"role": "wk"})
    assert assigned.status_code == 201, assigned.text
    return node_id, assigned.json()["session_key"]


def fleet(
    controller: Controller,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    count: int,
    *,
    apply: str = "true",
    agents: dict[int, AgentProcess] | None = None,
) -> list[int]:
    """`count` nodes with real agents, brought Online by an Activate rollout of one batch,
    then marked Damaged. Each node's apply command is `apply` (FAIL_MARKER: see below)."""
    admin = controller.admin()
    ids = []
    for i in range(count):
        node_id, key = add_node(admin, f"wk-{i}")
        marker = tmp_path / f"fail-{node_id}"
        command = apply.replace("FAIL_MARKER", str(marker))
        agent = start_agent(
            controller, key, name=f"wk-{i}", config=f"[roles.wk]\napply = '{command}'\n"
        )
        if agents is not None:
            agents[node_id] = agent
        ids.append(node_id)
    for node_id in ids:
        wait_for(
            lambda n=node_id: node(admin, n)["connectivity"] == "connected",
            timeout=60,
            what=f"node {node_id}'s agent to connect",
        )
    activated = start_rollout(admin, "activate", ids, batch_size=count, failure_tolerance=0)
    finished = wait_rollout(admin, activated["id"], {"finished", "stopped"})
    assert finished["state"] == "finished", finished
    for node_id in ids:
        marked = admin.post(f"{API}/nodes/{node_id}/actions/mark-damaged", json={"reason": "t"})
        assert marked.status_code == 200, marked.text
    return ids


def start_rollout(
    client: httpx.Client, action: str, ids: list[int], **settings: Any
) -> dict[str, Any]:
    body = {"action": action, "node_ids": ids, "pause_seconds": 0, **settings}
    answer = client.post(f"{API}/rollouts", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def wait_rollout(
    client: httpx.Client, rollout_id: int, states: set[str], timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found: dict[str, Any] = client.get(f"{API}/rollouts/{rollout_id}").json()
        return found if found["state"] in states and found["counts"]["running"] == 0 else None

    return wait_for(probe, timeout=timeout, interval=0.2, what=f"rollout {rollout_id} in {states}")


def operations(client: httpx.Client, node_id: int) -> list[str]:
    items = client.get(f"{API}/nodes/{node_id}/events", params={"limit": 500}).json()["items"]
    return [e["operation"] for e in items]


# apply fails (exit 9, with a message) once the node's marker file exists
FAILING_APPLY = "if [ -f FAIL_MARKER ]; then echo rtp ports taken >&2; exit 9; fi"


def test_one_failing_node_stops_the_rollout_at_tolerance_zero(
    controller: Controller, start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    admin = controller.admin()
    ids = fleet(controller, start_agent, tmp_path, 5, apply=FAILING_APPLY)
    (tmp_path / f"fail-{ids[1]}").touch()  # the second node of batch 1 fails its Fix
    created = start_rollout(admin, "fix", ids, batch_size=2, failure_tolerance=0)
    assert [n["batch"] for n in created["nodes"]] == [1, 1, 2, 2, 3]
    stopped = wait_rollout(admin, created["id"], {"stopped", "finished"})
    assert stopped["state"] == "stopped", stopped
    assert "more than the failure tolerance of 0" in stopped["state_reason"]
    outcomes = {n["node_id"]: n["outcome"] for n in stopped["nodes"]}
    assert outcomes == {
        ids[0]: "done",
        ids[1]: "failed",
        ids[2]: "skipped",
        ids[3]: "skipped",
        ids[4]: "skipped",
    }
    failed = next(n for n in stopped["nodes"] if n["node_id"] == ids[1])
    assert "rtp ports taken" in failed["reason"]
    assert node(admin, ids[0])["status"] == "Online"
    assert node(admin, ids[1])["status"] == "Damaged"
    for untouched in ids[2:]:
        assert node(admin, untouched)["status"] == "Damaged"
        assert "fix" not in operations(admin, untouched)
    log = admin.get(f"{API}/events", params={"limit": 500}).json()["items"]
    mine = [e for e in log if e["node_id"] is None and f"rollout {created['id']}" in e["reason"]]
    assert [e["operation"] for e in reversed(mine)] == [
        "rollout-started",
        "rollout-batch-started",
        "rollout-stopped",
    ]

    # the sibling: tolerance 1 goes on past the same failure, and finishes
    again = start_rollout(admin, "fix", ids[1:], batch_size=2, failure_tolerance=1)
    finished = wait_rollout(admin, again["id"], {"stopped", "finished"})
    assert finished["state"] == "finished", finished
    assert finished["counts"]["done"] == 3
    assert finished["counts"]["failed"] == 1
    for fixed in ids[2:]:
        assert node(admin, fixed)["status"] == "Online"


# batch 3's agent comes back this long after its batch started: past the batch's plain
# deadline, and early enough that it is back within the agents' reconnect window
# (protocol.RECONNECT_CAP, 30 s from the restart) plus the timeout, even when batch 2's agent
# took most of its own backoff to return (on a loaded machine batch 3 started 22 s or more
# after the restart: with twice the timeout, the late agent then missed the window)
ACTIVATION_TIMEOUT = 8.0
LATE_BY = ACTIVATION_TIMEOUT + 2


@pytest.mark.fault
def test_a_killed_controller_resumes_the_rollout(
    tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    """Killed while batch 2's Fix runs; batch 3's agent comes back late (what a long
    backoff does on a loaded machine): its batch, started meanwhile, waits for it, where it
    once failed with "no report from the agent" (a CI run)."""
    controller = Controller(
        data_dir=tmp_path / "controller",
        env={"VOIPCLOUD_ACTIVATION_TIMEOUT": str(ACTIVATION_TIMEOUT)},
    ).start()
    try:
        admin = controller.admin()
        agents: dict[int, AgentProcess] = {}
        # Fix takes a while on each agent: the kill lands while a batch is under way
        ids = fleet(
            controller,
            start_agent,
            tmp_path,
            4,
            apply="if [ -f FAIL_MARKER ]; then sleep 2; fi",
            agents=agents,
        )
        for node_id in ids:
            (tmp_path / f"fail-{node_id}").touch()  # slow from now on (not failing)
        created = start_rollout(admin, "fix", ids, batch_size=1, failure_tolerance=0)
        rollout_id = created["id"]

        def in_second_batch() -> bool:
            found = admin.get(f"{API}/rollouts/{rollout_id}").json()
            return found["current_batch"] == 2 and found["counts"]["running"] == 1

        wait_for(in_second_batch, timeout=30, interval=0.1, what="batch 2 under way")
        agents[ids[2]].stop()  # batch 3's agent: not back before its batch starts
        controller.kill()
        time.sleep(0.5)
        controller.start()  # the same data dir and port; agents reconnect on their own
        admin = controller.admin()
        wait_for(
            lambda: admin.get(f"{API}/rollouts/{rollout_id}").json()["current_batch"] == 3,
            timeout=30,
            interval=0.1,
            what="batch 3 started",
        )
        time.sleep(LATE_BY)
        agents[ids[2]].start()
        finished = wait_rollout(admin, rollout_id, {"finished", "stopped"}, timeout=120)
        outcomes = [(n["node_id"], n["outcome"], n["reason"]) for n in finished["nodes"]]
        assert finished["state"] == "finished", (outcomes, controller.log())
        assert finished["counts"]["done"] == 4
        for node_id in ids:
            assert node(admin, node_id)["status"] == "Online"
            ops = operations(admin, node_id)
            assert ops.count("fix") == 1, ops  # never started twice
            assert ops.count("fix-succeeded") == 1, ops
        log = admin.get(f"{API}/events", params={"limit": 500}).json()["items"]
        batches = [
            e
            for e in log
            if e["operation"] == "rollout-batch-started"
            and e["reason"].startswith(f"rollout {rollout_id}:")
        ]
        assert len(batches) == 4
    finally:
        controller.stop()
