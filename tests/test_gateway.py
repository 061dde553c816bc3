"""Gateway rules: the filter parser, its compilation to disjunctive normal form, and decisions on both engines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import regorus

from certposture import engine
from certposture.errors import InputError
from certposture.gateway import (
    MAX_CONJUNCTIONS,
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING_DEPTH,
    FilterSyntaxError,
    compile_filter,
    load_gateway_document,
)
from tests.opa_support import json_differences, opa_engine, policy_sources, require_opa

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gateway"
DECISION_QUERY = "data.certposture.gateway.decision"
EVALUATED_AT = "2026-12-04T20:00:00Z"
CERT_CHECK = "6bb4d1f2-3c4e-4a0e-9d1c-0f6f2b1e7a55"


def _lit(field: str, op: str, values: list[str], *, negated: bool = False) -> dict[str, Any]:
    return {"field": field, "op": op, "values": values, "negated": negated}


PASSED = "device_posture.checks.passed"
FAILED = "device_posture.checks.failed"
EMAIL = "identity.email"
GROUPS = "identity.groups.name"

PARSE_CASES = [
    ('any(device_posture.checks.passed[*] in {"id1" "id2"})', [[_lit(PASSED, "any_in", ["id1", "id2"])]]),
    ('any(device_posture.checks.failed[*] in {"id1"})', [[_lit(FAILED, "any_in", ["id1"])]]),
    ('any(device_posture.checks.passed[*] == "id1")', [[_lit(PASSED, "any_in", ["id1"])]]),
    ('identity.email == "a@example.com"', [[_lit(EMAIL, "eq", ["a@example.com"])]]),
    ('identity.email eq "a@example.com"', [[_lit(EMAIL, "eq", ["a@example.com"])]]),
    ('identity.email in {"a@x" "b@y"}', [[_lit(EMAIL, "in", ["a@x", "b@y"])]]),
    ('identity.email in {"a@x" "a@x"}', [[_lit(EMAIL, "in", ["a@x"])]]),
    ('any(identity.groups.name[*] in {"eng" "ops"})', [[_lit(GROUPS, "any_in", ["eng", "ops"])]]),
    ('any(identity.groups.name[*] == "eng")', [[_lit(GROUPS, "any_in", ["eng"])]]),
    ('identity.groups.name == "eng"', [[_lit(GROUPS, "any_in", ["eng"])]]),
    ('identity.groups.name in {"eng" "ops"}', [[_lit(GROUPS, "any_in", ["eng", "ops"])]]),
    ('identity.email == "say \\"hi\\" \\\\ bye"', [[_lit(EMAIL, "eq", ['say "hi" \\ bye'])]]),
    ('not identity.email == "a"', [[_lit(EMAIL, "eq", ["a"], negated=True)]]),
    ('!identity.email == "a"', [[_lit(EMAIL, "eq", ["a"], negated=True)]]),
    ('not not identity.email == "a"', [[_lit(EMAIL, "eq", ["a"])]]),
    (
        'identity.email == "a" and identity.groups.name == "g"',
        [[_lit(EMAIL, "eq", ["a"]), _lit(GROUPS, "any_in", ["g"])]],
    ),
    (
        'identity.email == "a" && identity.groups.name == "g"',
        [[_lit(EMAIL, "eq", ["a"]), _lit(GROUPS, "any_in", ["g"])]],
    ),
    (
        'identity.email == "a" or identity.groups.name == "g"',
        [[_lit(EMAIL, "eq", ["a"])], [_lit(GROUPS, "any_in", ["g"])]],
    ),
    (
        'identity.email == "a" || identity.groups.name == "g"',
        [[_lit(EMAIL, "eq", ["a"])], [_lit(GROUPS, "any_in", ["g"])]],
    ),
    # and binds tighter than or, and not tighter than and.
    (
        'identity.email == "a" or identity.email == "b" and not identity.groups.name == "g"',
        [[_lit(EMAIL, "eq", ["a"])], [_lit(EMAIL, "eq", ["b"]), _lit(GROUPS, "any_in", ["g"], negated=True)]],
    ),
    (
        '(identity.email == "a" or identity.email == "b") and identity.groups.name == "g"',
        [
            [_lit(EMAIL, "eq", ["a"]), _lit(GROUPS, "any_in", ["g"])],
            [_lit(EMAIL, "eq", ["b"]), _lit(GROUPS, "any_in", ["g"])],
        ],
    ),
    # De Morgan: not (a and b) is (not a) or (not b). And not (a or b) is (not a) and (not b).
    (
        'not (identity.email == "a" and identity.groups.name == "g")',
        [[_lit(EMAIL, "eq", ["a"], negated=True)], [_lit(GROUPS, "any_in", ["g"], negated=True)]],
    ),
    (
        '!(identity.email == "a" || identity.groups.name == "g")',
        [[_lit(EMAIL, "eq", ["a"], negated=True), _lit(GROUPS, "any_in", ["g"], negated=True)]],
    ),
    (
        '  ( ( identity.email  ==  "a" ) )  ',
        [[_lit(EMAIL, "eq", ["a"])]],
    ),
]


@pytest.mark.parametrize(("expression", "expected"), PARSE_CASES, ids=[case[0] for case in PARSE_CASES])
def test_filter_compiles_to_dnf(expression: str, expected: list[list[dict[str, Any]]]) -> None:
    assert compile_filter(expression) == expected


# (expression, 1-based column, text the message quotes from that column or None at the end, words of the problem)
REJECT_CASES = [
    ('identity.name == "x"', 1, "'identity.name", "unknown field 'identity.name'"),
    ('identity.email == "x" and device.os == "linux"', 27, "'device.os", "unknown field 'device.os'"),
    ('lower(identity.email) == "x"', 1, "'lower(", "unknown function 'lower'"),
    ('identity.email matches ".*@example.com"', 16, "'matches", "unsupported operator 'matches'"),
    ('identity.email ~ "x"', 16, "'~", "unsupported operator '~'"),
    ('identity.email != "x"', 16, "'!=", "unsupported operator '!='"),
    ('identity.email == "x" xor identity.email == "y"', 23, "'xor", "unexpected text after the end"),
    ('identity.email == "abc', 19, "'\"abc'", "unterminated string"),
    ('identity.email == "a\\n"', 21, "'\\\\n", "invalid escape"),
    ('(identity.email == "x"', 23, None, "closing parenthesis is missing"),
    ('any(identity.groups.name[*] in {"eng"}', 39, None, "closing parenthesis of any"),
    ('identity.email == "x")', 22, "')'", "unexpected text after the end"),
    ('identity.email == "x" identity.email', 23, "'identity.email'", "unexpected text after the end"),
    ("", 1, "''", "empty expression"),
    ("   ", 1, "'   '", "empty expression"),
    ('identity.email == "x" and', 26, None, "expected a comparison"),
    ("not", 4, None, "expected a comparison"),
    ("identity.email in {}", 20, "'}'", "at least one string"),
    ('identity.email in {"a", "b"}', 23, "',", "unexpected character ','"),
    ('device_posture.checks.passed == "id"', 1, "'device_posture.checks.passed", "is a list"),
    ('any(identity.email[*] == "x")', 5, "'identity.email", "unknown field 'identity.email'"),
    ('any(identity.groups.name in {"eng"})', 26, "'in", "expected [*]"),
    ("identity.email == x", 19, "'x'", "expected a string"),
]


@pytest.mark.parametrize(
    ("expression", "column", "quoted", "problem"),
    REJECT_CASES,
    ids=[case[0] or "(empty)" for case in REJECT_CASES],
)
def test_filter_rejected_with_column(expression: str, column: int, quoted: str | None, problem: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(expression, "rule r1 identity")

    message = str(caught.value)
    assert caught.value.column == column
    assert message.startswith(f"rule r1 identity: column {column}: ")
    assert problem in message
    assert (f"at {quoted}" if quoted is not None else "at the end of the expression") in message
    assert "supported: any(F[*] in" in message
    assert "\n" not in message


def test_rejection_is_input_error() -> None:
    with pytest.raises(InputError):
        compile_filter('identity.name == "x"')


def test_expression_length_limit() -> None:
    long_value = "a" * MAX_EXPRESSION_LENGTH
    with pytest.raises(FilterSyntaxError, match=f"more than the maximum {MAX_EXPRESSION_LENGTH}"):
        compile_filter(f'identity.email == "{long_value}"')


def test_nesting_depth_limit() -> None:
    allowed = "(" * MAX_NESTING_DEPTH + 'identity.email == "x"' + ")" * MAX_NESTING_DEPTH
    too_deep = "(" + allowed + ")"
    negations = "not " * (MAX_NESTING_DEPTH + 1) + 'identity.email == "x"'

    assert compile_filter(allowed) == [[_lit(EMAIL, "eq", ["x"])]]
    with pytest.raises(FilterSyntaxError, match=f"column {MAX_NESTING_DEPTH + 1}: nesting deeper than"):
        compile_filter(too_deep)
    with pytest.raises(FilterSyntaxError, match="nesting deeper than"):
        compile_filter(negations)


def test_dnf_size_limit() -> None:
    # Each parenthesized pair doubles the alternatives: 2**8 fits, 2**9 does not.
    pair = '(identity.email == "a{0}" or identity.email == "b{0}")'
    fits = " and ".join(pair.format(index) for index in range(8))
    too_large = " and ".join(pair.format(index) for index in range(9))

    assert len(compile_filter(fits)) == MAX_CONJUNCTIONS
    with pytest.raises(InputError, match=f"more than {MAX_CONJUNCTIONS} alternatives"):
        compile_filter(too_large, "rule r1 identity")


def test_negated_disjunction_size_limit() -> None:
    # not (x and y) becomes an or, so negated ands are counted too.
    pair = '(identity.email == "a{0}" and identity.email == "b{0}")'
    too_large = "not (" + " or ".join(pair.format(index) for index in range(9)) + ")"

    with pytest.raises(InputError, match="alternatives"):
        compile_filter(too_large)


# Loading documents


def _rule(rule_id: str, precedence: int, **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "name": f"Rule {rule_id}", "precedence": precedence, "action": "block", **fields}


def _load(document: Any) -> dict[str, Any]:
    return load_gateway_document(orjson.dumps(document), "rules.json")


def test_load_cloudflare_envelope() -> None:
    document = load_gateway_document((FIXTURES / "cloudflare-list-response.json").read_bytes(), "export")

    assert document["default_action"] == "allow"
    assert [rule["precedence"] for rule in document["rules"]] == [5, 10, 20, 30]
    first = document["rules"][0]
    assert first["enabled"] is False
    assert first["identity"] == [[_lit(EMAIL, "in", ["contractor@example.com"])]]
    assert first["device_posture"] is None
    assert first["source"] == {"identity": 'identity.email in {"contractor@example.com"}'}
    assert set(first) == {
        "id",
        "name",
        "precedence",
        "action",
        "enabled",
        "identity",
        "device_posture",
        "source",
    }


def test_load_plain_list() -> None:
    document = _load([_rule("b", 2), _rule("a", 1, identity='identity.email == "x"')])

    assert [rule["id"] for rule in document["rules"]] == ["a", "b"]
    assert document["rules"][1]["identity"] is None
    assert document["rules"][1]["source"] == {}


def test_load_default_action() -> None:
    document = load_gateway_document((FIXTURES / "default-block.json").read_bytes(), "default-block.json")

    assert document["default_action"] == "block"
    assert document["rules"][0]["device_posture"] == [
        [_lit(PASSED, "any_in", ["device-cert"]), _lit(FAILED, "any_in", ["disk-encryption"], negated=True)]
    ]


def test_load_rejects_duplicate_precedence() -> None:
    with pytest.raises(InputError, match="rules a and b share precedence 1"):
        _load([_rule("a", 1), _rule("b", 1)])


def test_load_rejects_duplicate_id() -> None:
    with pytest.raises(InputError, match="two rules have id a"):
        _load([_rule("a", 1), _rule("a", 2)])


def test_load_names_rule_and_property_in_syntax_error() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        _load([_rule("a", 1), _rule("b", 2, device_posture="any(device_posture.checks.passed[*] in {x})")])

    assert str(caught.value).startswith(
        "rules.json: rule 2 (id b) device_posture: column 41: expected a string in the set"
    )


def test_load_rejects_field_in_wrong_property() -> None:
    with pytest.raises(InputError, match=re.escape("identity may use identity.email, identity.groups.name")):
        _load([_rule("a", 1, identity='any(device_posture.checks.passed[*] == "x")')])


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"rules": [], "default_action": "isolate"}, "default_action 'isolate' is invalid"),
        ({"rules": [], "extra": 1}, "unknown top-level field\\(s\\) extra"),
        ({"something": []}, "expected a list of Gateway rules"),
        ({"result": {}}, "the rules must be a JSON list"),
        (["rule"], "rule 1: expected a JSON object"),
        ([{"name": "n", "precedence": 1, "action": "block"}], "id None is invalid"),
        ([_rule("a", 1, name="")], "name '' is invalid"),
        ([_rule("a", 1, action=None)], "action None is invalid"),
        ([_rule("a", True)], "precedence true is invalid"),
        ([_rule("a", 1.5)], "precedence 1.5 is invalid"),
        ([_rule("a", 2**53)], "below 2\\*\\*53"),
        ([_rule("a", 1, enabled="yes")], "enabled 'yes' is invalid"),
        ([_rule("a", 1, identity=["identity.email"])], "identity must be a filter expression string"),
    ],
)
def test_load_rejects_invalid_document(document: Any, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        _load(document)


def test_load_rejects_invalid_json() -> None:
    with pytest.raises(InputError, match=re.escape("rules.json: not valid JSON")):
        load_gateway_document(b"{", "rules.json")


# Decisions


def _posture_entry(check_id: str, passed: bool, evaluated_at: str, expiration: str | None) -> dict[str, Any]:
    return {
        "rule_id": check_id,
        "rule_name": "Corp device certificate",
        "status": "passed" if passed else "failed",
        "passed": passed,
        "evaluated_at": evaluated_at,
        "expiration": expiration,
    }


ENGINEER = {"email": "alice@example.com", "groups": ["eng"]}
SALES = {"email": "bob@example.com", "groups": ["sales"]}
FRESH_PASS = _posture_entry(CERT_CHECK, True, "2026-12-04T19:55:00Z", "1h")
EXPIRED_PASS = _posture_entry(CERT_CHECK, True, "2026-12-04T18:00:00Z", "1h")
FRESH_FAIL = _posture_entry(CERT_CHECK, False, "2026-12-04T19:55:00Z", "1h")

# (fixture, identity, posture entries, expected action, expected rule id or None for the default)
DECISION_CASES = [
    (
        "cloudflare-list-response.json",
        ENGINEER,
        [FRESH_PASS],
        "allow",
        "2f6b5a8e-7c1d-4e0a-9b3f-5d8c1a2e4f60",
    ),
    (
        "cloudflare-list-response.json",
        ENGINEER,
        [FRESH_FAIL],
        "block",
        "9d0e3c7a-41b2-4f85-a6d9-0c2e8b5f1a34",
    ),
    (
        "cloudflare-list-response.json",
        ENGINEER,
        [EXPIRED_PASS],
        "block",
        "9d0e3c7a-41b2-4f85-a6d9-0c2e8b5f1a34",
    ),
    ("cloudflare-list-response.json", ENGINEER, [], "block", "c3e8f1a6-5d2b-4a90-b7c4-8e1f0d6a2b75"),
    ("cloudflare-list-response.json", SALES, [FRESH_PASS], "block", "c3e8f1a6-5d2b-4a90-b7c4-8e1f0d6a2b75"),
    (
        "cloudflare-list-response.json",
        {"email": "contractor@example.com", "groups": []},
        [FRESH_PASS],
        "block",
        "c3e8f1a6-5d2b-4a90-b7c4-8e1f0d6a2b75",
    ),
    (
        "default-block.json",
        {"email": "admin@example.com"},
        [_posture_entry("device-cert", True, EVALUATED_AT, None)],
        "allow",
        "admins",
    ),
    (
        "default-block.json",
        {"email": "eve@example.com", "groups": ["admins"]},
        [_posture_entry("device-cert", True, EVALUATED_AT, None)],
        "allow",
        "admins",
    ),
    (
        "default-block.json",
        {"email": "admin@example.com"},
        [
            _posture_entry("device-cert", True, EVALUATED_AT, None),
            _posture_entry("disk-encryption", False, EVALUATED_AT, None),
        ],
        "block",
        None,
    ),
    (
        "default-block.json",
        {"email": "eve@example.com"},
        [_posture_entry("device-cert", True, EVALUATED_AT, None)],
        "block",
        None,
    ),
]
DECISION_IDS = [f"{case[0]}-{index}" for index, case in enumerate(DECISION_CASES)]


def _config(fixture: str) -> dict[str, Any]:
    document = load_gateway_document((FIXTURES / fixture).read_bytes(), fixture)
    return {"gateway": document, "evaluated_at": EVALUATED_AT}


def _decide_regorus(config: dict[str, Any], policy_input: dict[str, Any]) -> Any:
    rego = regorus.Engine()
    engine.load_policies(rego, [engine.shipped_policy_dir()])
    rego.add_data_json(orjson.dumps({engine.CONFIG_ROOT: config}).decode())
    rego.set_input_json(orjson.dumps(policy_input).decode())
    return orjson.loads(rego.eval_rule_as_json(DECISION_QUERY))


@pytest.mark.parametrize(
    ("fixture", "identity", "posture", "action", "rule_id"), DECISION_CASES, ids=DECISION_IDS
)
def test_decision_on_regorus(
    fixture: str, identity: dict[str, Any], posture: list[dict[str, Any]], action: str, rule_id: str | None
) -> None:
    decision = _decide_regorus(_config(fixture), {"identity": identity, "posture": posture})

    assert decision["action"] == action
    assert decision["default"] is (rule_id is None)
    assert (decision["rule"] or {}).get("id") == rule_id
    assert isinstance(decision["reason"], str)


def test_decision_reason_and_posture() -> None:
    decision = _decide_regorus(
        _config("cloudflare-list-response.json"), {"identity": ENGINEER, "posture": [EXPIRED_PASS]}
    )

    assert decision["rule"] == {
        "id": "9d0e3c7a-41b2-4f85-a6d9-0c2e8b5f1a34",
        "name": "Block failed or expired certificate checks",
        "precedence": 10,
    }
    assert decision["reason"] == (
        'rule "Block failed or expired certificate checks" (precedence 10) matched device posture '
        f'`any(device_posture.checks.failed[*] in {{"{CERT_CHECK}"}})`, so its action "block" applies'
    )
    assert [check["rule_id"] for check in decision["posture"]] == [CERT_CHECK]
    assert decision["posture"][0]["expired"] is True
    assert decision["posture"][0]["passed"] is False


def test_default_decision_reason() -> None:
    decision = _decide_regorus(
        _config("default-block.json"), {"identity": {"email": "eve@example.com"}, "posture": []}
    )

    assert decision["reason"] == 'no enabled rule matched, so the default action "block" applies'
    assert decision["rule"] is None


def test_decisions_agree_on_opa() -> None:
    opa = require_opa()
    for fixture in sorted({case[0] for case in DECISION_CASES}):
        config = _config(fixture)
        instance = opa_engine(opa, policy_sources(), {engine.CONFIG_ROOT: config})
        try:
            for index, (case_fixture, identity, posture, _action, _rule_id) in enumerate(DECISION_CASES):
                if case_fixture != fixture:
                    continue
                policy_input = {"identity": identity, "posture": posture}
                on_opa = instance.eval_document("certposture.gateway.decision", policy_input)
                on_regorus = _decide_regorus(config, policy_input)
                assert json_differences(on_regorus, on_opa) == [], f"case {DECISION_IDS[index]}"
        finally:
            instance.close()


def test_null_precedence_named_as_json() -> None:
    document = [{"id": "a", "name": "A", "precedence": None, "action": "block"}]

    with pytest.raises(InputError, match=r"precedence null is invalid"):
        load_gateway_document(orjson.dumps(document), "gateway.json")
