"""`voipcloud webhook ...`: signed notifications of chosen events, and their delivery log.

    echo "$SECRET" | voipcloud webhook add --url https://hooks.example.com/voipcloud \\
        --event node.status_changed --event rollout.finished --secret-stdin
    voipcloud webhook list
    voipcloud webhook show 1
    voipcloud webhook update 1 --event node.agent_lost --event node.agent_back --disable
    voipcloud webhook test 1
    voipcloud webhook deliveries 1
    voipcloud webhook delete 1

Every account may read them; changing them is for administrators (the API says who may).
The secret is write-only and never a command-line value (it would be kept in the shell's
history and shown by `ps`): `add` reads it from the first line of stdin (`--secret-stdin`),
from VOIPCLOUD_WEBHOOK_SECRET, or asks on the terminal; `update` rotates it only from stdin.
docs/operations.md, "Webhooks".
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from voipcloud.cli.client import UsageProblem, client_from_context
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_record,
    print_table,
    wants_json,
    when,
)
from voipcloud.cli.prompts import confirm, read_secret
from voipcloud.domain.webhook_events import EVENT_NAMES  # pure data: --help stays light

app = typer.Typer(
    no_args_is_help=True, help="Webhooks: signed notifications of events, and their delivery log."
)

SECRET_ENV = "VOIPCLOUD_WEBHOOK_SECRET"  # noqa: S105 - the variable's name


def _complete_event(incomplete: str) -> list[str]:
    return [name for name in EVENT_NAMES if name.startswith(incomplete)]


WebhookId = Annotated[int, typer.Argument(min=1, max=2**31 - 1, help="The webhook's id.")]
SecretStdin = Annotated[
    bool,
    typer.Option("--secret-stdin", help="Read the secret from the first line of stdin."),
]


def _events_option(what: str) -> Any:
    return typer.Option(
        "--event",
        "-e",
        help=f"{what} (repeat the option for more): {', '.join(EVENT_NAMES)}.",
        show_default=False,
        autocompletion=_complete_event,
    )


def _ask_secret(*, from_stdin: bool) -> str:
    """The new secret: stdin (--secret-stdin), VOIPCLOUD_WEBHOOK_SECRET, or the terminal
    (asked twice, not echoed)."""
    return read_secret(
        "Webhook secret",
        from_stdin=from_stdin,
        env=SECRET_ENV,
        twice=True,
        stdin_option="--secret-stdin",
    )


def _counts(hook: dict[str, Any]) -> str:
    d = hook["deliveries"]
    return f"{d.get('delivered', 0)}/{d.get('failed', 0)}/{d.get('pending', 0)}"


def _last_delivery(hook: dict[str, Any]) -> str | None:
    last = hook["last_delivery"]
    if last is None:
        return None
    # what the receiver answered last: its status, else the error (no answer at all)
    answer = last["last_status"] if last["last_status"] is not None else last["last_error"]
    detail = f"#{last['delivery_id']} {last['event']}" + (f", {answer}" if answer else "")
    return f"{last['state']} {when(last['at'])} ({detail})"


def _summary(hook: dict[str, Any]) -> str:
    state = "enabled" if hook["enabled"] else "disabled"
    return f"{hook['url']} ({', '.join(hook['events'])}; {state})"


@app.command("list")
def list_webhooks(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """Every webhook with its delivery counts and last delivery (never the secrets)."""
    page = client_from_context(ctx).get("/webhooks")
    if wants_json(output):
        print_json(page)
        return
    print_table(
        ["ID", "URL", "Events", "Enabled", "Delivered/Failed/Pending", "Last delivery"],
        (
            [h["id"], h["url"], h["events"], h["enabled"], _counts(h), _last_delivery(h)]
            for h in page["items"]
        ),
        title="Webhooks",
        caption=f"{page['total']} webhook(s)",
    )


@app.command("show")
def show(ctx: typer.Context, webhook: WebhookId, output: OutputOption = OutputFormat.TABLE) -> None:
    """One webhook: its address, events, delivery counts and last delivery."""
    hook = client_from_context(ctx).get(f"/webhooks/{webhook}")
    if wants_json(output):
        print_json(hook)
        return
    d = hook["deliveries"]
    print_record(
        f"Webhook {hook['id']}",
        {
            "URL": hook["url"],
            "Description": hook["description"],
            "Events": hook["events"],
            "Enabled": hook["enabled"],
            "Secret": "set (write-only)" if hook.get("secret_set", True) else "not set",
            "Deliveries": f"{d.get('delivered', 0)} delivered, {d.get('failed', 0)} failed, "
            f"{d.get('pending', 0)} pending",
            "Last delivery": _last_delivery(hook),
            "Created": when(hook["created_at"]),
            "Updated": when(hook["updated_at"]),
        },
    )


@app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(help="The receiver's http:// or https:// address.", show_default=False)
    ],
    events: Annotated[list[str], _events_option("An event to send")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Add it disabled: it queues nothing yet.")
    ] = False,
    secret_stdin: SecretStdin = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a webhook (admin only); it gets the chosen events that happen from now on.

    The secret (16-256 characters, signs every delivery, never shown again): --secret-stdin,
    VOIPCLOUD_WEBHOOK_SECRET, or asked twice on the terminal. Prints the new id."""
    client = client_from_context(ctx)  # no stored login: said before the secret is asked
    secret = _ask_secret(from_stdin=secret_stdin)
    body: dict[str, Any] = {
        "url": url,
        "secret": secret,
        "events": events,
        "description": description,
        "enabled": not disabled,
    }
    created = client.post("/webhooks", json=body)
    if wants_json(output):
        print_json(created)
        return
    hint = (
        f"Send a test: `voipcloud webhook test {created['id']}`."
        if created["enabled"]
        else f"Enable it to send: `voipcloud webhook update {created['id']} --enable`."
    )
    note(f"Webhook {created['id']} added: {_summary(created)}. {hint}")
    typer.echo(created["id"])


@app.command("update")
def update(
    ctx: typer.Context,
    webhook: WebhookId,
    url: Annotated[str | None, typer.Option(help="A new receiver address.")] = None,
    events: Annotated[
        list[str] | None, _events_option("The events it gets, replacing the ones it had")
    ] = None,
    description: Annotated[str | None, typer.Option(help='A new description ("" clears).')] = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Enable it (from now on), or disable it."),
    ] = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin",
            help="Rotate the secret: the new one from the first line of stdin (signs from the "
            "next attempt on).",
        ),
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a webhook (admin only): only what is given changes."""
    changes: dict[str, Any] = {
        name: value
        for name, value in {
            "url": url,
            "events": events or None,
            "description": description,
            "enabled": enabled,
        }.items()
        if value is not None
    }
    if not changes and not secret_stdin:
        raise UsageProblem(
            "nothing to change: give --url, --event, --description, --enable/--disable or "
            "--secret-stdin"
        )
    client = client_from_context(ctx)
    if secret_stdin:
        changes["secret"] = read_secret("Webhook secret", from_stdin=True)
    updated = client.patch(f"/webhooks/{webhook}", json=changes)
    if wants_json(output):
        print_json(updated)
        return
    rotated = "; the new secret signs from the next attempt on" if "secret" in changes else ""
    note(f"Webhook {updated['id']} updated: {_summary(updated)}{rotated}.")


@app.command("delete")
def delete(
    ctx: typer.Context,
    webhook: WebhookId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a webhook with its delivery log (admin only); pending deliveries are dropped."""
    client = client_from_context(ctx)
    current = client.get(f"/webhooks/{webhook}")
    if not yes:
        confirm(f"Delete webhook {current['id']} ({current['url']}) with its delivery log?")
    client.delete(f"/webhooks/{webhook}")
    note(f"Webhook {current['id']} deleted.")


@app.command("test")
def send_test(
    ctx: typer.Context, webhook: WebhookId, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Send a test delivery (event webhook.test, tried once; admin only).

    The controller sends it at once; its outcome is in `voipcloud webhook deliveries ID`.
    Prints the delivery's id. A disabled webhook sends nothing: refused (webhook-disabled)."""
    delivery = client_from_context(ctx).post(f"/webhooks/{webhook}/test")
    if wants_json(output):
        print_json(delivery)
        return
    note(
        f"Test delivery {delivery['id']} of webhook {webhook}: {delivery['state']}. "
        f"Follow it with `voipcloud webhook deliveries {webhook}`."
    )
    typer.echo(delivery["id"])


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook: WebhookId,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The webhook's delivery log, newest first: state, attempts and the last answer."""
    page = client_from_context(ctx).get(
        f"/webhooks/{webhook}/deliveries", params={"limit": limit, "offset": offset}
    )
    if wants_json(output):
        print_json(page)
        return
    print_table(
        ["ID", "Event", "State", "Attempts", "Last status", "Last error", "Created"],
        (
            [
                d["id"],
                d["event"],
                d["state"],
                d["attempts"],
                d["last_status"],
                d["last_error"],
                when(d["created_at"]),
            ]
            for d in page["items"]
        ),
        title=f"Deliveries of webhook {webhook}",
        caption=f"{len(page['items'])} shown of {page['total']} deliveries",
    )
