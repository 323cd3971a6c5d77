"""The `voipcloud` command: the controller, the agent and the operator commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from voipcloud.cli.client import CliError

DEBUG_ENV = "VOIPCLOUD_DEBUG"


class VoipcloudApp(typer.Typer):
    """The root app: a CliError from any command of any group is one line on stderr and its
    exit code (see `voipcloud.cli.client`), never a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        clicks = _click_exceptions()
        # not standalone: Click's usage errors come back here, to be reported in one line too
        kwargs.setdefault("standalone_mode", False)
        try:
            result = super().__call__(*args, **kwargs)
        except CliError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except clicks.NoArgsIsHelpError as exc:
            help_text = exc.format_message()  # Typer's Rich help is printed already
            if help_text.strip():
                typer.echo(help_text, err=True)
            sys.exit(exc.exit_code)
        except clicks.ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            # Typer words a refused choice "Value error, 'x' is not one of ...": drop the prefix
            message = " ".join(exc.format_message().replace("Value error, ", "").split())
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted; nothing changed", err=True)
            sys.exit(1)
        except OSError as exc:  # e.g. a config dir that cannot be written
            where = f": {exc.filename}" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)
        except Exception as exc:
            # a bug of ours, still one line (VOIPCLOUD_DEBUG=1 shows the traceback)
            if os.environ.get(DEBUG_ENV):
                raise
            message = " ".join(str(exc).split())[:500]
            typer.echo(
                f"error: unexpected {type(exc).__name__}: {message} "
                f"(a bug in voipcloud; {DEBUG_ENV}=1 shows the traceback)",
                err=True,
            )
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _click_exceptions() -> Any:
    """Click's exception classes: Typer (pinned) vendors its own copy of Click."""
    try:
        from typer._click import exceptions
    except ImportError:  # a Typer that uses Click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


app = VoipcloudApp(
    no_args_is_help=True,
    help="voipcloud: a control plane for VoIP clouds.",
    pretty_exceptions_enable=False,
)


def _register_groups() -> None:
    from voipcloud.cli import (
        accounts,
        agent_commands,
        backup,
        events,
        extensions,
        fleet,
        infra,
        node_import,
        nodes,
        roles,
        rollouts,
        session,
        storage,
        webhooks,
    )
    from voipcloud.cli import tls as tls_commands

    session.register(app)
    accounts.register(app)
    backup.register(app)
    events.register(app)
    fleet.register(nodes.app)  # node maintenance, node bulk
    node_import.register(nodes.app)  # node import
    app.add_typer(nodes.app, name="node")
    app.add_typer(roles.app, name="role")
    app.add_typer(rollouts.app, name="rollout")
    app.add_typer(extensions.app, name="extension")
    app.add_typer(infra.app, name="infra")
    app.add_typer(storage.app, name="storage")
    app.add_typer(tls_commands.app, name="tls")
    app.add_typer(agent_commands.app, name="agent")
    app.add_typer(webhooks.app, name="webhook")


def _version(value: bool) -> None:
    if value:
        from voipcloud import __version__

        typer.echo(f"voipcloud {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            envvar="VOIPCLOUD_PROFILE",
            help="Which stored login the operator commands use (default: default).",
        ),
    ] = None,
) -> None:
    """voipcloud: a control plane for VoIP clouds."""
    ctx.obj = {"profile": profile}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Serving processes sharing the address (SO_REUSEPORT); above 1 needs "
            "PostgreSQL (env VOIPCLOUD_WORKERS, default 1).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (env VOIPCLOUD_DATA_DIR).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (env VOIPCLOUD_DATABASE_URL).")
    ] = None,
    no_ic_agent: Annotated[
        bool, typer.Option("--no-ic-agent", help="Do not run the IC node's agent.")
    ] = False,
    tls: Annotated[
        str | None,
        typer.Option(
            "--tls",
            help="auto (default: HTTPS beyond loopback, own CA), on, or off (plain HTTP; "
            "env VOIPCLOUD_TLS).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Certificate chain (PEM) to serve HTTPS with (env VOIPCLOUD_TLS_CERT)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Its private key (PEM; env VOIPCLOUD_TLS_KEY).")
    ] = None,
) -> None:
    """Run the controller: web interface, REST API and the IC node's agent."""
    from voipcloud.cli import serve as serving
    from voipcloud.cli.client import UsageProblem
    from voipcloud.config import Settings

    if tls is not None and tls.strip().lower() not in ("auto", "on", "off"):
        raise UsageProblem(f"--tls must be auto, on or off, not {tls!r}")
    overrides = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "workers": workers,
            "data_dir": data_dir,
            "database_url": database_url,
            "tls": tls,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        }.items()
        if value is not None
    }
    settings = Settings.model_validate(overrides)
    serving.run(settings, with_ic_agent=not no_ic_agent)


_register_groups()


def main() -> None:
    app()
