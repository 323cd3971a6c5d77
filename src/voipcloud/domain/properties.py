"""Infrastructure Properties (SPEC.md section 7): shared values that become role defaults.

Each property is declared once in `PROPERTIES` (name, label, kind, what it is for). A role
parameter whose `default_from` is `property:<name>` follows the property while the node does
not override it; `property_changes.role_changes()` says which effective parameters a change
of properties moves, which is what marks Online nodes Damaged.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.roles import ROLES, SECRET_MASK, Kind, Role
from voipcloud.domain.validation import normalize_domain, normalize_host_or_ip, normalize_ip

MAX_SERVERS = 8
RTP_PORT_FLOOR = 1024  # RTP never uses privileged ports
MIN_SECRET = 8
MAX_SECRET = 128
_USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PropertyKind(StrEnum):
    NAME = "name"
    DOMAIN = "domain"
    HOST = "host"  # a host name or an IP address
    IP_LIST = "ip-list"
    HOST_LIST = "host-list"
    TIMEZONE = "timezone"
    CIDR = "cidr"
    PORT = "port"
    USERNAME = "username"
    SECRET = "secret"  # noqa: S105 - a type name


@dataclass(frozen=True, slots=True)
class PropertySpec:
    name: str
    label: str
    kind: PropertyKind
    topic: str  # how a change reads in a node's reason: "<topic> changed"
    description: str
    example: str = ""

    @property
    def secret(self) -> bool:
        return self.kind is PropertyKind.SECRET

    def used_by(self) -> list[tuple[Role, str]]:
        """The role parameters whose default is this property."""
        source = f"property:{self.name}"
        return [
            (role, param.name)
            for role in ROLES.values()
            for param in role.parameters
            if param.default_from == source
        ]


def _credentials(service: str, title: str) -> tuple[PropertySpec, PropertySpec]:
    topic = f"{title} credentials"
    return (
        PropertySpec(
            f"{service}_username",
            f"{title} username",
            PropertyKind.USERNAME,
            topic,
            f"The account every {title} role uses, unless the role overrides it.",
            "voipcloud",
        ),
        PropertySpec(
            f"{service}_password",
            f"{title} password",
            PropertyKind.SECRET,
            topic,
            f"The shared {title} password (write-only: never shown again).",
        ),
    )


PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec(
        "infrastructure_name",
        "Infrastructure name",
        PropertyKind.NAME,
        "infrastructure name",
        "A name for this installation, shown in the interface.",
        "voipcloud",
    ),
    PropertySpec(
        "system_domain",
        "System domain",
        PropertyKind.DOMAIN,
        "system domain",
        "The SIP domain (and XMPP domain) of the system.",
        "voip.example.com",
    ),
    PropertySpec(
        "management_hostname",
        "Management interface public host name",
        PropertyKind.HOST,
        "management interface host name",
        "The public host name administrators and customers use for the web interface.",
        "cloud.example.com",
    ),
    PropertySpec(
        "dns_servers",
        "DNS servers",
        PropertyKind.IP_LIST,
        "DNS servers",
        f"IP addresses of the resolvers the nodes use (at most {MAX_SERVERS}).",
        "10.0.0.2, 10.0.0.3",
    ),
    PropertySpec(
        "ntp_servers",
        "NTP servers",
        PropertyKind.HOST_LIST,
        "NTP servers",
        f"Time servers the nodes synchronize with (at most {MAX_SERVERS}).",
        "pool.ntp.org",
    ),
    PropertySpec(
        "timezone",
        "Time zone",
        PropertyKind.TIMEZONE,
        "time zone",
        "An IANA time zone name.",
        "Europe/Bucharest",
    ),
    PropertySpec(
        "private_network",
        "Private network range",
        PropertyKind.CIDR,
        "private network range",
        "The private range the nodes talk over, in CIDR notation.",
        "10.0.0.0/8",
    ),
    PropertySpec(
        "rtp_port_min",
        "RTP port range start",
        PropertyKind.PORT,
        "RTP port range",
        "First UDP port of the media (RTP) range.",
        "10000",
    ),
    PropertySpec(
        "rtp_port_max",
        "RTP port range end",
        PropertyKind.PORT,
        "RTP port range",
        "Last UDP port of the media (RTP) range.",
        "20000",
    ),
    *_credentials("sql", "SQL"),
    *_credentials("queue", "Queue"),
    *_credentials("dd", "Distributed Database"),
)
SPECS: dict[str, PropertySpec] = {spec.name: spec for spec in PROPERTIES}
SECRET_PROPERTIES = frozenset(spec.name for spec in PROPERTIES if spec.secret)


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


@cache
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value.strip()


def _listed(value: Any) -> list[Any]:
    """A list, or a string of items separated by commas or spaces."""
    if isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError("must be a list (or a comma-separated string)")


def _port(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only (str.isdigit() also takes other scripts' digits), and few of
        # them: int() of thousands of digits fails with a message about Python itself
        if not (text.isascii() and text.isdigit()):
            raise ValueError("must be an integer")
        if len(text) > 5:
            raise ValueError(f"must be between {RTP_PORT_FLOOR} and 65535")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    if not RTP_PORT_FLOOR <= value <= 65535:
        raise ValueError(f"must be between {RTP_PORT_FLOOR} and 65535")
    return value


def _cidr(value: Any) -> str:
    text = _text(value)
    if "/" not in text:
        raise ValueError(
            f"{text!r} is not in CIDR notation; write it as network/prefix, e.g. 10.0.0.0/8"
        )
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not a valid CIDR range such as 10.0.0.0/8") from None
        raise ValueError(f"{text!r} has host bits set; the network is {loose}") from None
    if not network.is_private:
        raise ValueError(f"{network} is not a private range (such as 10.0.0.0/8 or 192.168.0.0/16)")
    return str(network)


def validate_value(spec: PropertySpec, value: Any) -> Any:
    """One property's value normalized, or ValueError with a message for the administrator."""
    kind = spec.kind
    if kind is PropertyKind.PORT:
        return _port(value)
    if kind is PropertyKind.IP_LIST or kind is PropertyKind.HOST_LIST:
        items = _listed(value)
        if len(items) > MAX_SERVERS:
            raise ValueError(f"at most {MAX_SERVERS} servers")
        check = normalize_ip if kind is PropertyKind.IP_LIST else normalize_host_or_ip
        clean: list[str] = []
        for item in items:
            try:
                normalized = check(_text(item))
            except ValueError as exc:
                raise ValueError(f"{item!r}: {exc}") from None
            if normalized in clean:
                raise ValueError(f"{normalized} is listed twice")
            clean.append(normalized)
        return clean
    if kind is PropertyKind.CIDR:
        return _cidr(value)
    text = _text(value)
    if kind is PropertyKind.SECRET:
        if not MIN_SECRET <= len(text) <= MAX_SECRET:
            raise ValueError(f"must be {MIN_SECRET} to {MAX_SECRET} characters")
        return text
    if not text:
        raise ValueError("must not be empty")
    if kind is PropertyKind.NAME:
        if len(text) > 64:
            raise ValueError("must be at most 64 characters")
        return text
    if kind is PropertyKind.DOMAIN:
        return normalize_domain(text)
    if kind is PropertyKind.HOST:
        return normalize_host_or_ip(text)
    if kind is PropertyKind.TIMEZONE:
        if text not in known_timezones():
            raise ValueError(
                f"{text!r} is not a known time zone; use an IANA name such as Europe/Bucharest"
            )
        return text
    if kind is PropertyKind.USERNAME:
        if not _USERNAME.match(text):
            raise ValueError(
                "must start with a letter or underscore and hold at most 64 letters, digits, "
                "'_', '.' or '-'"
            )
        return text
    raise AssertionError(f"unhandled property kind {kind}")  # pragma: no cover


def _fixed_ports() -> list[tuple[int, str]]:
    """Ports the catalogue's roles listen on by default (RTP must stay clear of them)."""
    found: list[tuple[int, str]] = []
    for role in ROLES.values():
        for param in role.parameters:
            if param.kind is Kind.PORT and isinstance(param.default, int):
                found.append((param.default, f"{param.label.lower()} of the {role.name} role"))
    return sorted(found)


def _check_rtp_range(props: Mapping[str, Any], loc: tuple[str | int, ...]) -> list[FieldError]:
    low, high = props.get("rtp_port_min"), props.get("rtp_port_max")
    if not isinstance(low, int) or not isinstance(high, int):
        return []
    if low >= high:
        return [
            FieldError(
                (*loc, "rtp_port_max"),
                f"the RTP port range is reversed or empty: the end ({high}) must be greater "
                f"than the start ({low})",
            )
        ]
    clashes = [(port, what) for port, what in _fixed_ports() if low <= port <= high]
    if clashes:
        port, what = clashes[0]
        return [
            FieldError(
                (*loc, "rtp_port_min"),
                f"the RTP port range {low}-{high} overlaps port {port} ({what}); "
                "choose a range clear of the roles' ports",
            )
        ]
    return []


def is_kept_secret(value: Any) -> bool:
    """A secret left blank or sent back masked keeps its current value (write-only)."""
    return value is None or value == "" or value == SECRET_MASK


def validate_changes(
    current: Mapping[str, Any],
    changes: Mapping[str, Any],
    *,
    loc: tuple[str | int, ...] = ("body",),
) -> dict[str, Any]:
    """The whole new set (current values overlaid with `changes`), or InvalidInput naming
    every field at fault."""
    errors: list[FieldError] = []
    result = dict(current)
    for name, value in changes.items():
        spec = SPECS.get(name)
        if spec is None:
            errors.append(
                FieldError(
                    (*loc, name),
                    f"unknown property; known: {', '.join(SPECS)}",
                    "unknown_property",
                )
            )
            continue
        if spec.secret and is_kept_secret(value):
            continue
        if value is None:
            errors.append(FieldError((*loc, name), "must not be empty"))
            continue
        try:
            result[name] = validate_value(spec, value)
        except ValueError as exc:
            errors.append(FieldError((*loc, name), str(exc)))
    if not any(e.loc[-1] in ("rtp_port_min", "rtp_port_max") for e in errors):
        errors.extend(_check_rtp_range(result, loc))
    if errors:
        raise InvalidInput(errors)
    return result


def changed_names(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return [spec.name for spec in PROPERTIES if before.get(spec.name) != after.get(spec.name)]


def masked(props: Mapping[str, Any]) -> dict[str, Any]:
    """The properties as shown to anyone: secrets replaced by the mask."""
    return {
        spec.name: (SECRET_MASK if props.get(spec.name) else None)
        if spec.secret
        else props.get(spec.name)
        for spec in PROPERTIES
    }
