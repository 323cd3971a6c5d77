"""Field validators shared by nodes, role parameters and infrastructure properties."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

MAX_HOSTNAME = 253

# C0 controls, DEL, C1 controls, and lone UTF-16 surrogates (which no database can store).
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# the same, but a multi-line text may hold tabs and line breaks
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r]+")


def check_text(value: str, *, multiline: bool = False) -> str:
    """Administrator text (a label, an id, a reason): refuse NUL and other control characters.

    PostgreSQL cannot store NUL at all; the other control characters have no place in a
    one-line field. `multiline` texts may hold tabs and line breaks. Raises ValueError.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    found = (_NOT_TEXT if multiline else _NOT_ONE_LINE).search(value)
    if found:
        char = found.group()
        what = "NUL" if char == "\x00" else f"U+{ord(char):04X}"
        if multiline:
            raise ValueError(
                f"must not contain control characters other than tabs and line breaks ({what})"
            )
        raise ValueError(f"must be one line of text without control characters ({what})")
    return value


def sanitize_text(value: str, *, multiline: bool = False) -> str:
    """Text reported by a node's agent, made storable: control characters and lone
    surrogates are dropped (a report must never be lost because of them)."""
    if multiline:
        return _SURROGATES.sub("", _UNPRINTABLE.sub("", value))
    return _NOT_ONE_LINE.sub("", _LINE_BREAKS.sub(" ", value))


def _require_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string, not null" if value is None else "must be a string")
    return value


def normalize_hostname(value: str) -> str:
    """RFC 1123 host name, compared case-insensitively; raises ValueError."""
    name = _require_str(value).strip().lower().rstrip(".")
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_HOSTNAME:
        raise ValueError(f"must be at most {MAX_HOSTNAME} characters")
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            "must be a host name: letters, digits and hyphens in dot-separated labels "
            "of 1 to 63 characters, not starting or ending with a hyphen"
        )
    return name


def normalize_domain(value: str) -> str:
    name = normalize_hostname(value)
    if "." not in name:
        raise ValueError("must be a domain name with at least two labels, such as example.com")
    if name.split(".")[-1].isdigit():
        raise ValueError("must be a domain name, not an IP address")
    return name


def normalize_ip(value: str) -> str:
    text = _require_str(value)
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IPv4 or IPv6 address") from None


def normalize_host_or_ip(value: str) -> str:
    try:
        return normalize_ip(value)
    except ValueError:
        pass
    try:
        return normalize_hostname(value)
    except ValueError:
        raise ValueError("must be an IP address or a host name") from None
