"""Every rule code the source can answer is in the one registry (domain/rules.py), which the
API's schema declares as the enum of `Problem.rule`."""

from __future__ import annotations

import ast
from pathlib import Path

from voipcloud.domain import rules
from voipcloud.domain.lifecycle import Operation
from voipcloud.store.errors import CONCURRENT_CHANGE, FALLBACK_RULE, UNIQUE_RULES

SOURCE = Path(__file__).resolve().parents[2] / "src" / "voipcloud"
# the web pages answer HTML, never a `rule` to a program
NOT_API = {"web"}
# callables whose argument at this position is a rule code
RULE_ARGUMENT = {"RuleViolation": 0, "AccessDenied": 0, "_refuse": 1, "Decision": 2}


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """The module's own string constants (`NAME = "text"` at its top level)."""
    strings: dict[str, str] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            for target in statement.targets:
                if isinstance(target, ast.Name) and isinstance(statement.value.value, str):
                    strings[target.id] = statement.value.value
    return strings


def raised_codes() -> dict[str, str]:
    """Each rule code in the source -> where it is: literal, or a module's string constant
    named where it is raised (`rule=TEST_REFUSED_RULE`, `events.TEST_REFUSED_RULE`); f-strings are
    reported as such, and any other name as `?name` (a code the scan cannot read)."""
    found: dict[str, str] = {}
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(SOURCE.rglob("*.py"))
        if path.relative_to(SOURCE).parts[0] not in NOT_API
    }
    constants: dict[str, str] = {}  # every module's, by name (the source reuses no name)
    for tree in trees.values():
        constants |= _module_strings(tree)
    for path, tree in trees.items():
        for node in ast.walk(tree):
            values: list[ast.expr] = []
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                position = RULE_ARGUMENT.get(name)
                if name.startswith("_") and not isinstance(func, ast.Name):
                    position = None  # a method of the same name (self._refuse) is another thing
                if position is not None and len(node.args) > position:
                    values.append(node.args[position])
                values += [k.value for k in node.keywords if k.arg == "rule"]
            elif isinstance(node, ast.Dict):  # {"detail": ..., "rule": "..."} answers
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "rule":
                        values.append(value)
            where = f"{path.relative_to(SOURCE)}:{getattr(node, 'lineno', 0)}"
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[value.value] = where
                elif isinstance(value, ast.JoinedStr):
                    found[ast.unparse(value)] = where
                elif isinstance(value, ast.Name | ast.Attribute):
                    name = value.id if isinstance(value, ast.Name) else value.attr
                    found[constants.get(name, f"?{name}")] = where
    return found


def test_every_literal_rule_code_in_the_source_is_registered() -> None:
    found = raised_codes()
    assert len(found) >= 20, found  # the scan sees the raises
    dynamic = {code: where for code, where in found.items() if code.startswith("f")}
    # the one computed family: the status table's "<operation>-status"
    assert set(dynamic) <= {"f'{operation}-status'"}, dynamic
    unread = {code: where for code, where in found.items() if code.startswith("?")}
    # a rollout member's rule read back from its row (recorded from a registered refusal)
    assert {(code, where.partition(":")[0]) for code, where in unread.items()} == {
        ("?rule", "store/rollouts.py")
    }, unread
    missing = {
        code: where
        for code, where in found.items()
        if code not in dynamic and code not in unread and code not in rules.RULES
    }
    assert not missing, f"register these in domain/rules.py: {missing}"


def test_the_computed_and_table_driven_codes_are_registered() -> None:
    expected = {f"{op.value}-status" for op in Operation}
    expected |= {rule for rule, _sentence in UNIQUE_RULES.values()}
    expected |= {FALLBACK_RULE[0], CONCURRENT_CHANGE[0]}
    expected |= {"role-forbidden", "token-read-only", "login-throttled", "database-unavailable"}
    assert expected <= set(rules.RULES), expected - set(rules.RULES)


def test_codes_are_kebab_case_with_a_status_and_a_summary() -> None:
    for code, rule in rules.RULES.items():
        assert code == rule.code
        assert code.replace("-", "").isalnum(), code
        assert code == code.lower(), code
        assert rule.status in {403, 409, 412, 428, 429, 503}, rule
        assert rule.summary, rule
    assert rules.codes() == sorted(rules.RULES)
