"""Domain errors. The API maps them to HTTP answers; the CLI and web show their message.

VoipcloudError
├── NotFound            404: no such node, role assignment, extension
├── RuleViolation       409: a rule of the lifecycle forbids the operation now
│   └── ConcurrentChange     409: another change to the same node won the race
├── InvalidInput        422: one or more fields are invalid (field path + message)
├── NotAuthenticated    401
├── NodeGone            410: an agent of a deleted node
└── DatabaseUnavailable 503: the database cannot be reached, is full, read-only or locked

`voipcloud.store.errors` turns the database driver's exceptions into these where they happen:
a unique-constraint conflict (a race) into a `RuleViolation` naming the rule, an outage into
`DatabaseUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass


class VoipcloudError(Exception):
    pass


class NotFound(VoipcloudError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RuleViolation(VoipcloudError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class ConcurrentChange(RuleViolation):
    def __init__(self, hostname: str) -> None:
        super().__init__(
            "concurrent-change",
            f"Node {hostname} was changed by another request at the same time; "
            "reload it and try again.",
        )


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: tuple[str | int, ...]
    message: str
    type: str = "value_error"


class InvalidInput(VoipcloudError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.message}" for e in errors))
        self.errors = errors

    @classmethod
    def one(cls, loc: tuple[str | int, ...], message: str) -> InvalidInput:
        return cls([FieldError(loc, message)])


class NotAuthenticated(VoipcloudError):
    pass


class NodeGone(VoipcloudError):
    """410: the node was deleted; its agent must stop."""


class DatabaseUnavailable(VoipcloudError):
    """The database cannot serve the request now; nothing was changed. `reason` says why in a
    few words ("cannot connect", "disk full", "read-only", ...); trying again later may work."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unavailable ({reason}); try again later")
        self.reason = reason
        self.message = str(self)
