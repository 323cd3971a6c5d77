"""How a change of Infrastructure Properties moves the roles' effective parameters.

A parameter moves when its effective value comes from a property (`property:<name>`) and that
value changes; an explicit value never moves (the node overrides the property). The Online
nodes with a moving parameter are the ones a change marks Damaged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voipcloud.domain.properties import PROPERTIES
from voipcloud.domain.roles import SECRET_MASK, Role, effective_parameters


@dataclass(frozen=True, slots=True)
class ParameterChange:
    role: str
    parameter: str
    property: str
    old: Any
    new: Any  # secrets masked


def role_changes(
    role: Role,
    explicit: Mapping[str, Any],
    *,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    public_ip: str | None,
) -> list[ParameterChange]:
    """The role's effective parameters that move when the properties go from before to after.

    A parameter with an explicit value never moves: the node overrides the property."""
    old = effective_parameters(role, explicit, properties=before, public_ip=public_ip)
    new = effective_parameters(role, explicit, properties=after, public_ip=public_ip)
    changes = []
    for name, value in new.items():
        if value.value == old[name].value or not value.source.startswith("property:"):
            continue
        secret = role.is_secret(name)
        changes.append(
            ParameterChange(
                role=role.code,
                parameter=name,
                property=value.source.removeprefix("property:"),
                old=SECRET_MASK if secret else old[name].value,
                new=SECRET_MASK if secret else value.value,
            )
        )
    return changes


def change_reason(changes: list[ParameterChange]) -> str:
    """'infrastructure change: system domain changed' (topics in catalogue order)."""
    names = {c.property for c in changes}
    topics = list(dict.fromkeys(s.topic for s in PROPERTIES if s.name in names))
    return f"infrastructure change: {', '.join(topics)} changed"
