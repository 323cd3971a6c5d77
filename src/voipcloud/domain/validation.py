"""Field validators shared by nodes, role parameters and infrastructure properties."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

MAX_HOSTNAME = 253


def normalize_hostname(value: str) -> str:
    """RFC 1123 host name, compared case-insensitively; raises ValueError."""
    name = value.strip().lower().rstrip(".")
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
    try:
        return str(ipaddress.ip_address(value.strip()))
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
