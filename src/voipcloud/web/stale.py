"""Web forms and optimistic concurrency: a form carries the version it was read at (a hidden
`version` field, the resource's ETag); a submit whose resource changed since is refused with
the current values in the form and a sentence naming what changed and what was typed, so
nothing typed is lost and nothing newer is overwritten (domain/versions.py)."""

from __future__ import annotations

from collections.abc import Mapping

from voipcloud.domain.versions import Expected, StaleVersion

VERSION_FIELD = "version"


def expected(token: str | None) -> Expected | None:
    """The hidden field as the version the form was read at (None: an old form, no check)."""
    return Expected.of_form(token)


def notice(exc: StaleVersion, typed: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """The refusal shown above the form (which now holds the current values)."""
    changed = ", ".join(labels.get(name, name) for name in exc.changed) or "a value not shown"
    mine = "; ".join(f"{labels.get(k, k)}: {v or '(empty)'}" for k, v in typed.items())
    what = exc.current.what
    return (
        f"Not saved: {what} was changed by someone else after you opened this form "
        f"(changed: {changed}). The form now shows the current values; check them and save "
        f"again. What you had entered: {mine}."
    )
