"""`voipcloud events` against a real controller (issue 16): filters, the three formats, the
exports as the API writes them, and --follow printing new events until Ctrl-C (exit 0)."""

from __future__ import annotations

import csv
import io
import json
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import Controller, interruptible, voipcloud_executable

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    started = Controller(data_dir=tmp_path_factory.mktemp("events-controller")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(served: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("events-cli"))
    cli.login(served)
    return cli


@pytest.fixture(scope="module")
def scene(served: Controller) -> dict[str, int]:
    """Two nodes added and edited by admin; one a bit later (a time boundary between)."""
    api = served.admin()
    ids = {}
    for name in ("ev-a", "ev-b"):
        made = api.post("/api/v1/nodes", json={"hostname": name, "private_ip": "10.9.0.1"})
        ids[name] = made.json()["node_id"]
    api.patch(f"/api/v1/nodes/{ids['ev-a']}", json={"private_ip": "10.9.0.2"}).raise_for_status()
    api.close()
    return ids


def api_export(served: Controller, fmt: str, **params: str) -> str:
    api = served.admin()
    try:
        answer = api.get("/api/v1/events", params={"format": fmt, **params})
        answer.raise_for_status()
        return answer.text
    finally:
        api.close()


def test_table_filters_by_node_and_operation(admin: Cli, scene: dict[str, int]) -> None:
    shown = admin.ok("events", "--node", "ev-a").stdout
    assert "add-node" in shown
    assert "edit-node" in shown
    lines = admin.ok("events", "--node", "ev-a", "--format", "jsonl").stdout.splitlines()
    assert {json.loads(x)["node_id"] for x in lines} == {scene["ev-a"]}
    by_id = admin.ok("events", "--node", str(scene["ev-b"]), "--format", "jsonl").stdout
    assert {json.loads(x)["operation"] for x in by_id.splitlines()} == {"add-node"}
    only = admin.ok("events", "--operation", "edit-node").stdout
    assert "edit-node" in only
    assert "add-node" not in only


def test_csv_and_jsonl_are_the_api_exports(
    admin: Cli, served: Controller, scene: dict[str, int]
) -> None:
    for fmt in ("csv", "jsonl"):
        # (not every event: signing in to compare is an event too)
        mine = admin.ok("events", "--format", fmt, "--actor", "admin", "--operation", "add-node")
        exported = api_export(served, fmt, actor="admin", operation="add-node")
        assert mine.stdout == exported.replace("\r\n", "\n")  # text mode reads \r\n as \n
    rows = list(csv.DictReader(io.StringIO(admin.ok("events", "--format", "csv").stdout)))
    assert {r["operation"] for r in rows} >= {"add-node", "edit-node"}
    # --limit: the N newest, still oldest first, header kept
    last_two = list(
        csv.DictReader(io.StringIO(admin.ok("events", "--format", "csv", "--limit", "2").stdout))
    )
    assert [r["id"] for r in last_two] == [r["id"] for r in rows[-2:]]
    lines = admin.ok("events", "--format", "jsonl", "--limit", "1").stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["id"] == int(rows[-1]["id"])


def test_time_range_and_refusals(admin: Cli, scene: dict[str, int]) -> None:
    rows = list(csv.DictReader(io.StringIO(admin.ok("events", "--format", "csv").stdout)))
    cut = rows[-1]["at"]
    after = list(
        csv.DictReader(io.StringIO(admin.ok("events", "--format", "csv", "--since", cut).stdout))
    )
    before = list(
        csv.DictReader(io.StringIO(admin.ok("events", "--format", "csv", "--until", cut).stdout))
    )
    assert after
    assert all(r["at"] >= cut for r in after)
    assert all(r["at"] < cut for r in before)
    assert len(after) + len(before) == len(rows)
    # refused: one line, non-zero, naming the field
    assert "since" in one_line_error(admin.fails(1, "events", "--since", "yesterday-ish"))
    assert "operation" in one_line_error(admin.fails(1, "events", "--operation", "Not An Op"))
    assert "no node" in one_line_error(admin.fails(1, "events", "--node", "nowhere-host"))
    assert "--until" in one_line_error(admin.fails(2, "events", "--follow", "--until", cut))


def read_until(process: subprocess.Popen[str], text: str, timeout: float = 20) -> str:
    """What the process printed until a line holds `text` (bounded)."""
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            seen += line
            if text in line:
                return seen
    raise AssertionError(f"no {text!r} within {timeout} s; printed: {seen!r}")


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_follow_prints_new_events_until_ctrl_c(
    admin: Cli, served: Controller, scene: dict[str, int], tmp_path: Path, fmt: str
) -> None:
    process = subprocess.Popen(
        [
            *(voipcloud_executable(), "events", "--follow", "--interval", "0.3"),
            *("--format", fmt, "--operation", "add-node", "--limit", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=admin.env(),
        preexec_fn=interruptible,
    )
    try:
        read_until(process, "add-node")  # the newest match, at once
        api = served.admin()
        name = f"ev-follow-{fmt}"
        made = api.post("/api/v1/nodes", json={"hostname": name, "private_ip": "10.9.0.9"})
        node_id = made.json()["node_id"]
        api.patch(f"/api/v1/nodes/{node_id}", json={"private_ip": "10.9.0.8"})  # filtered out
        api.close()
        printed = read_until(
            process, f"node {node_id}" if fmt == "table" else f'"node_id": {node_id}'
        )
        assert "edit-node" not in printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_follow_refuses_without_login(tmp_path: Path) -> None:
    nobody = Cli(tmp_path / "nobody")
    assert "login" in one_line_error(nobody.fails(4, "events", "--follow"))
