"""Accounts, passwords and tokens through the real `voipcloud` executable against a real
`voipcloud serve`; offline recovery on a stopped controller's data dir; and what
VOIPCLOUD_ADMIN_PASSWORD does after the first start."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import ADMIN_PASSWORD, Controller

pytestmark = pytest.mark.e2e

PASSWORD = "a-long-enough-passphrase"
NEW_PASSWORD = "recovered-on-the-host"
API = "/api/v1"

# (command, least role that may run it), from SPEC.md §9
COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("node", "list"), "viewer"),
    (("infra", "show"), "viewer"),
    (("storage", "show"), "viewer"),
    (("extension", "list"), "viewer"),
    (("account", "whoami"), "viewer"),
    (("token", "list"), "viewer"),
    (("node", "add", "{name}", "--private-ip", "10.2.0.8"), "operator"),
    (("extension", "add", "{number}"), "admin"),
    (("infra", "set", "ntp_servers=pool.ntp.org"), "admin"),
    (("account", "list"), "admin"),
    (("account", "set-role", "victor", "viewer"), "admin"),
]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


def login_as(controller: Controller, tmp_path: Path, username: str, password: str) -> Cli:
    cli = Cli(config_dir=tmp_path / f"config-{username}")
    cli.ok(
        "login",
        "--controller",
        controller.url,
        "--username",
        username,
        "--password-stdin",
        stdin=password + "\n",
    )
    return cli


def test_cli_refuses_exactly_where_the_role_says(controller: Controller, tmp_path: Path) -> None:
    admin = login_as(controller, tmp_path, "admin", ADMIN_PASSWORD)
    admin.ok("account", "add", "olga", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    admin.ok("account", "add", "victor", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    short = admin.fails(
        1, "account", "add", "shorty", "--role", "viewer", "--password-stdin", stdin="short\n"
    )
    assert "password: must be at least 12" in one_line_error(short)
    listed = admin.json("account", "list")
    assert [(a["username"], a["role"]) for a in listed] == [
        ("admin", "admin"),
        ("olga", "operator"),
        ("victor", "viewer"),
    ]
    people = {
        "admin": admin,
        "operator": login_as(controller, tmp_path, "olga", PASSWORD),
        "viewer": login_as(controller, tmp_path, "victor", PASSWORD),
    }
    runs = 0
    for role, cli in people.items():
        for index, (command, least) in enumerate(COMMANDS):
            args = [
                a.format(name=f"cli-{role}-{index}", number=f"7{RANK[role]}{index:02d}")
                for a in command
            ]
            runs += 1
            if RANK[role] >= RANK[least]:
                cli.ok(*args)
            else:
                error = one_line_error(cli.fails(1, *args))
                assert "refused (role-forbidden)" in error, (role, args, error)
    assert runs == 3 * len(COMMANDS)

    # a role change applies at once; a disabled account's login ends
    admin.ok("account", "set-role", "olga", "viewer")
    refused = people["operator"].fails(1, "node", "add", "cli-late", "--private-ip", "10.2.0.9")
    assert "role-forbidden" in refused
    admin.ok("account", "disable", "victor")
    people["viewer"].fails(4, "node", "list")
    last = one_line_error(admin.fails(1, "account", "delete", "admin", "--yes"))
    assert "refused (last-admin)" in last
    admin.fails(1, "account", "set-role", "admin", "viewer")
    admin.ok("account", "delete", "victor", "--yes")
    assert [a["username"] for a in admin.json("account", "list")] == ["admin", "olga"]


def test_cli_password_change_tokens_and_logout_everywhere(
    controller: Controller, tmp_path: Path
) -> None:
    admin = login_as(controller, tmp_path, "admin", ADMIN_PASSWORD)
    admin.ok("account", "add", "olga", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    olga = login_as(controller, tmp_path, "olga", PASSWORD)
    laptop = login_as(controller, tmp_path / "laptop", "olga", PASSWORD)
    created = olga.ok("token", "create", "ci", "--scope", "read", "--days", "7")
    secret = created.stdout.strip()
    assert secret.startswith("vct_")
    assert "shown only this once" in created.stderr
    with httpx.Client(base_url=controller.url, headers={"Authorization": f"Bearer {secret}"}) as t:
        assert t.get(f"{API}/nodes").status_code == 200
        listed = olga.json("token", "list")
        assert [(x["name"], x["scope"]) for x in listed] == [("ci", "read")]
        assert listed[0]["last_used_at"] is not None
        assert secret not in olga.ok("token", "list").stdout
        # own password: the current one, then the new one; other sessions and tokens end
        wrong = olga.fails(1, "account", "passwd", "--password-stdin", stdin="nope\nwhatever\n")
        assert "current_password" in wrong
        olga.ok("account", "passwd", "--password-stdin", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
        assert t.get(f"{API}/nodes").status_code == 401
    laptop.fails(4, "node", "list")
    olga.ok("node", "list")  # the login that changed it stays
    second = olga.ok("token", "create", "ci-2", "--scope", "write").stdout.strip()
    token_id = str(olga.json("token", "list")[0]["token_id"])
    admin.ok("token", "revoke", token_id)  # an admin revokes anyone's
    with httpx.Client(base_url=controller.url, headers={"Authorization": f"Bearer {second}"}) as t:
        assert t.get(f"{API}/nodes").status_code == 401
    again = login_as(controller, tmp_path / "again", "olga", NEW_PASSWORD)
    ended = olga.ok("logout", "--everywhere")
    assert "Ended 2 sessions" in ended.stderr
    again.fails(4, "node", "list")
    admin.ok("node", "list")  # another account: untouched


def test_offline_reset_on_a_stopped_controller_ends_the_old_sessions(tmp_path: Path) -> None:
    controller = Controller(data_dir=tmp_path / "controller").start()
    try:
        old_session = controller.admin()
        assert old_session.get(f"{API}/auth/me").status_code == 200
        assert "VOIPCLOUD_ADMIN_PASSWORD refused" not in controller.log()
    finally:
        controller.stop()
    host = Cli(config_dir=tmp_path / "root-config")
    env = {"VOIPCLOUD_DATA_DIR": str(controller.data_dir)}
    short = host.fails(
        2, "account", "reset-password", "admin", "--password-stdin", stdin="admin\n", env=env
    )
    assert "new password: must be at least 12" in one_line_error(short)
    missing = host.fails(
        1, "account", "reset-password", "nobody", "--password-stdin", stdin=NEW_PASSWORD, env=env
    )
    assert "No account nobody" in missing
    nowhere = host.fails(
        2,
        "account",
        "reset-password",
        "admin",
        "--password-stdin",
        stdin=NEW_PASSWORD,
        env={"VOIPCLOUD_DATA_DIR": str(tmp_path / "empty")},
    )
    assert "no controller database" in nowhere
    done = host.ok(
        "account", "reset-password", "admin", "--password-stdin", stdin=NEW_PASSWORD, env=env
    )
    assert "1 sessions and API tokens ended" in done.stderr
    # the controller starts again with the first start's VOIPCLOUD_ADMIN_PASSWORD still set:
    # refused, in the log and as an event; the recovered password is the one that works
    controller.start()
    try:
        assert old_session.get(f"{API}/auth/me").status_code == 401
        log = controller.log()
        assert "VOIPCLOUD_ADMIN_PASSWORD refused" in log
        assert "voipcloud account reset-password" in log
        stale = httpx.post(
            f"{controller.url}{API}/auth/token",
            json={"username": "admin", "password": ADMIN_PASSWORD},
        )
        assert stale.status_code == 401
        admin = httpx.Client(base_url=controller.url, timeout=30)
        token = admin.post(
            f"{API}/auth/token", json={"username": "admin", "password": NEW_PASSWORD}
        ).json()["access_token"]
        admin.headers["Authorization"] = f"Bearer {token}"
        found = {
            (e["operation"], e["actor"]): e["reason"]
            for e in admin.get(f"{API}/events", params={"limit": 100}).json()["items"]
        }
        assert "offline on the controller host" in found[("password-reset", "host")]
        assert "not the password of 'admin'" in found[("admin-password-refused", "controller")]
    finally:
        controller.stop()
