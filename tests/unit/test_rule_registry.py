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


def raised_codes() -> dict[str, str]:
    """Each literal rule code in the source -> where it is; f-strings are reported as such."""
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path.relative_to(SOURCE).parts[0] in NOT_API:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
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
    return found


def test_every_literal_rule_code_in_the_source_is_registered() -> None:
    found = raised_codes()
    assert len(found) >= 20, found  # the scan sees the raises
    dynamic = {code: where for code, where in found.items() if code.startswith("f")}
    # the one computed family: the status table's "<operation>-status"
    assert set(dynamic) <= {"f'{operation}-status'"}, dynamic
    missing = {
        code: where
        for code, where in found.items()
        if code not in dynamic and code not in rules.RULES
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
