"""`voipcloud infra`: Infrastructure Properties and the Configuration Wizard."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="Infrastructure Properties and the Configuration Wizard."
)
