"""`voipcloud storage`: where faxes, recorded calls and voicemail are kept."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Storage Configuration and stored resources.")
