"""Enrolling many nodes end to end: the real `voipcloud node import` against a real
`voipcloud serve`, and real `voipcloud agent` processes joining with the keys it wrote."""

from __future__ import annotations

import csv
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cli_support import Cli
from tests.support.processes import AgentProcess, Controller, node, wait_for, wait_status

pytestmark = pytest.mark.e2e

CSV = """hostname,private_ip,public_ip,roles,sip.sip_port
imp-sip-1,10.7.0.1,203.0.113.71,sip,5070
imp-wk-1,10.7.0.2,,wk,
imp-wk-2,10.7.0.3,,wk que,
imp-wk-1,10.7.0.4,,wk,
imp-bad,10.7.0.5,,sip,
"""


def test_cli_import_writes_the_keys_0600_and_real_agents_join_with_them(
    controller: Controller, tmp_path: Path, start_agent: Callable[..., AgentProcess]
) -> None:
    cli = Cli(config_dir=tmp_path / "operator-config")
    cli.login(controller)
    source = tmp_path / "nodes.csv"
    source.write_text(CSV)
    keys_file = tmp_path / "keys.csv"
    done = cli.run("node", "import", str(source), "--keys-out", str(keys_file), "--output", "json")
    # two rows refused (a hostname twice, sip without a public IP): exit 1, the rest created
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    answer = json.loads(done.stdout)
    assert (answer["created"], answer["refused"]) == (3, 2)
    refused = {r["index"]: (r["field"], r["rule"]) for r in answer["results"] if "rule" in r}
    assert refused == {3: ("hostname", "hostname-unique"), 4: ("public_ip", "public-ip-required")}
    assert all("session_key" not in r for r in answer["results"])
    # the keys: in the file, readable by its owner only, never on the terminal
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    with keys_file.open() as opened:
        keys = list(csv.DictReader(opened))
    assert [k["hostname"] for k in keys] == ["imp-sip-1", "imp-wk-1", "imp-wk-2"]
    for key in keys:
        assert key["session_key"] not in done.stdout
        assert key["session_key"] not in done.stderr
    assert "3 session key(s) written to" in done.stderr
    # the file exists now: a second run refuses before creating anything
    assert "exists" in cli.fails(
        2, "node", "import", str(source), "--keys-out", str(keys_file)
    )  # a usage problem
    admin = controller.admin()
    assert admin.get("/api/v1/nodes", params={"q": "imp-"}).json()["total"] == 3

    # the JSON form, its answer without keys unless asked
    rows = [{"hostname": "imp-json-1", "private_ip": "10.7.1.1", "roles": ["wk"]}]
    (tmp_path / "more.json").write_text(json.dumps({"nodes": rows}))
    answer = cli.json("node", "import", str(tmp_path / "more.json"))
    assert answer["created"] == 1
    assert "session_key" not in answer["results"][0]
    table = cli.ok(
        "node",
        "import",
        "-",
        stdin=json.dumps([{"hostname": "imp-json-2", "private_ip": "10.7.1.2", "roles": ["wk"]}]),
    )
    assert "Import: 1 created, 0 refused" in table.stdout
    assert "imp-json-2" in table.stdout
    assert "session key(s) not shown" in table.stderr
    shown = cli.json(
        "node",
        "import",
        "-",
        "--show-keys",
        stdin=json.dumps([{"hostname": "imp-json-3", "private_ip": "10.7.1.3", "roles": ["wk"]}]),
    )
    assert shown["results"][0]["session_key"]

    # real agents join with the keys of the file; their nodes show them connected
    agents = {
        k["hostname"]: start_agent(controller, k["session_key"], name=k["hostname"]) for k in keys
    }
    for key in keys:
        node_id = int(key["node_id"])
        found = wait_for(
            lambda n=node_id: (d := node(admin, n))["connectivity"] == "connected" and d,
            timeout=60,
            what=f"the agent of {key['hostname']} to join and connect",
        )
        assert found["status"] == "Offline"
    # and one of them is activated by its agent, as a node added by hand would be
    wk = int(next(k["node_id"] for k in keys if k["hostname"] == "imp-wk-1"))
    activated = admin.post(f"/api/v1/nodes/{wk}/actions/activate")
    assert activated.status_code == 200, activated.text
    wait_status(admin, wk, "Online", timeout=60)
    joined = admin.get("/api/v1/events", params={"operation": "agent-joined", "limit": 100}).json()[
        "items"
    ]
    assert sorted(e["node_id"] for e in joined) == sorted(int(k["node_id"]) for k in keys)
    for agent in agents.values():
        assert agent.process is not None
        assert agent.process.poll() is None, agent.log()
