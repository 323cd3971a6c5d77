"""Infrastructure Properties (SPEC.md section 7): shared values that become role defaults."""

from __future__ import annotations

import secrets
from typing import Any

SECRET_PROPERTIES = frozenset({"sql_password", "queue_password", "dd_password"})


def initial_properties(*, controller_hostname: str) -> dict[str, Any]:
    """The properties of a new installation; shared passwords are generated, never fixed."""
    return {
        "infrastructure_name": "voipcloud",
        "system_domain": "voipcloud.local",
        "management_hostname": controller_hostname,
        "dns_servers": [],
        "ntp_servers": [],
        "timezone": "UTC",
        "private_network": "10.0.0.0/8",
        "rtp_port_min": 10000,
        "rtp_port_max": 20000,
        "sql_username": "voipcloud",
        "sql_password": secrets.token_urlsafe(18),
        "queue_username": "voipcloud",
        "queue_password": secrets.token_urlsafe(18),
        "dd_username": "voipcloud",
        "dd_password": secrets.token_urlsafe(18),
    }
