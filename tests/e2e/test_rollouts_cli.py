"""`voipcloud rollout ...`: the real executable against a real `voipcloud serve`.

A Deactivate rollout over StandBy nodes needs no agent; an Activate rollout over nodes whose
agent never joins fails each node at the (short) activation timeout, so `--wait` sees it stop
at its tolerance. The rollouts over real agents are in tests/e2e/test_rollouts.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import Controller

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    started = Controller(
        data_dir=tmp_path_factory.mktemp("rollout-cli"),
        env={"VOIPCLOUD_ACTIVATION_TIMEOUT": "1.5"},
    ).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(shared: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    logged_in = Cli(config_dir=tmp_path_factory.mktemp("rollout-cli-config"))
    logged_in.login(shared)
    return logged_in


def add_node(cli: Cli, hostname: str, *, standby: bool) -> int:
    added = cli.json("node", "add", hostname, "--private-ip", "10.3.0.7")
    cli.ok("role", "assign", str(added["node_id"]), "wk")
    if standby:
        cli.ok("node", "standby", str(added["node_id"]))
    return int(added["node_id"])


def test_start_wait_list_show(admin: Cli, tmp_path: Path) -> None:
    ids = [add_node(admin, f"cli-sb-{i}", standby=True) for i in range(3)]
    done = admin.run(
        "rollout",
        "start",
        "deactivate",
        str(ids[0]),
        "cli-sb-1",  # by hostname too
        str(ids[2]),
        "--batch-size",
        "2",
        "--pause",
        "0",
        "--tolerance",
        "0",
        "--reason",
        "retire",
        "--wait",
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "finished, 100%: 3 done, 0 failed, 0 skipped" in done.stdout
    assert "cli-sb-1" in done.stdout
    for node_id in ids:
        assert admin.json("node", "info", str(node_id))["status"] == "Deactivated"
    listed = admin.json("rollout", "list")
    rollout = next(r for r in listed["items"] if r["action"] == "deactivate")
    shown = admin.json("rollout", "show", str(rollout["id"]))
    assert [n["node_id"] for n in shown["nodes"]] == ids
    assert [n["batch"] for n in shown["nodes"]] == [1, 1, 2]
    table = admin.ok("rollout", "show", str(rollout["id"])).stdout
    assert "Failure tolerance" in table
    assert "retire" in table
    # a finished rollout cannot be paused: one line, the rule's sentence, exit 1
    refused = one_line_error(admin.fails(1, "rollout", "pause", str(rollout["id"])))
    assert "only a running rollout can be paused" in refused


def test_wait_exits_1_when_the_rollout_stops(admin: Cli) -> None:
    for i in range(3):
        add_node(admin, f"cli-noagent-{i}", standby=False)
    done = admin.run(
        "rollout",
        "start",
        "activate",
        "--status",
        "Offline",
        "--q",
        "cli-noagent",
        "--batch-size",
        "1",
        "--pause",
        "0",
        "--tolerance",
        "0",
        "--wait",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rollout ")
    assert "stopped: 1 node(s) failed, more than the failure tolerance of 0" in last
    assert "Traceback" not in done.stderr
    assert "1 failed, 2 skipped" in done.stdout


def test_bad_input_is_one_line(admin: Cli) -> None:
    add_node(admin, "cli-bad-0", standby=True)
    message = one_line_error(
        admin.fails(
            1,
            "rollout",
            "start",
            "fix",
            "cli-bad-0",
            "--batch-size",
            "0",
            "--pause",
            "0",
            "--tolerance",
            "0",
        )
    )
    assert "batch_size" in message
    both = one_line_error(
        admin.fails(
            2,
            "rollout",
            "start",
            "fix",
            "cli-bad-0",
            "--status",
            "Damaged",
            "--batch-size",
            "1",
            "--pause",
            "0",
            "--tolerance",
            "0",
        )
    )
    assert "not both" in both
    missing = admin.run("rollout", "start", "fix", "cli-bad-0")
    assert missing.returncode == 2
    assert "--batch-size" in missing.stderr
    assert "does not exist" in one_line_error(admin.fails(1, "rollout", "show", "999999"))
