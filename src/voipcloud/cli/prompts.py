"""Confirmations for destructive commands: asked on a terminal, `--yes` in scripts."""

from __future__ import annotations

import sys

import typer

from voipcloud.cli.client import Cancelled, UsageProblem


def confirm(question: str) -> None:
    """Return when the operator says yes; Cancelled (exit 1) when not.

    Without a terminal there is nobody to ask: a script must say --yes explicitly (exit 2).
    """
    if not sys.stdin.isatty():
        raise UsageProblem(f"{question} There is no terminal to ask: add --yes to confirm.")
    if not typer.confirm(question, default=False, err=True):
        raise Cancelled("cancelled; nothing changed")
