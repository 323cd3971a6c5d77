"""Form helpers: a service's InvalidInput becomes a message next to each field.

A page catches `InvalidInput` around its service call and renders the form again with
`errors=field_errors(exc)`; the `field()` macro of `_forms.html` shows `errors[name]`
beside the input (and marks it `aria-invalid`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voipcloud.domain.errors import InvalidInput

GENERAL = "__all__"  # errors that name no field of the form


def field_errors(exc: InvalidInput, *, fields: set[str] | None = None) -> dict[str, str]:
    """`{field name: message}`; the field is the last part of each error's location."""
    errors: dict[str, str] = {}
    for error in exc.errors:
        name = str(error.loc[-1]) if error.loc else GENERAL
        if fields is not None and name not in fields:
            name = GENERAL
        errors[name] = f"{errors[name]} {error.message}" if name in errors else error.message
    return errors


def local_url(url: str | None, default: str = "/") -> str:
    """`url` if it is a path on this site (never another host), else `default`. A control
    character or space in it is refused too: browsers drop tabs and newlines from an address,
    so `/<tab>/evil.example` would be read as `//evil.example`, another host."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return default
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return default
    return url


async def form_data(request: Request) -> dict[str, str]:
    """Every text field of the posted form (for forms whose fields come from a schema)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


FormData = Annotated[dict[str, str], Depends(form_data)]
