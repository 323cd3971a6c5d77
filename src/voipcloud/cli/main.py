"""The `voipcloud` command: the controller, the agent and the operator commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="voipcloud: a control plane for VoIP clouds.",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from voipcloud import __version__

        typer.echo(f"voipcloud {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """voipcloud: a control plane for VoIP clouds."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (env VOIPCLOUD_DATA_DIR).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (env VOIPCLOUD_DATABASE_URL).")
    ] = None,
) -> None:
    """Run the controller: web interface, REST API and the IC node's agent."""
    import uvicorn

    from voipcloud.api.app import create_app
    from voipcloud.config import Settings

    overrides = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "database_url": database_url,
        }.items()
        if value is not None
    }
    settings = Settings.model_validate(overrides)
    application = create_app(settings)
    typer.echo(f"voipcloud: serving on http://{settings.host}:{settings.port}", err=True)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        proxy_headers=False,
    )


def main() -> None:
    app()
