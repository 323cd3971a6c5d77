"""`voipcloud node maintenance` and `voipcloud node bulk`: the real executable against a real
`voipcloud serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import Controller

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    started = Controller(data_dir=tmp_path_factory.mktemp("cli-fleet")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    logged_in = Cli(config_dir=tmp_path_factory.mktemp("fleet-config"))
    logged_in.login(controller)
    return logged_in


def add(admin: Cli, hostname: str) -> int:
    node_id: int = admin.json("node", "add", hostname, "--private-ip", "10.2.9.1")["node_id"]
    return node_id


def test_maintenance_and_a_bulk_action_with_per_node_results(admin: Cli) -> None:
    a, b, c = add(admin, "blk-a"), add(admin, "blk-b"), add(admin, "blk-c")
    admin.ok("node", "standby", str(c))  # StandBy already: standby refused by its status
    entered = admin.ok("node", "maintenance", "blk-b", "--reason", "new disks")
    assert "is in maintenance: new disks" in entered.stderr
    listed = admin.json("node", "list", "--maintenance")
    assert [n["hostname"] for n in listed["items"]] == ["blk-b"]
    assert "blk-b" not in {
        n["hostname"] for n in admin.json("node", "list", "--no-maintenance")["items"]
    }
    table = admin.ok("node", "list", "-q", "blk-").stdout
    assert "[maintenance: new disks]" in table

    # by filter: a done, b left out (maintenance), c refused by its status -> exit 1
    done = admin.run("node", "bulk", "standby", "--filter-search", "blk-", "--yes")
    assert done.returncode == 1, done.stderr
    assert "Set StandBy: 1 done, 2 refused" in done.stdout
    row_a = next(line for line in done.stdout.splitlines() if "blk-a" in line)
    assert "done" in row_a
    assert "node-in-maintenance" in done.stdout
    assert admin.json("node", "info", "blk-a")["status"] == "StandBy"
    assert admin.json("node", "info", "blk-b")["status"] == "Offline"
    # again, as JSON: now a is refused by its status too
    answer = admin.run(
        "node", "bulk", "standby", "--filter-search", "blk-", "--yes", "--output", "json"
    )
    assert answer.returncode == 1
    by_node = {r["node_id"]: r for r in json.loads(answer.stdout)["results"]}
    assert by_node[a]["rule"] == "standby-status"  # StandBy since the first call
    assert by_node[b]["rule"] == "node-in-maintenance"
    assert by_node[c]["rule"] == "standby-status"

    # named nodes (id and hostname), the one in maintenance included explicitly -> exit 0
    included = admin.run(
        "node", "bulk", "standby", "blk-b", "--include-maintenance", "--yes", "--reason", "cli"
    )
    assert included.returncode == 0, (included.stdout, included.stderr)
    assert "1 done, 0 refused" in included.stdout
    assert admin.json("node", "info", "blk-b")["status"] == "StandBy"
    left = admin.ok("node", "maintenance", str(b), "--off")
    assert "left maintenance" in left.stderr
    assert admin.json("node", "info", "blk-b")["maintenance"] is None

    # a role action with its role and a parameter
    roles = admin.run(
        "node", "bulk", "assign-role", "blk-a", "blk-c", "--role", "wk", "-p", "max_jobs=3", "--yes"
    )
    assert roles.returncode == 1  # StandBy nodes refuse Assign Role
    assert "assign-role-status" in roles.stdout


def test_refusals_and_usage_errors_are_one_line(admin: Cli) -> None:
    node = add(admin, "blk-err")
    error = one_line_error(admin.fails(2, "node", "bulk", "fix"))
    assert "which nodes?" in error
    error = one_line_error(
        admin.fails(2, "node", "bulk", "fix", str(node), "--filter-status", "Damaged")
    )
    assert "not both" in error
    error = one_line_error(admin.fails(2, "node", "bulk", "explode", str(node), "--yes"))
    assert "unknown action" in error
    error = one_line_error(admin.fails(2, "node", "maintenance", str(node)))
    assert "--reason" in error
    # no terminal to ask: --yes is needed
    error = one_line_error(admin.fails(2, "node", "bulk", "standby", str(node)))
    assert "--yes" in error
    # the server's refusals: 422 naming the field, 409 naming the rule
    error = one_line_error(admin.fails(1, "node", "bulk", "assign-role", str(node), "--yes"))
    assert "role" in error
    error = one_line_error(admin.fails(1, "node", "maintenance", str(node), "--reason", ""))
    assert "reason" in error
    admin.ok("node", "maintenance", str(node), "--reason", "x")
    error = one_line_error(admin.fails(1, "node", "maintenance", str(node), "--reason", "y"))
    assert "maintenance-already-on" in error or "already in maintenance" in error
    # every live node, explicitly: --all-matching (the node in maintenance left out)
    every = admin.run("node", "bulk", "standby", "--all-matching", "--yes", "-o", "json")
    assert every.returncode == 1  # at least the node in maintenance is refused
    assert "node-in-maintenance" in every.stdout
    assert admin.json("node", "info", str(node))["status"] == "Offline"
