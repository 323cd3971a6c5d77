"""`voipcloud account ...` and `voipcloud token ...`: accounts, passwords and API tokens.

Every command but `account reset-password` talks to the controller's API with the stored
login. `account reset-password NAME --password-stdin` is the offline recovery: it runs on the
controller host against the data dir / database (same --data-dir, --database-url and
VOIPCLOUD_* variables as `voipcloud serve`), with or without the server running.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from voipcloud.cli.client import CliError, UsageProblem, client_from_context
from voipcloud.cli.output import (
    OutputFormat,
    OutputOption,
    note,
    print_json,
    print_table,
    wants_json,
)
from voipcloud.cli.prompts import confirm, read_secret

app = typer.Typer(no_args_is_help=True, help="Accounts and passwords (admin: every account).")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens for automation.")

ROLES = ("admin", "operator", "viewer")
NEW_PASSWORD_ENV = "VOIPCLOUD_NEW_PASSWORD"  # noqa: S105 - the variable's name

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


def _role(value: str) -> str:
    if value not in ROLES:
        raise UsageProblem(f"the role must be one of {', '.join(ROLES)}, not {value!r}")
    return value


def _accounts_table(items: list[dict[str, Any]]) -> None:
    print_table(
        ["Username", "Role", "Enabled", "Created"],
        (
            [a["username"], a["role"], "no" if a["disabled"] else "yes", a["created_at"][:19]]
            for a in items
        ),
        title="Accounts",
    )


@app.command("list")
def list_accounts(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the accounts and their roles (admin only)."""
    items = client_from_context(ctx).get("/accounts")
    if wants_json(output):
        print_json(items)
    else:
        _accounts_table(items)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new account's username.")],
    role: Annotated[str, typer.Option(help="admin, operator or viewer.")] = "viewer",
    password_stdin: PasswordStdin = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add an account (admin only). The password: --password-stdin, VOIPCLOUD_NEW_PASSWORD,
    or asked twice on the terminal; at least 12 characters, not the username, not common."""
    _role(role)
    password = read_secret(
        "New password", from_stdin=password_stdin, env=NEW_PASSWORD_ENV, twice=True
    )
    added = client_from_context(ctx).post(
        "/accounts", json={"username": name, "role": role, "password": password}
    )
    if wants_json(output):
        print_json(added)
    else:
        note(f"Account {added['username']} added with role {added['role']}.")


@app.command("set-role")
def set_role(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account.")],
    role: Annotated[str, typer.Argument(help="admin, operator or viewer.")],
) -> None:
    """Change an account's role (admin only; the last enabled admin stays admin)."""
    changed = client_from_context(ctx).patch(f"/accounts/{name}", json={"role": _role(role)})
    note(f"Account {changed['username']} is now {changed['role']}.")


@app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The account.")]) -> None:
    """Disable an account: it cannot sign in, its sessions and tokens end (admin only)."""
    client_from_context(ctx).patch(f"/accounts/{name}", json={"disabled": True})
    note(f"Account {name} is disabled; its sessions and API tokens have ended.")


@app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The account.")]) -> None:
    """Enable a disabled account again (admin only)."""
    client_from_context(ctx).patch(f"/accounts/{name}", json={"disabled": False})
    note(f"Account {name} is enabled.")


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account with its sessions and API tokens (admin only)."""
    if not yes:
        confirm(f"Delete the account {name}?")
    client_from_context(ctx).delete(f"/accounts/{name}")
    note(f"Account {name} deleted.")


@app.command("set-password")
def set_password(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Reset another account's password (admin only); its sessions and tokens end."""
    password = read_secret(
        "New password", from_stdin=password_stdin, env=NEW_PASSWORD_ENV, twice=True
    )
    done = client_from_context(ctx).post(
        f"/accounts/{name}/password", json={"new_password": password}
    )
    note(f"Password of {name} reset; {done['ended']} sessions and API tokens ended.")


@app.command("passwd")
def passwd(ctx: typer.Context, password_stdin: PasswordStdin = False) -> None:
    """Change your own password. With --password-stdin: the current password on the first
    line, the new one on the second. Your other sessions and tokens end."""
    current = read_secret("Current password", from_stdin=password_stdin)
    new = read_secret("New password", from_stdin=password_stdin, twice=True)
    done = client_from_context(ctx).post(
        "/auth/password", json={"current_password": current, "new_password": new}
    )
    note(f"Password changed; {done['ended']} other sessions and API tokens ended.")


@app.command("whoami")
def whoami(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """The account of the stored login, its role and what it may do."""
    me = client_from_context(ctx).get("/auth/me")
    if wants_json(output):
        print_json(me)
    else:
        note(f"{me['username']} ({me['role']}): {', '.join(me['permissions'])}")


@app.command("reset-password")
def reset_password(
    name: Annotated[str, typer.Argument(help="The account.")],
    password_stdin: PasswordStdin = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The controller's data directory (env VOIPCLOUD_DATA_DIR)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The controller's SQLAlchemy URL (env VOIPCLOUD_DATABASE_URL)."),
    ] = None,
) -> None:
    """Offline recovery on the controller host: set an account's password directly in the
    controller's database (no server, no login needed); every session and token of the
    account ends. The policy applies."""
    password = read_secret(
        "New password", from_stdin=password_stdin, env=NEW_PASSWORD_ENV, twice=True
    )
    ended = _reset_offline(name, password, data_dir=data_dir, database_url=database_url)
    note(f"Password of {name} reset on this host; {ended} sessions and API tokens ended.")


def _reset_offline(
    name: str, password: str, *, data_dir: Path | None, database_url: str | None
) -> int:
    from cryptography.fernet import Fernet

    from voipcloud.api.routes.health import database_revision, schema_head
    from voipcloud.config import Settings
    from voipcloud.domain.errors import DatabaseUnavailable, InvalidInput, NotFound
    from voipcloud.services.accounts import RECOVERY_ACTOR, AccountService
    from voipcloud.services.auth import LoginLimiter
    from voipcloud.services.context import Context
    from voipcloud.services.secrets_box import SecretBox
    from voipcloud.store.database import Database

    overrides = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v}
    settings = Settings.model_validate(overrides)
    url = settings.resolved_database_url()
    if settings.database_url is None:
        path = settings.data_dir.resolve() / "voipcloud.sqlite3"
        if not path.is_file():
            raise UsageProblem(f"no controller database at {path}: give --data-dir")
    db = Database(url)
    try:
        try:
            revision = database_revision(db)
        except DatabaseUnavailable as exc:
            raise CliError(f"the database is unavailable: {exc.reason}") from None
        if revision != schema_head():
            raise CliError(
                f"the database schema is at revision {revision or 'none'}, this voipcloud "
                f"needs {schema_head()}: start `voipcloud serve` once (it upgrades the schema)"
            )
        # the service never touches sealed values: a throwaway key stands in for the box
        ctx = Context(db=db, box=SecretBox(Fernet.generate_key()))
        service = AccountService(ctx, LoginLimiter())
        try:
            change = service.reset_password(
                actor=RECOVERY_ACTOR, username=name, new_password=password
            )
        except InvalidInput as exc:
            raise UsageProblem(
                "new password: " + "; ".join(e.message for e in exc.errors)
            ) from None
        except NotFound as exc:
            raise CliError(f"not found: {exc.message}") from None
        return change.ended
    finally:
        db.dispose()


# --- API tokens ---------------------------------------------------------------------------


@tokens_app.command("list")
def list_tokens(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """Your API tokens (admin: everyone's) with their last use; never the tokens."""
    items = client_from_context(ctx).get("/tokens")["items"]
    if wants_json(output):
        print_json(items)
        return
    print_table(
        ["ID", "Account", "Name", "Scope", "Expires", "Last used"],
        (
            [
                str(t["token_id"]),
                t["username"],
                t["name"],
                t["scope"],
                ("expired " if t["expired"] else "") + t["expires_at"][:19],
                (t["last_used_at"] or "never")[:19],
            ]
            for t in items
        ),
        title="API tokens",
    )


@tokens_app.command("create")
def create_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    scope: Annotated[str, typer.Option(help="read or write.")] = "read",
    days: Annotated[int, typer.Option(min=1, max=366, help="Days until it expires.")] = 90,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create an API token of your account; it is printed this once (stdout)."""
    if scope not in ("read", "write"):
        raise UsageProblem(f"--scope must be read or write, not {scope!r}")
    expires = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    created = client_from_context(ctx).post(
        "/tokens", json={"name": name, "scope": scope, "expires_at": expires}
    )
    if wants_json(output):
        print_json(created)
        return
    typer.echo(created["token"])
    note(
        f"API token {created['token_id']} ({created['scope']}) expires "
        f"{created['expires_at'][:19]} UTC. It is shown only this once."
    )


@tokens_app.command("revoke")
def revoke_token(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="The token's ID.")]
) -> None:
    """Revoke one API token (yours; admin: anyone's); refused from its next request."""
    client_from_context(ctx).delete(f"/tokens/{token_id}")
    note(f"API token {token_id} revoked.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="account")
    root.add_typer(tokens_app, name="token")
