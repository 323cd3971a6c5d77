"""The role catalogue (SPEC.md section 3): codes, names, public-IP needs and typed parameters.

A parameter's default is a constant, an Infrastructure Property (`property:<name>`), or an
attribute of the node (`node:public_ip`). Only explicit values are stored; the effective
configuration is resolved when it is needed, so a parameter left at its default follows the
property it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from voipcloud.domain.errors import FieldError, InvalidInput
from voipcloud.domain.numbers import is_whole
from voipcloud.domain.validation import check_text, normalize_domain, normalize_host_or_ip

SECRET_MASK = "********"  # noqa: S105 - the mask shown instead of a secret


class PublicIp(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    NO = "no"


class Kind(StrEnum):
    INTEGER = "integer"
    PORT = "port"
    STRING = "string"
    DOMAIN = "domain"
    HOST = "host"  # an IP address or a host name
    SECRET = "secret"  # noqa: S105 - a type name
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    label: str
    kind: Kind
    default: Any = None
    default_from: str | None = None  # "property:<name>" or "node:public_ip"
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 255
    customer_connectivity: bool = False
    description: str = ""

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET

    def validate(self, value: Any) -> Any:
        """The value normalized, or ValueError with a message for the administrator."""
        if self.kind in (Kind.INTEGER, Kind.PORT):
            if isinstance(value, bool) or not isinstance(value, int):
                text = value.strip() if isinstance(value, str) else ""
                if is_whole(text.removeprefix("-"), max_digits=18):  # ASCII digits only
                    value = int(text)
                else:
                    raise ValueError("must be an integer")
            low = 1 if self.kind is Kind.PORT else self.minimum
            high = 65535 if self.kind is Kind.PORT else self.maximum
            if low is not None and value < low:
                raise ValueError(f"must be at least {low}")
            if high is not None and value > high:
                raise ValueError(f"must be at most {high}")
            return value
        if self.kind is Kind.BOOLEAN:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError("must be true or false")
        if not isinstance(value, str):
            raise ValueError("must be a string")
        check_text(value)  # NUL cannot be stored; no parameter is more than one line
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        if self.kind is Kind.DOMAIN:
            return normalize_domain(value)
        if self.kind is Kind.HOST:
            return normalize_host_or_ip(value)
        if self.kind is Kind.SECRET and len(value) < 8:
            raise ValueError("must be at least 8 characters")
        if self.kind is Kind.STRING and not value.strip():
            raise ValueError("must not be empty")
        return value

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.kind.value,
            "default": SECRET_MASK if self.secret and self.default else self.default,
            "default_from": self.default_from,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "max_length": self.max_length,
            "secret": self.secret,
            "customer_connectivity": self.customer_connectivity,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Role:
    code: str
    name: str
    public_ip: PublicIp
    admin_removable: bool
    parameters: tuple[Parameter, ...] = field(default=())

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def is_secret(self, name: str) -> bool:
        param = self.parameter(name)
        return param is not None and param.secret

    def is_customer_connectivity(self, name: str) -> bool:
        param = self.parameter(name)
        return param is not None and param.customer_connectivity


def _cc(description: str) -> Parameter:
    return Parameter(
        "customer_connectivity",
        "Customer Connectivity",
        Kind.HOST,
        default_from="node:public_ip",
        customer_connectivity=True,
        description=description,
    )


def _port(name: str, label: str, default: int) -> Parameter:
    return Parameter(name, label, Kind.PORT, default=default)


def _limit(name: str, label: str, default: int, maximum: int) -> Parameter:
    return Parameter(name, label, Kind.INTEGER, default=default, minimum=1, maximum=maximum)


def _credentials(service: str) -> tuple[Parameter, Parameter]:
    return (
        Parameter(
            "username",
            "Username",
            Kind.STRING,
            default_from=f"property:{service}_username",
            max_length=64,
        ),
        Parameter(
            "password",
            "Password",
            Kind.SECRET,
            default_from=f"property:{service}_password",
            max_length=128,
        ),
    )


ROLES: dict[str, Role] = {
    role.code: role
    for role in (
        Role(
            "ic",
            "Infrastructure Controller",
            PublicIp.OPTIONAL,
            admin_removable=False,
            parameters=(_port("controller_port", "Controller port", 8080),),
        ),
        Role(
            "web",
            "Management Interface",
            PublicIp.REQUIRED,
            admin_removable=True,
            parameters=(
                _cc("Public address customers use to reach the management interface."),
                Parameter(
                    "public_hostname",
                    "Public host name",
                    Kind.HOST,
                    default_from="property:management_hostname",
                ),
                _port("http_port", "HTTP port", 80),
                _port("https_port", "HTTPS port", 443),
                _limit("max_sessions", "Maximum sessions", 2000, 100000),
            ),
        ),
        Role(
            "sip",
            "SIP",
            PublicIp.REQUIRED,
            admin_removable=True,
            parameters=(
                _cc("Public address SIP phones register to."),
                Parameter(
                    "sip_domain", "SIP domain", Kind.DOMAIN, default_from="property:system_domain"
                ),
                _port("sip_port", "SIP port (UDP/TCP)", 5060),
                _port("sips_port", "SIP TLS port", 5061),
                _limit("max_calls", "Maximum concurrent calls", 1000, 100000),
            ),
        ),
        Role(
            "pbx",
            "PBX",
            PublicIp.REQUIRED,
            admin_removable=True,
            parameters=(
                _cc("Public address media (RTP) flows to."),
                Parameter(
                    "rtp_port_min",
                    "RTP port range start",
                    Kind.PORT,
                    default_from="property:rtp_port_min",
                ),
                Parameter(
                    "rtp_port_max",
                    "RTP port range end",
                    Kind.PORT,
                    default_from="property:rtp_port_max",
                ),
                _limit("max_channels", "Maximum channels", 500, 100000),
            ),
        ),
        Role(
            "jabber",
            "Jabber",
            PublicIp.NO,
            admin_removable=True,
            parameters=(
                Parameter(
                    "xmpp_domain", "XMPP domain", Kind.DOMAIN, default_from="property:system_domain"
                ),
                _port("c2s_port", "Client port", 5222),
                _port("s2s_port", "Server-to-server port", 5269),
            ),
        ),
        Role(
            "que",
            "Queue",
            PublicIp.NO,
            admin_removable=True,
            parameters=(_port("port", "Port", 5672), *_credentials("queue")),
        ),
        Role(
            "wk",
            "Worker",
            PublicIp.NO,
            admin_removable=False,
            parameters=(_limit("max_jobs", "Concurrent jobs", 8, 1024),),
        ),
        Role(
            "sql",
            "SQL Database",
            PublicIp.NO,
            admin_removable=False,
            parameters=(
                _port("port", "Port", 3306),
                *_credentials("sql"),
                _limit("max_connections", "Maximum connections", 500, 100000),
            ),
        ),
        Role(
            "dd",
            "Distributed Database",
            PublicIp.NO,
            admin_removable=False,
            parameters=(
                _port("port", "Port", 9042),
                *_credentials("dd"),
                _limit("replication_factor", "Replication factor", 3, 9),
            ),
        ),
        Role(
            "es",
            "Elasticsearch",
            PublicIp.NO,
            admin_removable=False,
            parameters=(
                _port("http_port", "HTTP port", 9200),
                _limit("heap_size_mb", "Heap size (MiB)", 1024, 262144),
            ),
        ),
        Role(
            "us",
            "Unstructured Storage",
            PublicIp.NO,
            admin_removable=False,
            parameters=(
                Parameter(
                    "path", "Storage path", Kind.STRING, default="/var/lib/voipcloud/storage"
                ),
                _limit("quota_gb", "Quota (GiB)", 100, 1048576),
            ),
        ),
    )
}


class ResourceAccess(StrEnum):
    """What a node may do with the stored resources (faxes, recordings, voicemail)."""

    NONE = "none"
    READ = "read"
    READ_WRITE = "read-write"

    def allows(self, *, write: bool) -> bool:
        return self is ResourceAccess.READ_WRITE or (self is ResourceAccess.READ and not write)


# SPEC.md section 9: a node reaches stored resources only through the roles it carries. The
# same for every kind. Roles not named here: none (403). Administrators keep full access.
RESOURCE_ACCESS: Mapping[str, ResourceAccess] = MappingProxyType(
    {
        "pbx": ResourceAccess.READ_WRITE,  # records calls, takes voicemail, receives faxes
        "web": ResourceAccess.READ,  # the users' portal plays and downloads them
        "us": ResourceAccess.READ_WRITE,  # Unstructured Storage
    }
)


def role_resource_access(code: str) -> ResourceAccess:
    return RESOURCE_ACCESS.get(code, ResourceAccess.NONE)


def resource_access(codes: Iterable[str]) -> ResourceAccess:
    """The widest access any of a node's roles gives."""
    granted = {role_resource_access(code) for code in codes}
    for access in (ResourceAccess.READ_WRITE, ResourceAccess.READ):
        if access in granted:
            return access
    return ResourceAccess.NONE


CONTROLLER_ROLE = "ic"
DISTRIBUTED_DATABASE_ROLE = "dd"
# The roles the Configuration Wizard puts on the IC node for a single-node system.
SINGLE_NODE_ROLES = ("web", "sip", "pbx", "jabber", "que", "wk", "sql", "dd", "es", "us")


def get_role(code: str) -> Role | None:
    return ROLES.get(code)


def validate_parameters(
    role: Role, values: Mapping[str, Any], *, loc: tuple[str | int, ...] = ("body", "parameters")
) -> dict[str, Any]:
    """Explicit values validated and normalized. `None` means "back to the default"."""
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}
    for name, value in values.items():
        param = role.parameter(name)
        if param is None:
            known = ", ".join(p.name for p in role.parameters)
            errors.append(
                FieldError(
                    (*loc, name),
                    f"unknown parameter for role {role.code}; known: {known}",
                    "unknown_parameter",
                )
            )
            continue
        if value is None:
            clean[name] = None
            continue
        try:
            clean[name] = param.validate(value)
        except ValueError as exc:
            errors.append(FieldError((*loc, name), str(exc)))
    if errors:
        raise InvalidInput(errors)
    return clean


@dataclass(frozen=True, slots=True)
class EffectiveValue:
    value: Any
    source: str  # "explicit", "default", "property:<name>", "node:public_ip"


def effective_parameters(
    role: Role,
    explicit: Mapping[str, Any],
    *,
    properties: Mapping[str, Any],
    public_ip: str | None,
) -> dict[str, EffectiveValue]:
    result: dict[str, EffectiveValue] = {}
    for param in role.parameters:
        if explicit.get(param.name) is not None:
            result[param.name] = EffectiveValue(explicit[param.name], "explicit")
        elif param.default_from == "node:public_ip":
            result[param.name] = EffectiveValue(public_ip, param.default_from)
        elif param.default_from and param.default_from.startswith("property:"):
            key = param.default_from.removeprefix("property:")
            result[param.name] = EffectiveValue(properties.get(key), param.default_from)
        else:
            result[param.name] = EffectiveValue(param.default, "default")
    return result


def check_consistency(role: Role, effective: Mapping[str, EffectiveValue]) -> list[FieldError]:
    """Cross-field rules of one role's effective configuration."""
    errors: list[FieldError] = []
    low = effective.get("rtp_port_min")
    high = effective.get("rtp_port_max")
    if (
        low
        and high
        and low.value is not None
        and high.value is not None
        and low.value >= high.value
    ):
        errors.append(
            FieldError(("body", "parameters", "rtp_port_max"), "must be greater than rtp_port_min")
        )
    return errors


@dataclass(frozen=True, slots=True)
class RolePort:
    """A port a role's software listens on: a parameter's value (or a range between two
    parameters), or a fixed number."""

    protocol: str  # "tcp" or "udp"
    purpose: str
    parameter: str | None = None
    parameter_max: str | None = None  # a range: parameter .. parameter_max
    port: int | None = None  # fixed (no parameter)

    def schema(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "purpose": self.purpose,
            "parameter": self.parameter,
            "parameter_max": self.parameter_max,
            "port": self.port,
        }

    def describe(self, effective: Mapping[str, Any]) -> str:
        def value(name: str | None) -> Any:
            found = effective.get(name) if name else None
            return getattr(found, "value", found)

        if self.parameter is None:
            number = str(self.port)
        elif self.parameter_max is not None:
            number = f"{value(self.parameter)}–{value(self.parameter_max)}"
        else:
            number = str(value(self.parameter))
        return f"{self.protocol} {number} ({self.purpose})"


# What each role listens on (the built-in handlers, docs/roles.md): GET /roles `ports`, and
# Quick info shows them with the node's effective values. Roles not named: none.
ROLE_PORTS: Mapping[str, tuple[RolePort, ...]] = MappingProxyType(
    {
        "ic": (RolePort("tcp", "controller API, web interface, agent channel", "controller_port"),),
        "web": (
            RolePort("tcp", "HTTP, users' portal", "http_port"),
            RolePort("tcp", "HTTPS, users' portal (with a certificate)", "https_port"),
        ),
        "sip": (
            RolePort("udp", "SIP", "sip_port"),
            RolePort("tcp", "SIP", "sip_port"),
            RolePort(
                "tcp", "SIP over TLS (reserved; not rendered by the built-in handler)", "sips_port"
            ),
        ),
        "pbx": (
            RolePort("udp", "SIP (PJSIP)", port=5080),
            RolePort("udp", "RTP media", "rtp_port_min", "rtp_port_max"),
        ),
        "jabber": (
            RolePort("tcp", "XMPP clients", "c2s_port"),
            RolePort("tcp", "XMPP servers", "s2s_port"),
        ),
        "que": (RolePort("tcp", "AMQP 0-9-1", "port"),),
        "sql": (RolePort("tcp", "MariaDB / MySQL protocol", "port"),),
        "dd": (RolePort("tcp", "CQL", "port"),),
        "es": (RolePort("tcp", "HTTP API", "http_port"),),
    }
)


def role_ports(code: str) -> tuple[RolePort, ...]:
    return ROLE_PORTS.get(code, ())


def listening(code: str, effective: Mapping[str, Any]) -> list[str]:
    """What the role listens on with these effective values, one line per port."""
    return [port.describe(effective) for port in role_ports(code)]
