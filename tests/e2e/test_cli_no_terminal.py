"""The real `voipcloud` executable with stdout a pipe (no terminal), as in a script or CI:
JSON and tables never split a value (long hostnames, IPv6 addresses, session keys), whatever
COLUMNS says; `node info` counts the components unless `--components`; a node is found by
its exact hostname among 55 that contain it; the CLI's edits send If-Match.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.cli_support import Cli
from tests.support.processes import Controller

pytestmark = pytest.mark.e2e

# 3 labels of 63 characters + a short one: 199 characters, longer than any terminal line
LONG_HOST = ".".join(["a" * 62 + str(i) for i in range(3)] + ["example"])
V6_PRIVATE = "fd12:3456:789a:bcde:f012:3456:789a:bcde"
V6_PUBLIC = "2001:db8:ffff:eeee:dddd:cccc:bbbb:aaaa"
COMPONENTS = [{"name": f"package-{i:03d}", "version": f"1.{i}"} for i in range(950)]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    started = Controller(data_dir=tmp_path_factory.mktemp("cli-pipe")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def cli(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    logged_in = Cli(config_dir=tmp_path_factory.mktemp("pipe-config"))
    logged_in.login(controller)
    return logged_in


def whole_on_one_line(output: str, *values: str) -> None:
    for value in values:
        assert any(value in line for line in output.splitlines()), (value, output)


@pytest.mark.parametrize("columns", ["80", "40", ""])
def test_tables_and_json_never_split_a_value(cli: Cli, columns: str) -> None:
    env = {"COLUMNS": columns} if columns else {"COLUMNS": ""}
    name = f"n{columns or 'x'}.{LONG_HOST}"
    added = cli.json(
        "node", "add", name, "--private-ip", V6_PRIVATE, "--public-ip", V6_PUBLIC, env=env
    )
    node_id = str(added["node_id"])
    assigned = cli.json("role", "assign", node_id, "web", env=env)
    key = assigned["session_key"]
    assert len(key) >= 32
    listing = cli.ok("node", "list", "--search", name[:20], env=env).stdout
    whole_on_one_line(listing, name, V6_PRIVATE, V6_PUBLIC)
    info = cli.ok("node", "info", node_id, env=env).stdout
    whole_on_one_line(info, name, V6_PRIVATE, V6_PUBLIC, key)
    # JSON: parseable as sent, every value whole
    data = json.loads(cli.ok("node", "info", node_id, "-o", "json", env=env).stdout)
    assert data["hostname"] == name
    assert data["session_key"] == key
    assert data["etag"].startswith('"')


def test_components_counted_unless_asked(cli: Cli, controller: Controller) -> None:
    """An agent's inventory of ~950 packages: a count by default, the list on request."""
    admin = controller.admin()
    node_id = admin.post(
        "/api/v1/nodes", json={"hostname": "inventory-host", "private_ip": "10.1.0.2"}
    ).json()["node_id"]
    admin.close()
    # the inventory as an agent reports it (what the agent writes on join)
    _set_components(controller, node_id)
    plain = cli.ok("node", "info", str(node_id)).stdout
    assert "950 installed" in plain
    assert "package-500" not in plain
    listed = cli.ok("node", "info", str(node_id), "--components").stdout
    whole_on_one_line(listed, "package-000", "package-949")


def _set_components(controller: Controller, node_id: int) -> None:
    """Store an inventory for the node through the controller's own database layer."""
    from sqlalchemy import create_engine, update

    from voipcloud.store.database import sqlite_url
    from voipcloud.store.tables import nodes

    engine = create_engine(sqlite_url(controller.data_dir.resolve()))
    with engine.begin() as conn:
        conn.execute(update(nodes).where(nodes.c.id == node_id).values(components=COMPONENTS))
    engine.dispose()


def test_exact_hostname_among_55_that_contain_it(cli: Cli, controller: Controller) -> None:
    admin = controller.admin()
    for i in range(55):
        admin.post(
            "/api/v1/nodes", json={"hostname": f"edge-{i:02d}", "private_ip": "10.2.0.1"}
        ).raise_for_status()
    edge = admin.post("/api/v1/nodes", json={"hostname": "edge", "private_ip": "10.2.0.2"}).json()
    found = admin.get("/api/v1/nodes", params={"hostname": "EDGE"}).json()
    assert [n["node_id"] for n in found["items"]] == [edge["node_id"]]
    admin.close()
    info = cli.json("node", "info", "edge")
    assert info["node_id"] == edge["node_id"]
    # a Deleted node is still found by its hostname (its history), the live one first
    cli.ok("node", "delete", "edge", "--yes")
    assert cli.json("node", "info", "edge")["status"] == "Deleted"


def test_edits_send_if_match(cli: Cli) -> None:
    """`--if-match` with an ETag read before someone else's change: refused, nothing saved."""
    added = cli.json("node", "add", "ifmatch-host", "--private-ip", "10.3.0.1")
    node_id = str(added["node_id"])
    etag = cli.json("node", "info", node_id)["etag"]
    cli.ok("node", "edit", node_id, "--private-ip", "10.3.0.2")  # someone else's edit
    error = cli.fails(1, "node", "edit", node_id, "--hostname", "late", "--if-match", etag)
    assert "private_ip" in error
    assert "stale-version" in error or "changed" in error
    assert cli.json("node", "info", node_id)["hostname"] == "ifmatch-host"
    cli.fails(1, "node", "delete", node_id, "--yes", "--if-match", etag)
    # with the current version it goes through
    current = cli.json("node", "info", node_id)["etag"]
    cli.ok("node", "edit", node_id, "--hostname", "in-time", "--if-match", current)
    # the commands that read then write send the version they read
    cli.ok("infra", "set", "infrastructure_name=piped")
    cli.ok("role", "assign", node_id, "wk")
    cli.ok("role", "edit", node_id, "wk", "--param", "max_jobs=3")
    stale_role = cli.json("node", "info", node_id)["assignments"][0]["etag"]
    cli.ok("role", "edit", node_id, "wk", "--param", "max_jobs=4")
    error = cli.fails(1, "role", "unassign", node_id, "wk", "--if-match", stale_role)
    assert "max_jobs" in error
