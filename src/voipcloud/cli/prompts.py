"""Confirmations for destructive commands (asked on a terminal, `--yes` in scripts), and
secrets read from stdin, an environment variable or the terminal, never from the arguments."""

from __future__ import annotations

import os
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


def read_secret(
    what: str,
    *,
    from_stdin: bool,
    env: str | None = None,
    twice: bool = False,
    stdin_option: str = "--password-stdin",
) -> str:
    """A password or secret from stdin (one line), an environment variable, or the terminal
    (not echoed; asked twice with `twice`); UsageProblem without any of them, or when empty."""
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif env and os.environ.get(env):
        value = os.environ[env]
    elif sys.stdin.isatty():
        value = typer.prompt(what, hide_input=True, confirmation_prompt=twice)
    else:
        hint = f" or set {env}" if env else ""
        raise UsageProblem(f"no terminal to ask the {what.lower()}: use {stdin_option}{hint}")
    if not value:
        raise UsageProblem(f"the {what.lower()} is empty")
    return value
