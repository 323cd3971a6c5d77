"""No module outside the domain decides a rule (issue 13: one rulebook).

The rulebook is `voipcloud.domain.policy` over the status table of `voipcloud.domain.lifecycle`.
Everything else asks it. This test reads the source and fails when:
- a rule code the rulebook decides is written anywhere outside the allowed places (a module
  that spells `"public-ip-required"` is deciding, or re-deciding, that rule);
- the status table's own checks (`lifecycle.plan`, `lifecycle.allowed`, `check_not_busy`) are
  called outside the domain and `services/transitions.py` (which applies a planned change);
- an extension limit is defined anywhere but the policy.
"""

from __future__ import annotations

import re
from pathlib import Path

from voipcloud.domain import policy
from voipcloud.domain.lifecycle import ADMIN_OPERATIONS, Operation
from voipcloud.domain.policy import Connectivity, NodeFacts, decide
from voipcloud.domain.roles import ROLES
from voipcloud.domain.statuses import NodeStatus

SRC = Path(__file__).resolve().parents[2] / "src" / "voipcloud"
# where a rule may be decided (policy, status table), listed (the registry of codes for the
# API schema) or applied after the decision (transitions)
ALLOWED_RULE_PLACES = {
    "domain/policy.py",
    "domain/lifecycle.py",
    "domain/rules.py",
    "domain/wizard.py",  # asks the policy (check_available, each role it adds)
    # a race lost on the database's unique index is named as the rule that index enforces
    "store/errors.py",
}
ALLOWED_TABLE_CALLERS = {"domain/lifecycle.py", "domain/policy.py", "services/transitions.py"}


def _rules_the_policy_decides() -> set[str]:
    """Every rule code `decide` answers, found by asking it over a grid of facts."""
    found: set[str] = set()
    for status in NodeStatus:
        for controller in (False, True):
            for count in (0, 3, 4):
                for pending in (None, "activate", "deactivate"):
                    for roles in (frozenset(), frozenset({"sip", "ic"}), frozenset(ROLES)):
                        facts = NodeFacts(
                            hostname="h",
                            status=status,
                            roles=roles,
                            is_controller=controller,
                            extension_count=count,
                            pending=None if pending is None else policy.PendingOperation(pending),
                            agent=Connectivity.NEVER,
                            other_live_nodes=("x (Offline)",) if count == 4 else (),
                        )
                        for op in ADMIN_OPERATIONS:
                            for role in (None, *ROLES):
                                d = decide(op, facts, role=role, removing_public_ip=True)
                                if d.rule:
                                    found.add(d.rule)
    return found


def _python_files() -> list[tuple[str, str]]:
    return [
        (str(p.relative_to(SRC)), p.read_text(encoding="utf-8")) for p in sorted(SRC.rglob("*.py"))
    ]


def test_the_grid_finds_the_rules() -> None:
    rules = _rules_the_policy_decides()
    # the rules outside the status table, each found
    for code in (
        "controller-not-deletable",
        "admin-remove-role",
        "admin-remove-controller-only",
        "admin-remove-extensions",
        "dd-extension-limit",
        "public-ip-required",
        "activate-needs-role",
        "controller-role-reserved",
        "role-already-assigned",
        "operation-in-progress",
        "wizard-single-node",
        "delete-status",
    ):
        assert code in rules, code


def test_no_module_outside_the_domain_spells_a_rule_code() -> None:
    rules = _rules_the_policy_decides()
    offenders = []
    for name, text in _python_files():
        if name in ALLOWED_RULE_PLACES:
            continue
        for code in rules:
            if re.search(rf"[\"']{re.escape(code)}[\"']", text):
                offenders.append(f"{name}: {code}")
    assert not offenders, "decided outside the rulebook: " + ", ".join(offenders)


def test_the_status_table_is_asked_only_through_the_rulebook() -> None:
    pattern = re.compile(r"lifecycle\.(plan|allowed|check_not_busy)\(|\bcheck_not_busy\(")
    offenders = [
        name
        for name, text in _python_files()
        if name not in ALLOWED_TABLE_CALLERS and pattern.search(text)
    ]
    assert not offenders, offenders


def test_extension_limits_are_defined_once() -> None:
    pattern = re.compile(r"^\s*(DD_MAX_EXTENSIONS|ADMIN_REMOVE_MAX_EXTENSIONS)\s*=", re.M)
    places = [name for name, text in _python_files() if pattern.search(text)]
    assert places == ["domain/policy.py"]


def test_every_refusal_has_a_sentence_naming_the_node() -> None:
    facts = NodeFacts(hostname="edge-07", status=NodeStatus.ONLINE, roles=frozenset({"sip"}))
    for op in (Operation.DELETE, Operation.ASSIGN_ROLE, Operation.ACTIVATE, Operation.FIX):
        d = decide(op, facts, role="pbx" if op is Operation.ASSIGN_ROLE else None)
        assert not d.allowed
        assert d.rule
        assert d.reason
        assert "edge-07" in d.reason
