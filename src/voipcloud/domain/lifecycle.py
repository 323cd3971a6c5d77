"""The node lifecycle, declared once as data.

Every status change in voipcloud goes through `plan()`, which reads `TRANSITIONS`.
The state diagram in docs/ is generated from this table (`voipcloud.domain.diagram`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.statuses import NodeStatus as S


class Operation(StrEnum):
    # administrator operations
    EDIT_NODE = "edit-node"
    ASSIGN_ROLE = "assign-role"
    EDIT_ROLE = "edit-role"
    DELETE_ASSIGNMENT = "delete-assignment"
    STANDBY = "standby"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    # the way out of a deactivation its agent cannot complete: Deactivated without the
    # agent's signature, with the administrator's reason (as Juju's and MAAS's --force)
    FORCE_DEACTIVATE = "force-deactivate"
    MARK_DAMAGED = "mark-damaged"
    FIX = "fix"
    DELETE = "delete"
    ADMIN_REMOVE = "admin-remove"
    REGENERATE_SESSION_KEY = "regenerate-session-key"
    WIZARD = "wizard"
    # automatic: fired by the controller or by the node's agent report
    CONFIGURATION_CHANGED = "configuration-changed"
    ACTIVATION_SUCCEEDED = "activation-succeeded"
    ACTIVATION_FAILED = "activation-failed"
    ACTIVATION_TIMED_OUT = "activation-timed-out"
    DEACTIVATION_COMPLETED = "deactivation-completed"
    FIX_SUCCEEDED = "fix-succeeded"
    FIX_FAILED = "fix-failed"


TITLES: dict[Operation, str] = {
    Operation.EDIT_NODE: "Edit node",
    Operation.ASSIGN_ROLE: "Assign Role",
    Operation.EDIT_ROLE: "Edit role parameters",
    Operation.DELETE_ASSIGNMENT: "Delete Assignment",
    Operation.STANDBY: "Set StandBy",
    Operation.ACTIVATE: "Activate",
    Operation.DEACTIVATE: "Deactivate",
    Operation.FORCE_DEACTIVATE: "Force deactivation",
    Operation.MARK_DAMAGED: "Mark Damaged",
    Operation.FIX: "Fix Node",
    Operation.DELETE: "Delete Node",
    Operation.ADMIN_REMOVE: "Administrative Remove",
    Operation.REGENERATE_SESSION_KEY: "Regenerate session key",
    Operation.WIZARD: "Configuration Wizard",
    Operation.CONFIGURATION_CHANGED: "Configuration change",
    Operation.ACTIVATION_SUCCEEDED: "Activation report (success)",
    Operation.ACTIVATION_FAILED: "Activation report (failure)",
    Operation.ACTIVATION_TIMED_OUT: "Activation timeout",
    Operation.DEACTIVATION_COMPLETED: "Deactivation report",
    Operation.FIX_SUCCEEDED: "Fix report (success)",
    Operation.FIX_FAILED: "Fix report (failure)",
}

ADMIN_OPERATIONS = frozenset(
    {
        Operation.EDIT_NODE,
        Operation.ASSIGN_ROLE,
        Operation.EDIT_ROLE,
        Operation.DELETE_ASSIGNMENT,
        Operation.STANDBY,
        Operation.ACTIVATE,
        Operation.DEACTIVATE,
        Operation.FORCE_DEACTIVATE,
        Operation.MARK_DAMAGED,
        Operation.FIX,
        Operation.DELETE,
        Operation.ADMIN_REMOVE,
        Operation.REGENERATE_SESSION_KEY,
        Operation.WIZARD,
    }
)


class Actor(StrEnum):
    ADMIN = "administrator"
    AGENT = "node agent"
    CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class Transition:
    operation: Operation
    source: S
    target: S
    fired_by: Actor


def _t(op: Operation, sources: tuple[S, ...], target: S | None, by: Actor) -> list[Transition]:
    """One line of the table; `target=None` means the status does not change."""
    return [Transition(op, src, target or src, by) for src in sources]


_LIVE = tuple(s for s in S if s is not S.DELETED)
_CHANGEABLE = (S.OFFLINE, S.ACTIVATE_FAILED, S.DEACTIVATED)
_ACTIVATABLE = (S.OFFLINE, S.STANDBY, S.ACTIVATE_FAILED, S.DEACTIVATED)
Op = Operation

TRANSITIONS: tuple[Transition, ...] = tuple(
    # edit hostname / IPs: informative, any live status
    _t(Op.EDIT_NODE, _LIVE, None, Actor.ADMIN)
    # roles change only while the node is not running them
    + _t(Op.ASSIGN_ROLE, _CHANGEABLE, None, Actor.ADMIN)
    + _t(Op.DELETE_ASSIGNMENT, _CHANGEABLE, None, Actor.ADMIN)
    # parameters: every live status; on Online only Customer Connectivity keeps the node Online,
    # any other change fires CONFIGURATION_CHANGED below
    + _t(Op.EDIT_ROLE, _LIVE, None, Actor.ADMIN)
    + _t(Op.CONFIGURATION_CHANGED, (S.ONLINE,), S.DAMAGED, Actor.CONTROLLER)
    + _t(Op.STANDBY, _CHANGEABLE, S.STANDBY, Actor.ADMIN)
    # activation is pending for the agent; the status changes when it reports
    + _t(Op.ACTIVATE, _ACTIVATABLE, None, Actor.ADMIN)
    + _t(Op.ACTIVATION_SUCCEEDED, _ACTIVATABLE, S.ONLINE, Actor.AGENT)
    + _t(Op.ACTIVATION_FAILED, _ACTIVATABLE, S.ACTIVATE_FAILED, Actor.AGENT)
    + _t(Op.ACTIVATION_TIMED_OUT, _ACTIVATABLE, S.ACTIVATE_FAILED, Actor.CONTROLLER)
    + _t(Op.DEACTIVATE, (S.ONLINE,), S.DEACTIVATE_PENDING, Actor.ADMIN)
    + _t(Op.DEACTIVATE, (S.STANDBY,), S.DEACTIVATED, Actor.ADMIN)
    + _t(Op.DEACTIVATION_COMPLETED, (S.DEACTIVATE_PENDING,), S.DEACTIVATED, Actor.AGENT)
    # no controller deadline ends a deactivation (the agent retries it); the administrator
    # may end it, with a reason, when the agent cannot (its machine gone, a stop that fails)
    + _t(Op.FORCE_DEACTIVATE, (S.DEACTIVATE_PENDING,), S.DEACTIVATED, Actor.ADMIN)
    + _t(Op.MARK_DAMAGED, (S.ONLINE,), S.DAMAGED, Actor.ADMIN)
    # Fix re-applies through the agent; the status changes when it reports
    + _t(Op.FIX, (S.DAMAGED,), None, Actor.ADMIN)
    + _t(Op.FIX_SUCCEEDED, (S.DAMAGED,), S.ONLINE, Actor.AGENT)
    + _t(Op.FIX_FAILED, (S.DAMAGED,), None, Actor.AGENT)
    + _t(
        Op.DELETE,
        (S.OFFLINE, S.STANDBY, S.ACTIVATE_FAILED, S.DEACTIVATED, S.DEACTIVATE_PENDING),
        S.DELETED,
        Actor.ADMIN,
    )
    # the seed: "The status of the node is not important."
    + _t(Op.ADMIN_REMOVE, _LIVE, None, Actor.ADMIN)
    + _t(Op.REGENERATE_SESSION_KEY, _LIVE, None, Actor.ADMIN)
    + _t(Op.WIZARD, _CHANGEABLE, None, Actor.ADMIN)
)

_INDEX: dict[tuple[Operation, S], S] = {(t.operation, t.source): t.target for t in TRANSITIONS}


class PendingOperation(StrEnum):
    """The work an administrator's operation leaves pending for the node's agent."""

    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    FIX = "fix"


class Outcome(StrEnum):
    """How a pending operation ends."""

    SUCCESS = "success"  # the agent reports it done
    FAILURE = "failure"  # the agent reports it failed, with a reason
    TIMEOUT = "timeout"  # no report before the deadline
    INTERRUPTION = "interruption"  # the controller restarted while it was pending


@dataclass(frozen=True, slots=True)
class Ending:
    """One line of the outcome table: what `outcome` of `pending` does to the node."""

    pending: PendingOperation
    outcome: Outcome
    fires: Operation | None  # the transition it fires (None: the node stays as it is)
    keeps_pending: bool  # True: the operation stays pending (the agent goes on)
    note: str


# Which administrator operation starts which pending operation.
STARTS: dict[Operation, PendingOperation] = {
    Op.ACTIVATE: PendingOperation.ACTIVATE,
    Op.DEACTIVATE: PendingOperation.DEACTIVATE,  # from Online only (StandBy: no agent)
    Op.FIX: PendingOperation.FIX,
}

P, E = PendingOperation, Outcome
OUTCOMES: tuple[Ending, ...] = (
    Ending(P.ACTIVATE, E.SUCCESS, Op.ACTIVATION_SUCCEEDED, False, "Online"),
    Ending(P.ACTIVATE, E.FAILURE, Op.ACTIVATION_FAILED, False, "ActivateFailed, agent's reason"),
    Ending(
        P.ACTIVATE,
        E.TIMEOUT,
        Op.ACTIVATION_TIMED_OUT,
        False,
        "ActivateFailed: no report within the activation timeout",
    ),
    Ending(
        P.ACTIVATE,
        E.INTERRUPTION,
        None,
        True,
        "stays pending; the deadline counts again from the restart plus the agents' longest "
        "reconnect delay",
    ),
    Ending(P.FIX, E.SUCCESS, Op.FIX_SUCCEEDED, False, "Online"),
    Ending(
        P.FIX,
        E.FAILURE,
        Op.FIX_FAILED,
        False,
        "stays Damaged; the failure is shown beside the Damaged reason",
    ),
    Ending(P.FIX, E.TIMEOUT, Op.FIX_FAILED, False, "stays Damaged: no report within the timeout"),
    Ending(P.FIX, E.INTERRUPTION, None, True, "stays pending, as an activation"),
    Ending(P.DEACTIVATE, E.SUCCESS, Op.DEACTIVATION_COMPLETED, False, "Deactivated"),
    Ending(
        P.DEACTIVATE,
        E.FAILURE,
        None,
        True,
        "stays DeactivatePending; the agent retries with backoff and each attempt is recorded",
    ),
    Ending(
        P.DEACTIVATE,
        E.TIMEOUT,
        None,
        True,
        "no deadline: the agent retries; the administrator may force the deactivation",
    ),
    Ending(P.DEACTIVATE, E.INTERRUPTION, None, True, "stays pending; the agent reports later"),
)
_ENDINGS: dict[tuple[PendingOperation, Outcome], Ending] = {
    (e.pending, e.outcome): e for e in OUTCOMES
}


def ending(pending: PendingOperation | str, outcome: Outcome) -> Ending:
    return _ENDINGS[(PendingOperation(pending), outcome)]


def has_deadline(pending: PendingOperation | str | None) -> bool:
    return pending is not None and ending(pending, Outcome.TIMEOUT).fires is not None


# While an agent operation is pending, only these may run (the rest would race the agent).
ALLOWED_WHILE_BUSY = frozenset({Op.EDIT_NODE, Op.DELETE, Op.ADMIN_REMOVE})
# A pending deactivation is what DeactivatePending means, and SPEC 5 keeps every role
# parameter editable there: the agent stops the roles; new values apply at the next activation.
# Force deactivation exists to end that pending operation, so it is allowed during it.
ALLOWED_WHILE_DEACTIVATING = ALLOWED_WHILE_BUSY | {Op.EDIT_ROLE, Op.FORCE_DEACTIVATE}

_HINTS: dict[tuple[Operation, S], str] = {
    (Op.DELETE, S.ONLINE): "deactivate it first",
    (Op.DELETE, S.DAMAGED): "fix it and deactivate it first",
    (Op.ASSIGN_ROLE, S.ONLINE): "deactivate it first",
    (Op.DELETE_ASSIGNMENT, S.ONLINE): "deactivate it first",
    (Op.ASSIGN_ROLE, S.STANDBY): "deactivate it first",
    (Op.DELETE_ASSIGNMENT, S.STANDBY): "deactivate it first",
    (Op.FIX, S.ONLINE): "it is already Online",
    (Op.ACTIVATE, S.ONLINE): "it is already Online",
    (Op.ACTIVATE, S.DAMAGED): "use Fix Node instead",
    (Op.FORCE_DEACTIVATE, S.ONLINE): "use Deactivate; force only ends a deactivation "
    "that its agent cannot complete",
    (Op.FORCE_DEACTIVATE, S.STANDBY): "use Deactivate, which needs no agent from StandBy",
    (Op.FORCE_DEACTIVATE, S.DEACTIVATED): "it is already Deactivated",
}


def way_out(operation: Operation, status: S) -> str | None:
    """What to do instead when the status refuses `operation` (None: nothing to suggest)."""
    return _HINTS.get((operation, status))


def allowed(operation: Operation, status: S) -> bool:
    return (operation, status) in _INDEX


# each operation's source statuses in the statuses' order, worked out once: the listing asks
# for them for every refused action of every row it shows
_SOURCES: dict[Operation, tuple[S, ...]] = {
    op: tuple(s for s in S if (op, s) in _INDEX) for op in Operation
}


def allowed_sources(operation: Operation) -> list[S]:
    return list(_SOURCES[operation])


def plan(operation: Operation, status: S, *, hostname: str) -> S:
    """The status after `operation`, or RuleViolation naming the rule and the status."""
    target = _INDEX.get((operation, status))
    if target is not None:
        return target
    title = TITLES[operation]
    sources = _SOURCES[operation]
    if status is S.DELETED:
        message = f"{title} is not available: node {hostname} is Deleted."
    else:
        where = ", ".join(sources) if sources else "never"
        message = (
            f"{title} is not available while node {hostname} is {status}; "
            f"it is allowed only when the node is {where}"
        )
        hint = _HINTS.get((operation, status))
        message += f"; {hint}." if hint else "."
    raise RuleViolation(f"{operation}-status", message)


def check_not_busy(
    operation: Operation, pending: PendingOperation | str | None, *, hostname: str
) -> None:
    deactivating = pending == PendingOperation.DEACTIVATE
    allowed_now = ALLOWED_WHILE_DEACTIVATING if deactivating else ALLOWED_WHILE_BUSY
    if pending and operation not in allowed_now:
        raise RuleViolation(
            "operation-in-progress",
            f"{TITLES[operation]} is not available while node {hostname} has a pending "
            f"{pending} operation; wait for its agent to report the outcome.",
        )
