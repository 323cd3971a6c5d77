"""The operator CLI: the real `voipcloud` executable against a real `voipcloud serve`."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import (
    ADMIN_PASSWORD,
    AgentProcess,
    Controller,
    interruptible,
    voipcloud_executable,
)
from tests.support.server import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One controller for the tests that do not stop it (each uses its own hostnames)."""
    started = Controller(data_dir=tmp_path_factory.mktemp("cli-controller")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(shared: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """An operator logged in to the shared controller (profile default)."""
    logged_in = Cli(config_dir=tmp_path_factory.mktemp("admin-config"))
    logged_in.login(shared)
    return logged_in


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """An operator with an empty config dir."""
    return Cli(config_dir=tmp_path / "operator-config")


def add_node(cli: Cli, hostname: str, *extra: str) -> dict:
    return cli.json("node", "add", hostname, "--private-ip", "10.2.0.7", *extra)


def test_full_node_lifecycle_with_wait_and_a_real_agent(
    shared: Controller, admin: Cli, start_agent: Callable[..., AgentProcess]
) -> None:
    added = add_node(admin, "cli-sip", "--public-ip", "203.0.113.7")
    node_id = str(added["node_id"])
    assert added["status"] == "Offline"

    assigned = admin.ok("role", "assign", node_id, "sip", "--param", "sip_port=5070")
    key, command = assigned.stdout.strip().splitlines()
    # the key goes in a file, never on the command line (issue 17); plain http: no CA pin;
    # the line installs the agent from this controller and starts it (issue 16)
    assert command == (
        f"curl -fsS {shared.url}/agent/install.sh | sh -s -- --controller {shared.url} "
        "--session-key-file /etc/voipcloud/session-key"
    )
    assert key not in command
    assert "write it down" in assigned.stderr
    assert admin.json("node", "session-key", node_id) == {
        "node_id": int(node_id),
        "session_key": key,
    }

    start_agent(shared, key, name="cli-sip")
    activated = admin.run("node", "activate", node_id, "--wait", "--timeout", "60")
    assert activated.returncode == 0, activated.stderr
    assert "is Online" in activated.stdout

    info = admin.json("node", "info", "cli-sip")  # by hostname too
    assert info["node_id"] == int(node_id)
    assert info["status"] == "Online"
    assert info["session_key"] == key
    assert info["roles"] == ["sip"]
    assert info["components"], "the agent's inventory shows in the Quick info"
    sip = next(a for a in info["assignments"] if a["role"] == "sip")
    assert sip["parameters"]["sip_port"] == {"value": 5070, "source": "explicit"}
    table = admin.ok("node", "info", node_id).stdout
    assert "installed (list them with" in table  # a count: hundreds of packages otherwise
    assert "Session Key" in table
    assert "Components (" in admin.ok("node", "info", node_id, "--components").stdout

    listed = admin.json("node", "list", "--status", "online", "--role", "sip")
    assert [n["node_id"] for n in listed["items"]] == [int(node_id)]
    assert listed["total"] == 1

    damaged = admin.json("node", "mark-damaged", node_id, "--reason", "disk swapped")
    assert (damaged["status"], damaged["status_reason"]) == ("Damaged", "disk swapped")
    fixed = admin.run("node", "fix", node_id, "--wait", "--timeout", "60")
    assert fixed.returncode == 0, fixed.stderr
    assert "is Online" in fixed.stdout

    deactivated = admin.json("node", "deactivate", node_id, "--wait", "--timeout", "60")
    assert deactivated["status"] == "Deactivated"
    assert deactivated["pending_operation"] is None

    admin.ok("node", "delete", node_id, "--yes")
    live = admin.json("node", "list", "-q", "cli-sip")
    assert live["items"] == []
    deleted = admin.json("node", "list", "--status", "Deleted")
    assert [n["hostname"] for n in deleted["items"]] == ["cli-sip"]

    history = admin.json("node", "events", node_id)
    operations = [e["operation"] for e in history["items"]]
    assert "activation-succeeded" in operations
    assert operations[0] == "delete"  # newest first
    assert history["total"] == len(operations)


def test_wait_exits_non_zero_when_activation_fails(
    shared: Controller, admin: Cli, start_agent: Callable[..., AgentProcess]
) -> None:
    node_id = str(add_node(admin, "cli-wk")["node_id"])
    assigned = admin.json("role", "assign", node_id, "wk")
    config = '[roles.wk]\napply = "echo disk full >&2; exit 3"\n'
    start_agent(shared, assigned["session_key"], name="cli-wk", config=config)
    done = admin.run("node", "activate", node_id, "--wait", "--timeout", "60", "-o", "json")
    assert done.returncode == 5, done.stderr
    assert json.loads(done.stdout)["status"] == "ActivateFailed"
    error = one_line_error(done.stderr)
    assert "ActivateFailed" in error
    assert "disk full" in error

    # exit code 6: no agent ever joins this one, and --wait gives up before the controller does
    silent = str(add_node(admin, "cli-silent")["node_id"])
    admin.ok("role", "assign", silent, "wk")
    error = one_line_error(admin.fails(6, "node", "activate", silent, "--wait", "--timeout", "1"))
    assert "has not settled after 1 s" in error


def test_token_file_is_private_and_profiles_are_separate(
    shared: Controller, cli: Cli, tmp_path: Path
) -> None:
    second = Controller(data_dir=tmp_path / "second-controller").start()
    try:
        cli.login(shared)
        cli.ok(
            "login",
            "--controller",
            second.url,
            "--profile",
            "lab",
            env={"VOIPCLOUD_PASSWORD": ADMIN_PASSWORD},
        )
        token_file = cli.config_dir / "profiles.json"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700
        stored = json.loads(token_file.read_text())["profiles"]
        assert set(stored) == {"default", "lab"}
        assert stored["lab"]["controller"] == second.url
        assert stored["lab"]["token"] != stored["default"]["token"]

        listed = cli.json("profiles")
        assert {p["name"]: p["controller"] for p in listed} == {
            "default": shared.url,
            "lab": second.url,
        }
        assert all("token" not in p for p in listed)

        cli.json("--profile", "lab", "node", "add", "lab-only", "--private-ip", "10.9.0.1")
        in_lab = cli.json("node", "list", env={"VOIPCLOUD_PROFILE": "lab"})
        in_default = cli.json("node", "list")
        assert "lab-only" in [n["hostname"] for n in in_lab["items"]]
        assert "lab-only" not in [n["hostname"] for n in in_default["items"]]

        second.stop()  # exit code 3: the lab controller is gone, the stored login stays
        error = one_line_error(cli.fails(3, "--profile", "lab", "node", "list"))
        assert f"cannot reach the controller at {second.url}" in error
        cli.ok("logout", "--profile", "lab")  # forgets the login even when unreachable
        assert set(json.loads(token_file.read_text())["profiles"]) == {"default"}
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        error = one_line_error(cli.fails(4, "--profile", "lab", "node", "list"))
        assert "login --profile lab" in error
        cli.json("node", "list")  # the default profile still works
    finally:
        second.stop()


def test_exit_code_4_without_a_login_or_with_a_revoked_token(shared: Controller, cli: Cli) -> None:
    error = one_line_error(cli.fails(4, "node", "list"))
    assert "voipcloud login" in error
    wrong = cli.fails(4, "login", "--controller", shared.url, "--password-stdin", stdin="not-it\n")
    assert "wrong username or password" in one_line_error(wrong)

    cli.login(shared)
    token = json.loads((cli.config_dir / "profiles.json").read_text())["profiles"]["default"]
    api = shared.admin()
    api.headers["Authorization"] = f"Bearer {token['token']}"
    assert api.delete("/api/v1/auth/token").status_code == 204  # revoked behind the CLI's back
    assert "not authenticated" in one_line_error(cli.fails(4, "extension", "list"))

    stored = json.loads((cli.config_dir / "profiles.json").read_text())
    stored["profiles"]["default"]["expires_at"] = 1.0
    (cli.config_dir / "profiles.json").write_text(json.dumps(stored))
    assert "has expired" in one_line_error(cli.fails(4, "node", "list"))


def test_exit_code_3_when_no_controller_listens(cli: Cli) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    error = cli.fails(3, "login", "--controller", closed, "--password-stdin", stdin="x\n")
    assert f"cannot reach the controller at {closed}" in one_line_error(error)


def test_exit_code_1_when_a_rule_refuses(shared: Controller, admin: Cli) -> None:
    node_id = str(add_node(admin, "cli-rules")["node_id"])

    # 409: the lifecycle table refuses, nothing changes
    error = one_line_error(admin.fails(1, "node", "deactivate", node_id))
    assert "refused" in error
    assert "Offline" in error
    error = one_line_error(admin.fails(1, "node", "add", "cli-rules", "--private-ip", "10.2.0.8"))
    assert "cli-rules" in error
    # 422: the field at fault is named
    error = one_line_error(admin.fails(1, "role", "assign", node_id, "sip"))
    assert "public" in error.lower()
    error = one_line_error(admin.fails(1, "node", "add", "bad-ip", "--private-ip", "10.2.0.999"))
    assert "private_ip" in error
    error = one_line_error(admin.fails(1, "role", "assign", node_id, "wk", "-p", "max_jobs=many"))
    assert "max_jobs" in error
    # 404
    assert "not found" in one_line_error(admin.fails(1, "node", "info", "999999"))
    assert "not found" in one_line_error(admin.fails(1, "node", "info", "no-such-host"))
    # digits of other scripts are not a NodeID (int() would take some and choke on others)
    for ref in ("³", "١٢", "①"):
        assert "not found" in one_line_error(admin.fails(1, "node", "info", ref))

    assert admin.json("node", "info", node_id)["status"] == "Offline"
    assert admin.json("node", "info", node_id)["roles"] == []

    # dot segments reach the controller, which names the field, instead of a "Not Found"
    for key in ("../../etc/passwd", "./x", "a/../b"):
        assert "key:" in one_line_error(admin.fails(1, "storage", "get", "faxes", key))

    # the API's URL instead of the controller's: say what to give instead of "Not Found"
    api_url = f"{shared.url}/api/v1"
    wrong = admin.fails(1, "login", "--controller", api_url, "--password-stdin", stdin="x\n")
    assert "give the controller's base URL" in one_line_error(wrong)


def test_exit_code_2_for_usage_errors(shared: Controller, admin: Cli) -> None:
    node_id = str(add_node(admin, "cli-usage")["node_id"])
    assert "--status" in one_line_error(admin.fails(2, "node", "list", "--status", "Sleeping"))
    assert "frobnicate" in one_line_error(admin.fails(2, "node", "frobnicate", node_id))
    assert "Missing argument" in one_line_error(admin.fails(2, "node", "info"))
    assert "--output" in one_line_error(admin.fails(2, "node", "list", "--output", "xml"))
    group_help = admin.run("node")  # a group without a command: its help, exit 2
    assert (group_help.returncode, "activate" in group_help.stdout) == (2, True)
    assert "NAME=VALUE" in one_line_error(
        admin.fails(2, "role", "assign", node_id, "wk", "-p", "x")
    )
    assert "--yes" in one_line_error(admin.fails(2, "node", "delete", node_id))
    assert "nothing to change" in one_line_error(admin.fails(2, "node", "edit", node_id))
    bad_url = admin.fails(2, "login", "--controller", "ftp://ic", "--password-stdin", stdin="x\n")
    assert "--controller" in one_line_error(bad_url)
    for url in ("http://[::1", "http://ic:99999", "http://ic:port"):  # urlsplit's ValueErrors
        bad = admin.fails(2, "login", "--controller", url, "--password-stdin", stdin="x\n")
        assert "--controller must be a URL" in one_line_error(bad)
    for timeout in ("abc", "-1", "nan"):
        bad_env = admin.fails(2, "node", "list", env={"VOIPCLOUD_HTTP_TIMEOUT": timeout})
        assert "VOIPCLOUD_HTTP_TIMEOUT must be a number" in one_line_error(bad_env)
    assert admin.json("node", "list", env={"VOIPCLOUD_HTTP_TIMEOUT": "7.5"})["items"]
    for timed in (["node", "activate", node_id, "--wait"], ["storage", "migrate", "faxes"]):
        assert "--timeout" in one_line_error(admin.fails(2, *timed, "--timeout", "-5"))
    refused_choice = one_line_error(admin.fails(2, "node", "list", "-o", "yaml"))
    assert "Value error" not in refused_choice
    assert "'yaml' is not one of 'table', 'json'" in refused_choice
    a_file = shared.data_dir / "voipcloud.sqlite3"  # a config dir that is not a directory
    unwritable = admin.fails(
        1,
        "login",
        "--controller",
        shared.url,
        "--password-stdin",
        stdin=ADMIN_PASSWORD + "\n",
        env={"VOIPCLOUD_CONFIG_DIR": str(a_file)},
    )
    assert str(a_file) in one_line_error(unwritable)
    assert admin.json("node", "info", node_id)["status"] == "Offline"  # nothing was deleted


def test_ctrl_c_during_wait_stops_following_but_not_the_operation(
    shared: Controller, admin: Cli
) -> None:
    node_id = str(add_node(admin, "cli-interrupted")["node_id"])
    admin.ok("role", "assign", node_id, "wk")  # no agent: the activation stays pending
    waiting = subprocess.Popen(
        [voipcloud_executable(), "node", "activate", node_id, "--wait", "--timeout", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=admin.env(),
        preexec_fn=interruptible,
    )
    try:
        for _ in range(200):  # until the CLI has asked for the activation
            if _pending_kind(admin, node_id) == "activate":
                break
        else:
            raise AssertionError("the activation was never requested")
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 130, stderr
    assert "the operation goes on" in one_line_error(stderr)
    assert _pending_kind(admin, node_id) == "activate"


def _pending_kind(cli: Cli, node_id: str) -> str | None:
    pending = cli.json("node", "info", node_id)["pending_operation"]
    return pending["kind"] if pending else None


def test_role_remove_shows_the_warning_and_needs_confirmation(
    shared: Controller, admin: Cli
) -> None:
    ic = next(n for n in admin.json("node", "list")["items"] if n["is_controller"])
    ic_id = str(ic["node_id"])
    admin.ok("role", "assign", ic_id, "jabber")

    unconfirmed = admin.run("role", "remove", ic_id, "jabber")
    assert unconfirmed.returncode == 2
    assert "Warning: the Jabber role will be removed" in unconfirmed.stderr
    assert "jabber" in admin.json("node", "info", ic_id)["roles"]

    removed = admin.json("role", "remove", ic_id, "jabber", "--yes")
    assert "jabber" not in removed["roles"]
    other = str(add_node(admin, "cli-not-ic")["node_id"])
    admin.ok("role", "assign", other, "jabber")
    assert admin.fails(1, "role", "remove", other, "jabber", "--yes")


def test_edit_unassign_standby_and_session_key(shared: Controller, admin: Cli) -> None:
    node_id = str(add_node(admin, "cli-edit")["node_id"])
    first_key = admin.json("role", "assign", node_id, "que", "-p", "port=5673")["session_key"]
    edited = admin.json("role", "edit", node_id, "que", "-p", "port=5674")
    que = next(a for a in edited["assignments"] if a["role"] == "que")
    assert que["parameters"]["port"]["value"] == 5674
    reset = admin.json("role", "edit", node_id, "que", "--reset", "port")
    que = next(a for a in reset["assignments"] if a["role"] == "que")
    assert que["parameters"]["port"]["source"] != "explicit"

    renamed = admin.json("node", "edit", node_id, "--hostname", "cli-edited", "--public-ip", "")
    assert (renamed["hostname"], renamed["public_ip"]) == ("cli-edited", None)

    new_key = admin.json("node", "session-key", "cli-edited", "--regenerate")["session_key"]
    assert new_key not in ("", None, first_key)

    admin.ok("role", "unassign", node_id, "que")
    standby = admin.json("node", "standby", node_id, "--reason", "spare")
    assert standby["status"] == "StandBy"
    events = admin.json("node", "events", node_id, "--limit", "1")["items"]
    assert events[0]["reason"] == "spare"


def test_extensions_and_the_catalogue(shared: Controller, admin: Cli) -> None:
    admin.ok("extension", "add", "1001", "--label", "Reception")
    admin.json("extension", "add", "1002")
    listed = admin.json("extension", "list")
    assert [(e["number"], e["label"]) for e in listed["items"]] == [
        ("1001", "Reception"),
        ("1002", ""),
    ]
    assert admin.fails(1, "extension", "add", "1001")  # duplicate
    admin.ok("extension", "delete", "1001")
    assert admin.json("extension", "list")["total"] == 1
    assert "not found" in one_line_error(admin.fails(1, "extension", "delete", "1001"))

    catalogue = admin.json("role", "list")
    assert [r["code"] for r in catalogue][:3] == ["ic", "web", "sip"]
    assert {r["code"]: r["public_ip"] for r in catalogue}["sip"] == "required"
    assert "sip_port" in admin.ok("role", "show", "sip").stdout


def test_statuses_are_coloured_from_the_status_definitions(shared: Controller, admin: Cli) -> None:
    add_node(admin, "cli-colour")
    coloured = admin.ok("node", "list", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"}).stdout
    offline = coloured.split("cli-colour", 1)[1]
    assert "\x1b[1;38;5;244mOffline" in offline, repr(offline)  # grey -> grey50


def test_help_and_completion_stay_light(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['voipcloud', 'node', '--help']\n"
        "from voipcloud.cli.main import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('fastapi', 'sqlalchemy', 'uvicorn', 'httpx')\n"
        "print('HEAVY:' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "activate" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:"  # none of them imported

    # the shell named explicitly: `--show-completion` takes no value and detects the shell
    # from the process tree (shellingham), which under a test runner may hold no shell at all
    # ("Shell  not supported.", exit 1, seen in two parallel runs)
    completion = subprocess.run(
        [voipcloud_executable()],
        env={**os.environ, "_VOIPCLOUD_COMPLETE": "source_bash"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completion.returncode == 0, (completion.returncode, completion.stderr[-2000:])
    assert "_VOIPCLOUD_COMPLETE" in completion.stdout
    completed = subprocess.run(
        [voipcloud_executable()],
        env={
            **os.environ,
            "_VOIPCLOUD_COMPLETE": "complete_bash",
            "COMP_WORDS": "voipcloud no",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "node" in completed.stdout.split()
