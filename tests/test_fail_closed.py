"""Failing closed: malformed facts, missing or edited store data and policy errors never make a rule pass.

Each case compares the whole results document and the whole standard error,
and then checks that no output (JSON, table, posture log) reports the rule as
passed. Exit codes follow the README: 3 when the facts are missing or invalid,
the store is damaged or the policies fail, and 2 for no rules stored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.certgen import CertKey, make_leaf
from tests.test_end_to_end import FULL_RULE, HOSTNAME, SERIAL, Cli, ca, cli, good_leaf, pem_pair

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

AT = "2026-12-04T19:00:00Z"
# Certificates are valid around the fixed evaluation time, so the results do not depend on today's date.
VALIDITY = {
    "not_before": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "not_after": dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
}
IDENTITY = ["--hostname", HOSTNAME, "--serial-number", SERIAL]
FIX_FACTS = "pass the output of `certposture collect`"


class Setup:
    """Two stored rules whose certificates pass, and facts collected from them."""

    def __init__(self, cli: Cli, ca: CertKey) -> None:
        self.cli = cli
        self.ca_id = cli.add_ca(ca)
        self.leaf = good_leaf(ca, **VALIDITY)
        self.cert_path, self.key_path = pem_pair(cli, self.leaf)
        self.paths = [self.cert_path, self.key_path]
        self.rule_ids = [
            cli.add_rule(self.ca_id, **FULL_RULE, locations={"paths": self.paths}),
            cli.add_rule(
                self.ca_id,
                name="Second rule",
                cn="${serial_number}_mycompany",
                locations={"paths": self.paths},
            ),
        ]
        self.facts_path = cli.work / "facts.json"
        code, _, err = cli.run("collect", *IDENTITY, *self.path_options(), "-o", str(self.facts_path))
        assert code == 0, err
        self.facts: dict[str, Any] = json.loads(self.facts_path.read_text())

    def path_options(self) -> list[str]:
        return ["--path", self.cert_path, "--path", self.key_path]

    def rules(self) -> list[dict[str, Any]]:
        code, out, _ = self.cli.run("rules", "list")
        assert code == 0
        rules: list[dict[str, Any]] = json.loads(out)
        return rules

    def write_facts(self, name: str, content: bytes) -> Path:
        path = self.cli.work / name
        path.write_bytes(content)
        return path


@pytest.fixture
def setup(cli: Cli, ca: CertKey) -> Setup:
    return Setup(cli, ca)


def error_result(rule: dict[str, Any], message: str) -> dict[str, Any]:
    """The result that evaluate reports for a rule it could not evaluate."""
    return {
        "rule_id": rule["id"],
        "rule_name": rule["name"],
        "type": rule["type"],
        "status": "error",
        "passed": False,
        "matched_certificates": [],
        "candidates": [],
        "reasons": [
            {
                "code": "evaluation_error",
                "condition": "rule",
                "message": f"the rule could not be evaluated, so it does not pass: {message}",
                "expected": None,
                "actual": None,
            }
        ],
        "errors": [],
    }


def policy_error_result(rule: dict[str, Any], reasons: list[dict[str, Any]]) -> dict[str, Any]:
    """The result that the policy reports for a rule it rejects before looking at certificates."""
    return {
        "rule_id": rule["id"],
        "rule_name": rule.get("name"),
        "type": rule.get("type"),
        "status": "error",
        "passed": False,
        "matched_certificates": [],
        "candidates": [],
        "reasons": reasons,
        "errors": [],
    }


def reason(condition: str, code: str, message: str, expected: Any, actual: Any) -> dict[str, Any]:
    return {"condition": condition, "code": code, "message": message, "expected": expected, "actual": actual}


def document_without_facts(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"evaluated_at": AT, "device": {"hostname": None, "serial_number": None}, "results": results}


def document_with_facts(collected_at: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "evaluated_at": AT,
        "collected_at": collected_at,
        "device": {"hostname": HOSTNAME, "serial_number": SERIAL},
        "results": results,
    }


def assert_nothing_passed(cli: Cli, document: dict[str, Any]) -> None:
    """Check the results and every posture-log record so far: none is passed."""
    for result in document["results"]:
        assert result["status"] != "passed", result
        assert result["passed"] is False, result
        assert result["matched_certificates"] == [], result
    code, out, err = cli.run("logs", "--format", "json")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) >= len(document["results"])
    for record in records:
        assert record["passed"] is False, record
        assert record["received"]["status"] != "passed", record
        assert record["received"]["matched_certificates"] == [], record


def edit_store(cli: Cli, statement: str, *parameters: Any) -> None:
    connection = sqlite3.connect(cli.home / "certposture.db")
    try:
        with connection:
            assert connection.execute(statement, parameters).rowcount == 1
    finally:
        connection.close()


def edit_rule(cli: Cli, rule_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Change a stored rule's JSON in place with sqlite3, bypassing validation; return the new rule."""
    connection = sqlite3.connect(cli.home / "certposture.db")
    try:
        (text,) = connection.execute("SELECT rule FROM rules WHERE id = ?", (rule_id,)).fetchone()
    finally:
        connection.close()
    rule: dict[str, Any] = json.loads(text)
    change(rule)
    edit_store(cli, "UPDATE rules SET rule = ? WHERE id = ?", json.dumps(rule), rule_id)
    return rule


# Malformed facts


def _without(document: dict[str, Any], *keys: str | int) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    parent: Any = copy
    for key in keys[:-1]:
        parent = parent[key]
    del parent[keys[-1]]
    return copy


def _with(document: dict[str, Any], value: Any, *keys: str | int) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    parent: Any = copy
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    return copy


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _end_position(data: bytes) -> str:
    """Return where a JSON parser stops at the end of ``data``: line and column, as pydantic reports them."""
    line = data.count(b"\n") + 1
    column = len(data) - data.rfind(b"\n") - 1
    return f"line {line} column {column}"


def _truncated(raw: bytes) -> bytes:
    return raw[: raw.index(b'"device"')]


def _trailing_brace(raw: bytes) -> bytes:
    return raw + b"}"


MALFORMED_FACTS: list[tuple[str, Callable[[dict[str, Any], bytes], bytes], Callable[[bytes], str]]] = [
    ("empty", lambda facts, raw: b"", lambda raw: "facts are not valid JSON (Invalid JSON: EOF while parsing a value at line 1 column 0)"),
    ("whitespace", lambda facts, raw: b" \n\t\n", lambda raw: "facts are not valid JSON (Invalid JSON: EOF while parsing a value at line 3 column 0)"),
    ("open_brace", lambda facts, raw: b"{", lambda raw: "facts are not valid JSON (Invalid JSON: EOF while parsing an object at line 1 column 1)"),
    ("truncated", lambda facts, raw: _truncated(raw), lambda raw: f"facts are not valid JSON (Invalid JSON: EOF while parsing a value at {_end_position(_truncated(raw))})"),
    ("trailing_brace", lambda facts, raw: _trailing_brace(raw), lambda raw: f"facts are not valid JSON (Invalid JSON: trailing characters at {_end_position(_trailing_brace(raw))})"),
    ("null", lambda facts, raw: b"null", lambda raw: "facts are invalid at document: Input should be an object (1 problem(s))"),
    ("array", lambda facts, raw: _json([facts]), lambda raw: "facts are invalid at document: Input should be an object (1 problem(s))"),
    ("no_device", lambda facts, raw: _json(_without(facts, "device")), lambda raw: "facts are invalid at device: Field required (1 problem(s))"),
    ("no_private_key", lambda facts, raw: _json(_without(facts, "certificates", 0, "private_key")), lambda raw: "facts are invalid at certificates.0.private_key: Field required (1 problem(s))"),
    ("key_present_text", lambda facts, raw: _json(_with(facts, "yes", "certificates", 0, "private_key", "present")), lambda raw: "facts are invalid at certificates.0.private_key.present: Input should be a valid boolean (1 problem(s))"),
    ("signed_by_text", lambda facts, raw: _json(_with(facts, "ca", "certificates", 0, "signed_by")), lambda raw: "facts are invalid at certificates.0.signed_by: Input should be a valid array (1 problem(s))"),
    ("certificates_text", lambda facts, raw: _json(_with(facts, "everything is fine", "certificates")), lambda raw: "facts are invalid at certificates: Input should be a valid array (1 problem(s))"),
    ("unknown_field", lambda facts, raw: _json(_with(facts, True, "trusted")), lambda raw: "facts are invalid at trusted: Extra inputs are not permitted (1 problem(s))"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make", "problem"), MALFORMED_FACTS, ids=[case[0] for case in MALFORMED_FACTS]
)
def test_malformed_facts_fail_closed(
    setup: Setup,
    name: str,
    make: Callable[[dict[str, Any], bytes], bytes],
    problem: Callable[[bytes], str],
) -> None:
    raw = setup.facts_path.read_bytes()
    path = setup.write_facts(f"{name}.json", make(setup.facts, raw))
    message = f"{path}: {problem(raw)}; {FIX_FACTS}"

    code, out, err = setup.cli.run("evaluate", str(path), "--at", AT)

    assert code == 3
    assert err == f"error: {message}\n"
    document = json.loads(out)
    assert document == document_without_facts([error_result(rule, message) for rule in setup.rules()])
    assert_nothing_passed(setup.cli, document)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "standard input is empty; if it comes from a pipe, check the command before it"),
        (b"{", f"-: facts are not valid JSON (Invalid JSON: EOF while parsing an object at line 1 column 1); {FIX_FACTS}"),
    ],
    ids=["empty", "open_brace"],
)  # fmt: skip
def test_malformed_stdin_fails_closed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, content: bytes, problem: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))

    code, out, err = setup.cli.run("evaluate", "-", "--at", AT)

    assert code == 3
    document = json.loads(out)
    assert document == document_without_facts([error_result(rule, problem) for rule in setup.rules()])
    assert err == f"error: {problem}\n"
    assert_nothing_passed(setup.cli, document)


def test_malformed_facts_table_and_decision_log(setup: Setup) -> None:
    path = setup.write_facts("broken.json", b"{")
    decision_log = setup.cli.work / "decisions.jsonl"

    code, out, _ = setup.cli.run(
        "evaluate", str(path), "--at", AT, "--format", "table", "--decision-log", str(decision_log)
    )

    assert code == 3
    detail = (
        "evaluation_error: the rule could not be evaluated, so it does not pass: "
        f"{path}: facts are not valid JSON (Invalid JSON: EOF while parsing an object at line 1 column 1); "
        f"{FIX_FACTS}"
    )
    assert out == (
        f"device ? (serial unknown), evaluated at {AT}\n"
        "RULE                     STATUS  DETAIL\n"
        f"Corp device certificate  ERROR   {detail}\n"
        f"Second rule              ERROR   {detail}\n"
        "2 rule(s): 2 error\n"
    )
    (event,) = [json.loads(line) for line in decision_log.read_text().splitlines()]
    assert "input" not in event
    assert [(result["status"], result["passed"]) for result in event["result"]] == [("error", False)] * 2
    assert_nothing_passed(setup.cli, {"results": event["result"]})


# Missing store data


def test_no_rules_stored_is_usage_error(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = pem_pair(cli, good_leaf(ca, **VALIDITY))
    facts_path = cli.work / "facts.json"
    assert cli.run("collect", *IDENTITY, "--path", cert_path, "-o", str(facts_path))[0] == 0
    message = "error: no rules stored; add one with `certposture rules add FILE`\n"

    assert cli.run("evaluate", str(facts_path), "--at", AT) == (2, "", message)
    assert cli.run("check", *IDENTITY, "--path", cert_path, "--path", key_path, "--at", AT) == (
        2,
        "",
        message,
    )
    assert cli.run("logs", "--format", "json") == (0, "[]\n", "")


def unknown_signer_result(rule: dict[str, Any], ca_id: str) -> dict[str, Any]:
    return policy_error_result(
        rule,
        [
            reason(
                "signer",
                "unknown_signing_certificate",
                f'signing certificate "{ca_id}" was not found, so store it with "certposture ca add FILE" '
                'or pick a stored one from "certposture ca list"',
                ca_id,
                None,
            )
        ],
    )


def test_removed_signing_certificate_fails_closed(setup: Setup) -> None:
    """The facts still list the removed CA in signed_by, but the rule is an error."""
    assert setup.facts["certificates"][0]["signed_by"] == [setup.ca_id]
    edit_store(setup.cli, "DELETE FROM signing_certificates WHERE id = ?", setup.ca_id)
    expected_results = [unknown_signer_result(rule, setup.ca_id) for rule in setup.rules()]

    code, out, err = setup.cli.run("evaluate", str(setup.facts_path), "--at", AT)
    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(setup.facts["collected_at"], expected_results)
    assert_nothing_passed(setup.cli, document)

    code, out, err = setup.cli.run("check", *IDENTITY, "--at", AT)
    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(document["collected_at"], expected_results)
    assert_nothing_passed(setup.cli, document)


def test_rule_without_input_is_damaged_store(setup: Setup) -> None:
    rule_id = setup.rule_ids[0]
    edit_rule(setup.cli, rule_id, lambda rule: rule.pop("input"))
    message = (
        f"error: store row '{rule_id}' in table rules has no input object, so the store file is damaged; "
        "remove the row or restore the store from a backup\n"
    )

    assert setup.cli.run("evaluate", str(setup.facts_path), "--at", AT) == (3, "", message)
    assert setup.cli.run("check", *IDENTITY, "--at", AT) == (3, "", message)
    assert setup.cli.run("logs", "--format", "json") == (0, "[]\n", "")


def _invalid(field: str, message: str, expected: Any, actual: Any) -> dict[str, Any]:
    return reason(
        "rule", "invalid_rule", f"rule input {field} is invalid because {message}", expected, actual
    )


CERTIFICATE_ID_REASON = _invalid(
    "certificate_id", "it must be the id of a stored signing certificate", "non-empty string", None
)
OPERATING_SYSTEM_REASON = _invalid(
    "operating_system", "it must be linux, mac or windows", ["linux", "mac", "windows"], None
)
CHECK_PRIVATE_KEY_REASON = _invalid("check_private_key", "it must be true or false", "boolean", None)

EDITED_INPUTS: list[tuple[str, Callable[[dict[str, Any]], None], list[dict[str, Any]]]] = [
    ("empty_input", lambda rule_input: rule_input.clear(), [CERTIFICATE_ID_REASON, OPERATING_SYSTEM_REASON, CHECK_PRIVATE_KEY_REASON]),
    ("no_check_private_key", lambda rule_input: rule_input.pop("check_private_key"), [CHECK_PRIVATE_KEY_REASON]),
    ("check_private_key_text", lambda rule_input: rule_input.update(check_private_key="no"), [_invalid("check_private_key", "it must be true or false", "boolean", "no")]),
    ("cn_number", lambda rule_input: rule_input.update(cn=5), [_invalid("cn", "it must be a string", "string", 5)]),
    ("unknown_variable", lambda rule_input: rule_input.update(cn="${user}"), [_invalid("cn or subject_alternative_names", "they use a variable other than ${serial_number} and ${hostname}", ["${serial_number}", "${hostname}"], ["${user}"])]),
    ("relative_path", lambda rule_input: rule_input.update(locations={"paths": ["client.pem"]}), [_invalid("locations.paths", "it must be a list of absolute paths", "list of absolute paths", ["client.pem"])]),
    ("unknown_usage", lambda rule_input: rule_input.update(extended_key_usage=["serverAuth"]), [_invalid("extended_key_usage", "its items must be clientAuth or emailProtection", ["clientAuth", "emailProtection"], ["serverAuth"])]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "reasons"), EDITED_INPUTS, ids=[case[0] for case in EDITED_INPUTS]
)
def test_edited_rule_input_fails_closed(
    setup: Setup, name: str, change: Callable[[dict[str, Any]], None], reasons: list[dict[str, Any]]
) -> None:
    edited = edit_rule(setup.cli, setup.rule_ids[0], lambda rule: change(rule["input"]))
    (_, second) = setup.rules()

    code, out, err = setup.cli.run("evaluate", str(setup.facts_path), "--rule", edited["id"], "--at", AT)

    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(
        setup.facts["collected_at"], [policy_error_result(edited, reasons)]
    )
    assert_nothing_passed(setup.cli, document)
    assert second["id"] == setup.rule_ids[1]


@pytest.mark.parametrize("rule_type", ["client_certificate", "", None, 2, "CLIENT_CERTIFICATE_V2"])
def test_unknown_rule_type_fails_closed(setup: Setup, rule_type: Any) -> None:
    edited = [
        edit_rule(setup.cli, rule_id, lambda rule: rule.update(type=rule_type)) for rule_id in setup.rule_ids
    ]
    if isinstance(rule_type, str):
        quoted = f'"{rule_type}"'
    elif rule_type is None:
        quoted = "null"
    else:
        quoted = "(a number)"
    expected_results = [
        policy_error_result(
            rule,
            [
                reason(
                    "rule",
                    "unsupported_rule_type",
                    f'rule type {quoted} is not supported, only "client_certificate_v2" is',
                    "client_certificate_v2",
                    rule_type,
                )
            ],
        )
        for rule in edited
    ]

    code, out, err = setup.cli.run("evaluate", str(setup.facts_path), "--at", AT)
    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(setup.facts["collected_at"], expected_results)
    assert_nothing_passed(setup.cli, document)

    code, out, err = setup.cli.run("check", *IDENTITY, "--at", AT)
    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(document["collected_at"], expected_results)
    assert_nothing_passed(setup.cli, document)


def test_missing_rule_type_fails_closed(setup: Setup) -> None:
    edited = edit_rule(setup.cli, setup.rule_ids[0], lambda rule: rule.pop("type"))
    expected = policy_error_result(
        edited,
        [
            reason(
                "rule",
                "unsupported_rule_type",
                'rule type null is not supported, only "client_certificate_v2" is',
                "client_certificate_v2",
                None,
            )
        ],
    )

    code, out, err = setup.cli.run("evaluate", str(setup.facts_path), "--rule", edited["id"], "--at", AT)

    assert (code, err) == (3, "")
    document = json.loads(out)
    assert document == document_with_facts(setup.facts["collected_at"], [expected])
    assert_nothing_passed(setup.cli, document)


# Policy runtime errors


def write_condition(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.rego"
    path.write_text(f"package certposture.conditions.{name}\n\nimport rego.v1\n\n{body}")
    return path


DIVIDE_BY_ZERO = """reasons contains {"code": "never", "message": sprintf("%v", [ratio])} if {
\tratio := count(input.certificate.subject.common_names) / 0
}
"""

NUMBER_FROM_CN = """reasons contains {"code": "negative", "message": "the CN is a negative number"} if {
\tto_number(input.certificate.subject.common_names[0]) < 0
}
"""


@pytest.mark.parametrize(
    ("name", "body", "position", "problem"),
    [
        ("divide", DIVIDE_BY_ZERO, "6:60", "divide by zero"),
        ("number", NUMBER_FROM_CN, "6:53", "could not parse string as number"),
    ],
)
def test_policy_runtime_error_fails_closed(
    setup: Setup, tmp_path: Path, name: str, body: str, position: str, problem: str
) -> None:
    policy = write_condition(tmp_path / "conditions", name, body)
    message = f"policy evaluation failed: {policy}:{position}: {problem}"
    expected_results = [error_result(rule, message) for rule in setup.rules()]

    for command in (["evaluate", str(setup.facts_path)], ["check", *IDENTITY]):
        code, out, err = setup.cli.run(*command, "--policy", str(policy.parent), "--at", AT)
        assert code == 3
        assert err == f"error: {message}\n"
        document = json.loads(out)
        collected_at = setup.facts["collected_at"] if command[0] == "evaluate" else document["collected_at"]
        assert document == document_with_facts(collected_at, expected_results)
        assert_nothing_passed(setup.cli, document)


def test_runtime_error_on_one_candidate_fails_rule(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    """A certificate that passes does not rescue a rule whose other candidate makes the policy fail."""
    ca_id = cli.add_ca(ca)
    numeric = make_leaf(ca, "12345", key_type="rsa", **VALIDITY)
    text = make_leaf(ca, "not-a-number", key_type="rsa", **VALIDITY)
    paths = [*pem_pair(cli, numeric, "numeric"), *pem_pair(cli, text, "text")]
    rule_id = cli.add_rule(ca_id, locations={"paths": paths})
    policy = write_condition(tmp_path / "conditions", "number", NUMBER_FROM_CN)
    facts_path = cli.work / "facts.json"
    path_options = [option for path in paths for option in ("--path", path)]
    assert cli.run("collect", *IDENTITY, *path_options, "-o", str(facts_path))[0] == 0

    code, out, _ = cli.run("evaluate", str(facts_path), "--at", AT)
    assert code == 0, out
    assert json.loads(out)["results"][0]["matched_certificates"] == sorted(
        [numeric.fingerprint, text.fingerprint]
    )

    code, out, err = cli.run("evaluate", str(facts_path), "--policy", str(policy.parent), "--at", AT)
    assert code == 3
    message = f"policy evaluation failed: {policy}:6:53: could not parse string as number"
    rule = {"id": rule_id, "name": "Corp device certificate", "type": "client_certificate_v2"}
    facts = json.loads(facts_path.read_text())
    document = json.loads(out)
    assert document == document_with_facts(facts["collected_at"], [error_result(rule, message)])
    assert err == f"error: {message}\n"
    (record,) = [
        record for record in json.loads(cli.run("logs", "--format", "json")[1]) if not record["passed"]
    ]
    assert record["received"]["status"] == "error"


def test_runtime_error_affects_only_its_rule(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    """Each rule is evaluated on its own after a policy error, so a rule without the failing input still passes."""
    ca_id = cli.add_ca(ca)
    numeric = make_leaf(ca, "12345", key_type="rsa", **VALIDITY)
    text = make_leaf(ca, "not-a-number", key_type="rsa", **VALIDITY)
    numeric_paths = list(pem_pair(cli, numeric, "numeric"))
    text_paths = list(pem_pair(cli, text, "text"))
    numeric_rule = cli.add_rule(ca_id, name="numeric", locations={"paths": numeric_paths})
    text_rule = cli.add_rule(ca_id, name="text", locations={"paths": text_paths})
    policy = write_condition(tmp_path / "conditions", "number", NUMBER_FROM_CN)

    code, out, err = cli.run("check", *IDENTITY, "--policy", str(policy.parent), "--at", AT)

    assert code == 3
    results = json.loads(out)["results"]
    assert [(result["rule_id"], result["status"]) for result in results] == [
        (numeric_rule, "passed"),
        (text_rule, "error"),
    ]
    message = f"policy evaluation failed: {policy}:6:53: could not parse string as number"
    assert results[1] == error_result(
        {"id": text_rule, "name": "text", "type": "client_certificate_v2"}, message
    )
    assert err == f"error: {message}\n"
