"""The one rulebook: may this operation run on this node now? (pure, no I/O)

Every "may I?" question of the product is answered here, from the facts about one node
(`NodeFacts`: status, roles, IC or not, public IP, extension count, agent connectivity,
pending operation) and, for role operations, the role concerned:

    decide(Operation.ACTIVATE, facts) -> Decision(allowed=True, confirm="...")
    decide(Operation.DELETE, facts)   -> Decision(allowed=False, rule="delete-status",
                                                  reason="Delete Node is not available ...",
                                                  way_out="deactivate it first")

The services raise from it (`Decision.check()` raises the RuleViolation of the refusal, with
the rule's code and its sentence), the web builds its buttons from it (a refused action is
shown disabled with its reason, an allowed one with a consequence asks first), the Wizard
checks each role it adds through it, the API answers it per node (`actions`), and the CLI
prints it in `node info`. A test (tests/unit/test_policy_single_place.py) keeps rule
decisions out of every other module; another (tests/unit/test_policy_offered_accepted.py)
checks over every combination of facts that what the web and the API offer is exactly what
the services accept.

The status table itself stays in `lifecycle.TRANSITIONS`; this module adds every rule that
is not a (status, operation) pair, and what each interface should say before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from voipcloud.domain import lifecycle
from voipcloud.domain.errors import RuleViolation
from voipcloud.domain.lifecycle import TITLES, Operation, PendingOperation
from voipcloud.domain.roles import CONTROLLER_ROLE, DISTRIBUTED_DATABASE_ROLE, ROLES, PublicIp
from voipcloud.domain.statuses import NodeStatus

# SPEC.md section 5: "Assign Distributed Database (dd): only while at most three extensions
# are provisioned"; "Administrative Remove: fewer than three extensions are provisioned".
DD_MAX_EXTENSIONS = 3
ADMIN_REMOVE_MAX_EXTENSIONS = 2
EXTENSION_RULES = (
    f"Administrative Remove needs fewer than {ADMIN_REMOVE_MAX_EXTENSIONS + 1}; the "
    f"Distributed Database role may be assigned while there are at most {DD_MAX_EXTENSIONS}"
)


# The form field a refusal is about, for the interfaces that show it beside the field.
RULE_FIELDS = {"hostname-unique": "hostname", "public-ip-required": "public_ip"}


class Connectivity(StrEnum):
    """The node's agent as the controller sees it (the same words as the API's)."""

    CONNECTED = "connected"
    LOST = "lost"
    NEVER = "never"  # no agent has joined yet


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """Everything a rule may look at, about one node."""

    hostname: str
    status: NodeStatus
    roles: frozenset[str] = frozenset()
    is_controller: bool = False
    has_public_ip: bool = False
    extension_count: int = 0
    agent: Connectivity = Connectivity.NEVER
    last_seen: str | None = None  # already formatted for a sentence ("06:56:17")
    pending: PendingOperation | None = None
    has_session_key: bool = False
    # other live nodes carrying each role (the first hostnames): Administrative Remove's warning
    carried_elsewhere: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # how many carry each role, when more than the names above (the listing reads 5 of 50,000)
    carried_count: dict[str, int] = field(default_factory=dict)
    # the Configuration Wizard: the other live nodes (the first), "hostname (Status)"
    other_live_nodes: tuple[str, ...] = ()
    other_live_count: int = 0  # how many in all, when more than the names above
    # maintenance mode (orthogonal to the status): who set it and why, for the sentences
    maintenance: str | None = None  # "reason (by alice since 2026-01-31 08:00 UTC)"


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed (perhaps with a consequence to confirm first), or refused with the rule."""

    operation: Operation
    allowed: bool
    rule: str | None = None
    reason: str | None = None  # the refusal as a sentence (it names the node and the rule)
    way_out: str | None = None  # what to do instead, when something can be done
    confirm: str | None = None  # allowed, but this consequence must be confirmed first
    role: str | None = None

    def check(self) -> None:
        """Raise the refusal (409 naming the rule); nothing when allowed."""
        if not self.allowed:
            raise RuleViolation(self.rule or "refused", self.reason or "refused")

    @property
    def title(self) -> str:
        return TITLES[self.operation]


def _refuse(
    op: Operation, rule: str, reason: str, *, way_out: str | None = None, role: str | None = None
) -> Decision:
    return Decision(op, False, rule=rule, reason=reason, way_out=way_out, role=role)


def _status_and_busy(
    op: Operation, facts: NodeFacts, *, role: str | None = None
) -> Decision | None:
    """The status table's answer, then the pending-operation rule."""
    try:
        lifecycle.plan(op, facts.status, hostname=facts.hostname)
    except RuleViolation as refusal:
        way_out = lifecycle.way_out(op, facts.status)
        return _refuse(op, refusal.rule, refusal.message, way_out=way_out, role=role)
    try:
        lifecycle.check_not_busy(op, facts.pending, hostname=facts.hostname)
    except RuleViolation as refusal:
        return _refuse(
            op,
            refusal.rule,
            refusal.message,
            way_out="wait for its agent to report the outcome",
            role=role,
        )
    return None


def removal_warning(
    role_code: str, hostname: str, others: Sequence[str] = (), count: int = 0
) -> str:
    """What Administrative Remove says before it runs (it must be confirmed). `others`: who
    else carries the role (the first five suffice); `count`: how many in all, if more."""
    name = ROLES[role_code].name
    count = max(count, len(others))
    if others:
        shown = ", ".join(others[:5]) + (f" and {count - 5} more" if count > 5 else "")
        elsewhere = f"It stays on {count} other node(s): {shown}."
    else:
        elsewhere = "No other node carries this role: nothing will run it after this."
    return (
        f"Warning: the {name} role will be removed from the Infrastructure Controller "
        f"node {hostname}, whatever its status, and its agent will stop it. {elsewhere}"
    )


def _agent_absent(facts: NodeFacts) -> str | None:
    if facts.agent is Connectivity.NEVER:
        return f"the agent of node {facts.hostname} has never joined"
    if facts.agent is Connectivity.LOST:
        seen = f" (last seen {facts.last_seen})" if facts.last_seen else ""
        return f"the agent of node {facts.hostname} is lost{seen}"
    return None


def _consequence(op: Operation, facts: NodeFacts, timeout: float) -> str | None:
    """The consequence an allowed operation must show, and have confirmed, before it runs."""
    host = facts.hostname
    absent = _agent_absent(facts)
    if op is Operation.DEACTIVATE and facts.status is NodeStatus.ONLINE:
        ic = (
            " It is the Infrastructure Controller node: the roles it carries stop serving "
            "the whole system (the controller itself keeps running)."
            if facts.is_controller
            else ""
        )
        waits = (
            f" Its agent must sign the deactivation, and {absent}: the node stays "
            "DeactivatePending until it does (or you force it)."
            if absent
            else ""
        )
        return (
            f"Node {host} is Online: its agent stops every role it carries "
            f"({', '.join(sorted(facts.roles)) or 'none'}) and the node becomes "
            f"DeactivatePending, then Deactivated when the agent signs it.{ic}{waits}"
        )
    if op is Operation.REGENERATE_SESSION_KEY:
        cut = (
            f" The agent of node {host} is connected now: it is cut off at once and must "
            "join again with the new key (the node keeps its status, its agent shown lost)."
            if facts.agent is Connectivity.CONNECTED
            else ""
        )
        return f"The current session key of node {host} stops working at once.{cut}"
    if op in (Operation.ACTIVATE, Operation.FIX) and absent:
        outcome = "ActivateFailed" if op is Operation.ACTIVATE else "still Damaged"
        return (
            f"{TITLES[op]} is carried out by the node's agent, and {absent}. Unless it joins "
            f"within {timeout:g} s, the operation fails and the node is {outcome}."
        )
    if op is Operation.MARK_DAMAGED:
        return f"Node {host} stays Damaged until Fix Node; the reason you give is shown."
    if op is Operation.STANDBY:
        return None
    return None


def decide(
    operation: Operation,
    facts: NodeFacts,
    *,
    role: str | None = None,
    removing_public_ip: bool = False,
    activation_timeout: float = 60.0,
    leave_out_maintenance: bool = False,
) -> Decision:
    """The answer of the rulebook for `operation` on the node described by `facts`.

    `role` names the role of a role operation (assign, delete assignment, administrative
    remove, edit parameters); for ASSIGN_ROLE without a role the answer says whether any role
    could be assigned now. `removing_public_ip` asks Edit node about taking the public IP away.
    `leave_out_maintenance`: the node was selected by a bulk action or a rollout, which leave
    the nodes in maintenance out (refused with `node-in-maintenance`).
    """
    op = operation
    host = facts.hostname
    spec = ROLES.get(role) if role else None

    # a selection (bulk action, rollout) leaves out the nodes in maintenance; chosen one by
    # one, or with include_maintenance, they are acted on as any other node
    if leave_out_maintenance and facts.maintenance is not None:
        return _refuse(
            op,
            "node-in-maintenance",
            f"Node {host} is in maintenance ({facts.maintenance}); {TITLES[op]} leaves it "
            "out of this selection.",
            way_out="choose it explicitly (include nodes in maintenance), or take it out of "
            "maintenance first",
            role=role,
        )
    # rules that come before the status (they hold whatever the status)
    if op is Operation.DELETE and facts.is_controller:
        return _refuse(
            op,
            "controller-not-deletable",
            f"Node {host} is the Infrastructure Controller node; it runs this controller and "
            "cannot be deleted.",
        )
    if op is Operation.ADMIN_REMOVE and spec is not None:
        if not spec.admin_removable:
            allowed = ", ".join(r.name for r in ROLES.values() if r.admin_removable)
            return _refuse(
                op,
                "admin-remove-role",
                f"Administrative Remove is not available for the {spec.name} role; "
                f"it applies only to {allowed}.",
                role=role,
            )
        if not facts.is_controller:
            return _refuse(
                op,
                "admin-remove-controller-only",
                "Administrative Remove applies only to roles on the Infrastructure "
                f"Controller node; node {host} is not it. Use Delete Assignment.",
                way_out="use Delete Assignment",
                role=role,
            )
        if facts.extension_count > ADMIN_REMOVE_MAX_EXTENSIONS:
            return _refuse(
                op,
                "admin-remove-extensions",
                "Administrative Remove is available only while fewer than three extensions "
                f"are provisioned; there are {facts.extension_count}.",
                way_out="remove extensions until fewer than three remain",
                role=role,
            )
    if op is Operation.WIZARD and facts.other_live_nodes:
        others = facts.other_live_nodes
        count = max(facts.other_live_count, len(others))
        shown = ", ".join(others[:5])
        more = f" and {count - 5} more" if count > 5 else ""
        return _refuse(
            op,
            "wizard-single-node",
            "The Configuration Wizard is available only while the Infrastructure Controller "
            f"node {host} is the only live node; {count} other live "
            f"node(s) exist: {shown}{more}. Set the Infrastructure Properties and assign "
            "roles node by node instead, or delete the other nodes first.",
            way_out="delete the other nodes first",
        )

    refused = _status_and_busy(op, facts, role=role)
    if refused is not None:
        return refused

    # rules that need more than the status
    if op is Operation.ACTIVATE and not facts.roles:
        return _refuse(
            op,
            "activate-needs-role",
            f"Activate is not available: node {host} has no role; assign at least one role first.",
            way_out="assign at least one role first",
        )
    if op is Operation.ASSIGN_ROLE:
        if spec is None:
            if not any(_assignable(code, facts) for code in ROLES):
                return _refuse(
                    op,
                    "no-role-assignable",
                    f"Node {host} already carries every role that can be assigned to it.",
                )
        else:
            refusal = _assign_refusal(spec.code, facts)
            if refusal is not None:
                return refusal
    if op is Operation.DELETE_ASSIGNMENT and role == CONTROLLER_ROLE:
        return _refuse(
            op,
            "controller-role-reserved",
            "The Infrastructure Controller role cannot be taken off the controller's node.",
            role=role,
        )
    if op is Operation.EDIT_NODE and removing_public_ip:
        needing = sorted(r for r in facts.roles if ROLES[r].public_ip is PublicIp.REQUIRED)
        if needing:
            return _refuse(
                op,
                "public-ip-required",
                f"Node {host} carries role(s) {', '.join(needing)}, which "
                "need a public IP; it cannot be removed.",
                way_out="delete those role assignments first",
            )
    confirm = _consequence(op, facts, activation_timeout)
    if op is Operation.ADMIN_REMOVE and role is not None:
        confirm = removal_warning(
            role,
            host,
            facts.carried_elsewhere.get(role, ()),
            facts.carried_count.get(role, 0),
        )
    return Decision(op, True, confirm=confirm, role=role)


def _assign_refusal(code: str, facts: NodeFacts) -> Decision | None:
    op = Operation.ASSIGN_ROLE
    spec = ROLES[code]
    host = facts.hostname
    if code == CONTROLLER_ROLE:
        return _refuse(
            op,
            "controller-role-reserved",
            "The Infrastructure Controller role belongs to the controller's own node; "
            "it cannot be assigned to another node.",
            role=code,
        )
    if code in facts.roles:
        return _refuse(
            op,
            "role-already-assigned",
            f"Node {host} already has the {spec.name} role; edit its parameters instead.",
            way_out="edit its parameters instead",
            role=code,
        )
    if spec.public_ip is PublicIp.REQUIRED and not facts.has_public_ip:
        return _refuse(
            op,
            "public-ip-required",
            f"The {spec.name} role needs a public IP and node {host} has none; "
            "set the node's public IP first.",
            way_out="set the node's public IP first",
            role=code,
        )
    if code == DISTRIBUTED_DATABASE_ROLE and facts.extension_count > DD_MAX_EXTENSIONS:
        return _refuse(
            op,
            "dd-extension-limit",
            "The Distributed Database role can be assigned only while at most "
            f"{DD_MAX_EXTENSIONS} extensions are provisioned; there are "
            f"{facts.extension_count}.",
            way_out=f"remove extensions until at most {DD_MAX_EXTENSIONS} remain",
            role=code,
        )
    return None


def _assignable(code: str, facts: NodeFacts) -> bool:
    return _assign_refusal(code, facts) is None


def assignable_roles(facts: NodeFacts) -> list[Decision]:
    """Each role of the catalogue but `ic`, with the answer for assigning it now."""
    return [
        decide(Operation.ASSIGN_ROLE, facts, role=code)
        for code in ROLES
        if code != CONTROLLER_ROLE and code not in facts.roles
    ]


# The administrator's node actions each interface offers, in the order they are shown.
NODE_ACTIONS: tuple[Operation, ...] = (
    Operation.ASSIGN_ROLE,
    Operation.EDIT_NODE,
    Operation.STANDBY,
    Operation.ACTIVATE,
    Operation.DEACTIVATE,
    Operation.FORCE_DEACTIVATE,
    Operation.MARK_DAMAGED,
    Operation.FIX,
    Operation.DELETE,
    Operation.REGENERATE_SESSION_KEY,
)
# Per assigned role.
ROLE_ACTIONS: tuple[Operation, ...] = (Operation.DELETE_ASSIGNMENT, Operation.ADMIN_REMOVE)


def node_actions(facts: NodeFacts, *, activation_timeout: float = 60.0) -> list[Decision]:
    """Every node action and every role action of one node, each with its answer."""
    answers = [decide(op, facts, activation_timeout=activation_timeout) for op in NODE_ACTIONS]
    for code in sorted(facts.roles):
        answers.extend(decide(op, facts, role=code) for op in ROLE_ACTIONS)
    return answers


# --- maintenance mode ----------------------------------------------------------------------
MAX_MAINTENANCE_REASON = 500


@dataclass(frozen=True, slots=True)
class MaintenanceAnswer:
    """May the node enter (or leave) maintenance now? Refused: the rule and the sentence."""

    entering: bool
    allowed: bool
    rule: str | None = None
    reason: str | None = None

    def check(self) -> None:
        if not self.allowed:
            raise RuleViolation(self.rule or "refused", self.reason or "refused")


def maintenance_change(facts: NodeFacts, *, entering: bool) -> MaintenanceAnswer:
    """Enter Maintenance: any live node not already in it; Leave Maintenance: a node in it
    (a node deleted while in maintenance may still leave it)."""
    host = facts.hostname
    if entering and facts.status is NodeStatus.DELETED:
        return MaintenanceAnswer(
            True,
            False,
            "maintenance-deleted",
            f"Node {host} is Deleted; a Deleted node cannot enter maintenance.",
        )
    if entering and facts.maintenance is not None:
        return MaintenanceAnswer(
            True,
            False,
            "maintenance-already-on",
            f"Node {host} is already in maintenance ({facts.maintenance}); take it out of "
            "maintenance first to give another reason.",
        )
    if not entering and facts.maintenance is None:
        return MaintenanceAnswer(
            False, False, "maintenance-not-on", f"Node {host} is not in maintenance."
        )
    return MaintenanceAnswer(entering, True)
