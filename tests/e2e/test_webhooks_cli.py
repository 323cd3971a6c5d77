"""`voipcloud webhook ...`: the real executable against a real `voipcloud serve`.

The receiver (tests/support/receiver.py) is a real HTTP server on 127.0.0.1 that checks each
delivery's signature: a delivery it accepts proves the secret given on stdin is the one the
controller signs with. The secret is never a command-line value (shell history, `ps`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_support import Cli, one_line_error
from tests.support.processes import Controller, wait_for
from tests.support.receiver import Receiver
from voipcloud.domain.webhook_events import EVENT_NAMES

pytestmark = pytest.mark.e2e

SECRET = "cli-webhook-secret-0123456789"
NEW_SECRET = "cli-webhook-rotated-9876543210"
VIEWER_PASSWORD = "a-long-enough-passphrase"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    started = Controller(data_dir=tmp_path_factory.mktemp("webhook-cli")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def admin(shared: Controller, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    logged_in = Cli(config_dir=tmp_path_factory.mktemp("webhook-cli-config"))
    logged_in.login(shared)
    return logged_in


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # signs with NEW_SECRET: a delivery signed with another secret is answered 401
    started = Receiver(secret=NEW_SECRET).start()
    yield started
    started.stop()


def hooks(cli: Cli) -> list[dict[str, Any]]:
    page = cli.json("webhook", "list")
    assert page["total"] == len(page["items"])
    items: list[dict[str, Any]] = page["items"]
    return items


def finished(cli: Cli, hook_id: int, delivery_id: int) -> dict[str, Any]:
    """The delivery once the controller's worker has tried it."""

    def probe() -> dict[str, Any] | None:
        page = cli.json("webhook", "deliveries", str(hook_id))
        found = next(d for d in page["items"] if d["id"] == delivery_id)
        return found if found["state"] != "pending" else None

    return wait_for(probe, timeout=15, interval=0.1, what=f"delivery {delivery_id}")


def test_help_names_the_events_and_has_no_secret_value_option() -> None:
    cli = Cli(config_dir=Path("/nonexistent-never-written"))
    for command in ("add", "update"):
        helped = cli.ok("webhook", command, "--help").stdout
        for name in EVENT_NAMES:
            assert name in helped
        assert "--secret-stdin" in helped
        assert "--secret " not in helped


def test_add_list_show_update_test_deliveries_delete(admin: Cli, receiver: Receiver) -> None:
    assert hooks(admin) == []
    added = admin.ok(
        "webhook",
        "add",
        "--url",
        receiver.url,
        "--event",
        "rollout.finished",
        "--event",
        "node.status_changed",
        "--description",
        "ops pager",
        "--secret-stdin",
        stdin=SECRET + "\n",
    )
    hook_id = int(added.stdout.strip())  # the new id, alone on stdout
    assert f"Webhook {hook_id} added" in added.stderr
    assert SECRET not in added.stdout + added.stderr

    # list: the table and the API's JSON (in the service's order, never the secret)
    table = admin.ok("webhook", "list").stdout
    for text in (receiver.url, "node.status_changed, rollout.finished", "yes", "0/0/0"):
        assert text in table, table
    listed = admin.ok("webhook", "list", "--output", "json").stdout
    assert SECRET not in listed
    [hook] = json.loads(listed)["items"]
    assert hook["id"] == hook_id
    assert hook["events"] == ["node.status_changed", "rollout.finished"]
    assert (hook["enabled"], hook["description"], hook["secret_set"]) == (True, "ops pager", True)
    assert hook["last_delivery"] is None

    shown = admin.ok("webhook", "show", str(hook_id)).stdout
    for text in (f"Webhook {hook_id}", receiver.url, "ops pager", "set (write-only)"):
        assert text in shown, shown
    assert admin.json("webhook", "show", str(hook_id))["url"] == receiver.url

    # update: url and events (replacing the set), then disable; only what was given changes
    new_url = receiver.url + "/v2"
    updated = admin.json(
        "webhook",
        "update",
        str(hook_id),
        "--url",
        new_url,
        "--event",
        "node.agent_lost",
        "-e",
        "node.agent_back",
    )
    assert updated["url"] == new_url
    assert updated["events"] == ["node.agent_lost", "node.agent_back"]
    assert (updated["enabled"], updated["description"]) == (True, "ops pager")
    disabled = admin.ok("webhook", "update", str(hook_id), "--disable")
    assert (
        f"Webhook {hook_id} updated: {new_url} (node.agent_lost, node.agent_back; disabled)."
        in disabled.stderr
    )

    # disabled: it sends nothing, so a test is refused (409, the rule named), nothing queued
    refused = admin.fails(1, "webhook", "test", str(hook_id))
    assert "webhook-disabled" in refused
    assert "enable it to send a test" in refused
    assert admin.json("webhook", "deliveries", str(hook_id))["total"] == 0
    enabled = admin.json("webhook", "update", str(hook_id), "--enable")
    assert (enabled["enabled"], enabled["url"], enabled["events"], enabled["description"]) == (
        True,
        new_url,
        ["node.agent_lost", "node.agent_back"],
        "ops pager",
    )

    # the secret it was added with is not the receiver's: the test delivery is refused (401)
    sent = admin.ok("webhook", "test", str(hook_id))
    first = int(sent.stdout.strip())
    assert f"Test delivery {first} of webhook {hook_id}: pending" in sent.stderr
    failed = finished(admin, hook_id, first)
    assert (failed["event"], failed["state"], failed["last_status"]) == (
        "webhook.test",
        "failed",
        401,
    )

    # rotate it from stdin; the next test delivery is signed with the new one and accepted
    rotated = admin.ok("webhook", "update", str(hook_id), "--secret-stdin", stdin=NEW_SECRET + "\n")
    assert "the new secret signs from the next attempt on" in rotated.stderr
    assert NEW_SECRET not in rotated.stdout + rotated.stderr
    second = admin.json("webhook", "test", str(hook_id))
    assert (second["event"], second["webhook_id"]) == ("webhook.test", hook_id)
    delivered = finished(admin, hook_id, second["id"])
    assert (delivered["state"], delivered["attempts"], delivered["last_status"]) == (
        "delivered",
        1,
        200,
    )
    assert [r.signature_ok for r in receiver.got] == [False, True]
    assert receiver.accepted()[0]["data"]["webhook_id"] == hook_id

    log = admin.ok("webhook", "deliveries", str(hook_id)).stdout
    for text in ("webhook.test", "delivered", "failed", "401", "200", "2 shown of 2"):
        assert text in log, log
    older = admin.json("webhook", "deliveries", str(hook_id), "--limit", "1", "--offset", "1")
    assert ([d["id"] for d in older["items"]], older["total"]) == ([first], 2)
    shown = admin.ok("webhook", "show", str(hook_id)).stdout
    assert "1 delivered, 1 failed, 0 pending" in shown
    assert f"#{second['id']} webhook.test, 200" in shown

    # delete: no terminal to ask, so --yes is needed (as for `node delete`)
    refused = one_line_error(admin.fails(2, "webhook", "delete", str(hook_id)))
    assert "--yes" in refused
    assert [h["id"] for h in hooks(admin)] == [hook_id]
    deleted = admin.ok("webhook", "delete", str(hook_id), "--yes")
    assert f"Webhook {hook_id} deleted" in deleted.stderr
    assert hooks(admin) == []


def test_the_secret_from_the_environment(admin: Cli, receiver: Receiver) -> None:
    added = admin.json(
        "webhook",
        "add",
        "--url",
        receiver.url,
        "--event",
        "rollout.stopped",
        "--disabled",
        env={"VOIPCLOUD_WEBHOOK_SECRET": NEW_SECRET},
    )
    assert (added["enabled"], added["events"]) == (False, ["rollout.stopped"])
    admin.ok("webhook", "update", str(added["id"]), "--enable")
    sent = admin.json("webhook", "test", str(added["id"]))
    assert finished(admin, added["id"], sent["id"])["state"] == "delivered"
    assert [r.signature_ok for r in receiver.got] == [True]
    admin.ok("webhook", "delete", str(added["id"]), "-y")


def test_refusals_are_one_line_and_change_nothing(admin: Cli) -> None:
    before = hooks(admin)
    base = ("webhook", "add", "--url", "https://hooks.example.com/in", "--secret-stdin")

    # the API's 422, naming the field; nothing created
    bad_url = one_line_error(
        admin.fails(
            1,
            "webhook",
            "add",
            "--url",
            "http://hooks.example.com*",
            "--event",
            "node.status_changed",
            "--secret-stdin",
            stdin=SECRET + "\n",
        )
    )
    assert bad_url.startswith("error: invalid input: url: ")
    unknown_event = one_line_error(
        admin.fails(1, *base, "--event", "node.exploded", stdin=SECRET + "\n")
    )
    assert "events" in unknown_event
    assert "node.status_changed" in unknown_event  # the valid ones are named
    short = admin.fails(1, *base, "--event", "node.agent_lost", stdin="too-short\n")
    assert "secret" in one_line_error(short)
    assert "too-short" not in short  # never echoed

    # refused by the CLI itself (exit 2): no --event, no secret, an empty one
    assert "--event" in one_line_error(admin.fails(2, *base, stdin=SECRET + "\n"))
    no_terminal = one_line_error(
        admin.fails(
            2, "webhook", "add", "--url", "https://h.example.com", "--event", "rollout.finished"
        )
    )
    assert "no terminal to ask the webhook secret" in no_terminal
    assert "--secret-stdin" in no_terminal
    assert "VOIPCLOUD_WEBHOOK_SECRET" in no_terminal
    empty = one_line_error(admin.fails(2, *base, "--event", "rollout.finished", stdin="\n"))
    assert "empty" in empty

    # there is no --secret VALUE: the secret never goes into argv
    argv_secret = admin.fails(
        2,
        "webhook",
        "add",
        "--url",
        "https://hooks.example.com/in",
        "--event",
        "rollout.finished",
        "--secret",
        SECRET,
    )
    assert "No such option: --secret" in one_line_error(argv_secret)
    assert SECRET not in argv_secret
    assert "No such option: --secret" in one_line_error(
        admin.fails(2, "webhook", "update", "1", "--secret", SECRET)
    )

    # update with nothing to change
    nothing = one_line_error(admin.fails(2, "webhook", "update", "1"))
    assert "nothing to change" in nothing

    # an unknown id: 404 as one line, whatever the command
    for command in (
        ("show", "999999"),
        ("update", "999999", "--disable"),
        ("test", "999999"),
        ("deliveries", "999999"),
        ("delete", "999999", "--yes"),
    ):
        missing = one_line_error(admin.fails(1, "webhook", *command))
        assert missing == "error: not found: Webhook 999999 does not exist.", command
    assert "greater than or equal to 1" in one_line_error(admin.fails(2, "webhook", "show", "0"))
    assert hooks(admin) == before


def test_a_viewer_reads_but_cannot_change(
    shared: Controller, admin: Cli, tmp_path: Path, receiver: Receiver
) -> None:
    admin.ok(
        "account", "add", "vera", "--role", "viewer", "--password-stdin", stdin=VIEWER_PASSWORD
    )
    viewer = Cli(config_dir=tmp_path / "viewer")
    viewer.ok(
        "login",
        "--controller",
        shared.url,
        "--username",
        "vera",
        "--password-stdin",
        stdin=VIEWER_PASSWORD + "\n",
    )
    hook_id = admin.json(
        "webhook",
        "add",
        "--url",
        receiver.url,
        "--event",
        "node.health_changed",
        "--secret-stdin",
        stdin=NEW_SECRET + "\n",
    )["id"]
    try:
        assert [h["id"] for h in hooks(viewer)] == [hook_id]
        assert viewer.json("webhook", "show", str(hook_id))["id"] == hook_id
        for command in (
            ("add", "--url", receiver.url, "--event", "rollout.finished", "--secret-stdin"),
            ("update", str(hook_id), "--disable"),
            ("test", str(hook_id)),
            ("delete", str(hook_id), "--yes"),
        ):
            refused = one_line_error(viewer.fails(1, "webhook", *command, stdin=NEW_SECRET + "\n"))
            assert refused.startswith("error: refused (role-forbidden): "), (command, refused)
        assert [(h["id"], h["enabled"]) for h in hooks(admin)] == [(hook_id, True)]
        assert admin.json("webhook", "deliveries", str(hook_id))["total"] == 0  # no test sent
    finally:
        admin.ok("webhook", "delete", str(hook_id), "--yes")
