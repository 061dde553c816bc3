"""`certposture decide`: Access decisions end to end, from facts or results collected from real certificates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import regorus

from certposture.decide import load_access_policies
from certposture.engine import load_policies, shipped_policy_dir
from tests.certgen import CLIENT_AUTH, CertKey, make_leaf
from tests.opa_support import opa_engine, policy_sources, require_opa
from tests.test_end_to_end import HOSTNAME, SERIAL, Cli, ca, cli

RULE_ID = "device-cert"
EMAIL = "alice@example.com"

__all__ = ["ca", "cli"]  # fixtures, imported for pytest


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(cli: Cli, name: str, document: Any) -> str:
    path = cli.work / name
    path.write_text(json.dumps(document))
    return str(path)


def store_rule(cli: Cli, ca: CertKey, cert_path: str, key_path: str, expiration: str | None = None) -> None:
    """Store the signing CA and one rule with id RULE_ID that requires a clientAuth certificate in the paths."""
    code, _, err = cli.run("ca", "add", "--id", "ca-device", str(ca.write_cert(cli.work / "ca.pem")))
    assert code == 0, err
    rule: dict[str, Any] = {
        "id": RULE_ID,
        "name": "Device certificate",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": "ca-device",
            "operating_system": "linux",
            "check_private_key": True,
            "extended_key_usage": ["clientAuth"],
            "locations": {"paths": [cert_path, key_path]},
        },
    }
    if expiration is not None:
        rule["expiration"] = expiration
    code, _, err = cli.run("rules", "add", write_json(cli, "rule.json", rule))
    assert code == 0, err


def device_files(cli: Cli, leaf: CertKey) -> tuple[str, str]:
    return str(leaf.write_cert(cli.work / "client.pem")), str(leaf.write_key(cli.work / "client.key"))


def collect(cli: Cli, cert_path: str, key_path: str) -> str:
    facts_path = cli.work / "facts.json"
    code, _, err = cli.run(
        "collect",
        "--hostname",
        HOSTNAME,
        "--serial-number",
        SERIAL,
        "--path",
        cert_path,
        "--path",
        key_path,
        "-o",
        str(facts_path),
    )
    assert code == 0, err
    return str(facts_path)


def posture_policies(cli: Cli) -> str:
    return write_json(
        cli,
        "access.json",
        [
            {
                "id": "corp",
                "name": "Corp devices",
                "decision": "allow",
                "include": [{"email_domain": {"domain": "example.com"}}],
                "require": [{"device_posture": {"integration_uid": RULE_ID}}],
            }
        ],
    )


def identity(cli: Cli, **fields: Any) -> str:
    return write_json(cli, "identity.json", {"email": EMAIL, "groups": [], "ip": "10.1.2.3", **fields})


def decide(cli: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = cli.run("decide", *args)
    assert "Traceback" not in err
    return code, (json.loads(out) if out else {}), err


# Access decisions from facts


def test_passing_device_allowed(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    facts = collect(cli, cert_path, key_path)

    code, result, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), facts)

    assert code == 0, err
    assert result["allowed"] is True
    assert result["decision"] == "allow"
    assert result["policy"] == {"id": "corp", "name": "Corp devices"}
    assert [check["rule_id"] for check in result["posture"]] == [RULE_ID]
    assert result["posture"][0]["passed"] is True


def test_failing_device_denied(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)

    code, result, _ = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), facts)

    assert code == 1
    assert result["allowed"] is False
    assert result["decision"] == "deny"
    assert result["policy"] is None
    assert result["posture"][0]["passed"] is False
    assert result["evaluated_policies"][0]["reason"] == "require rule device_posture did not match"


def test_other_identity_denied(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli, email="bob@other.example"), facts
    )

    assert code == 1
    assert result["evaluated_policies"][0]["reason"] == "no include rule matched"


def test_table_format(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)

    code, out, _ = cli.run(
        "decide", "--access", posture_policies(cli), "--identity", identity(cli), "--format", "table", facts
    )

    assert code == 0
    assert out.splitlines()[0].startswith("access: allow (allowed) at ")
    assert "policy: Corp devices (id corp)" in out
    assert "posture: Device certificate: passed" in out


def test_certificate_selectors(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)
    policies = write_json(
        cli,
        "cn.json",
        [
            {
                "name": "mTLS",
                "decision": "non_identity",
                "include": [{"common_name": {"common_name": "DEVICE01"}}],
            }
        ],
    )
    presented = identity(cli, certificate={"presented": True, "common_name": "device01"})

    code, result, _ = decide(cli, "--access", policies, "--identity", presented, facts)

    assert code == 0
    assert result["decision"] == "non_identity"
    assert result["allowed"] is True


# From a results document, and expiration


def test_results_document_allowed(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    code, out, err = cli.run("evaluate", collect(cli, cert_path, key_path))
    assert code == 0, err
    results = write_json(cli, "results.json", json.loads(out))

    code, result, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), results)

    assert code == 0, err
    assert result["allowed"] is True
    assert result["posture"][0]["expired"] is False


def test_expired_result_denied(cli: Cli, ca: CertKey) -> None:
    now = _now()
    leaf = make_leaf(ca, "device01", eku=[CLIENT_AUTH], not_before=now - dt.timedelta(days=10))
    cert_path, key_path = device_files(cli, leaf)
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    facts = collect(cli, cert_path, key_path)
    code, out, err = cli.run("evaluate", facts, "--at", _rfc3339(now - dt.timedelta(days=5)))
    assert code == 0, err
    results = write_json(cli, "results.json", json.loads(out))

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli), "--at", _rfc3339(now), results
    )

    assert code == 1
    assert result["allowed"] is False
    assert result["posture"][0]["expired"] is True
    assert result["posture"][0]["reason"] == "result expired"


def test_result_within_expiration_allowed(cli: Cli, ca: CertKey) -> None:
    now = _now()
    leaf = make_leaf(ca, "device01", eku=[CLIENT_AUTH], not_before=now - dt.timedelta(days=10))
    cert_path, key_path = device_files(cli, leaf)
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    facts = collect(cli, cert_path, key_path)
    code, out, _ = cli.run("evaluate", facts, "--at", _rfc3339(now - dt.timedelta(minutes=30)))
    assert code == 0
    results = write_json(cli, "results.json", json.loads(out))

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli), "--at", _rfc3339(now), results
    )

    assert code == 0
    assert result["posture"][0]["expired"] is False


def test_results_for_unstored_rule_rejected(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    results = write_json(
        cli,
        "results.json",
        {
            "evaluated_at": _rfc3339(_now()),
            "results": [{"rule_id": "elsewhere", "rule_name": "X", "status": "passed", "passed": True}],
        },
    )

    code, _, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), results)

    assert code == 2
    assert "rule elsewhere, which is not stored" in err


# Invalid input


@pytest.fixture
def stored(cli: Cli, ca: CertKey) -> str:
    """Store a rule and return the path of facts from a passing device."""
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    return collect(cli, cert_path, key_path)


def test_neither_access_nor_gateway(cli: Cli, stored: str) -> None:
    code, _, err = decide(cli, "--identity", identity(cli), stored)
    assert code == 2
    assert "exactly one of --access FILE and --gateway FILE" in err


def test_both_access_and_gateway(cli: Cli, stored: str) -> None:
    policies = posture_policies(cli)
    code, _, err = decide(
        cli, "--access", policies, "--gateway", policies, "--identity", identity(cli), stored
    )
    assert code == 2
    assert "exactly one of --access FILE and --gateway FILE" in err


def test_identity_required(cli: Cli, stored: str) -> None:
    code, _, _ = decide(cli, "--access", posture_policies(cli), stored)
    assert code == 2


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("not json", "invalid JSON"),
        ([], "the list has no policies"),
        ([{"decision": "allow", "include": []}], "name None is invalid"),
        ([{"name": "A", "decision": "block", "include": []}], "decision 'block' is invalid"),
        ([{"name": "A", "decision": "allow", "include": {"everyone": {}}}], "include must be a list"),
        ([{"name": "A", "decision": "allow", "include": [{}]}], "a rule must be an object with one selector"),
        (
            [{"name": "A", "decision": "allow", "include": [{"email": {"email": ""}}]}],
            "include[0]: email.email must be a non-empty string",
        ),
        (
            [{"name": "A", "decision": "allow", "include": [{"ip": {"ip": "10.0.0.0/40"}}]}],
            "ip.ip '10.0.0.0/40' is not an IP address or CIDR range",
        ),
        (
            [
                {"name": "A", "decision": "allow", "include": [{"everyone": {}}], "precedence": 1},
                {"name": "B", "decision": "allow", "include": [{"everyone": {}}]},
            ],
            "some policies have a precedence and others do not",
        ),
        (
            [
                {"id": "x", "name": "A", "decision": "allow", "include": [{"everyone": {}}]},
                {"id": "x", "name": "B", "decision": "allow", "include": [{"everyone": {}}]},
            ],
            "two policies have id 'x'",
        ),
    ],
)
def test_bad_access_file(cli: Cli, stored: str, policies: Any, message: str) -> None:
    path = cli.work / "bad.json"
    path.write_text(policies if isinstance(policies, str) else json.dumps(policies))

    code, out, err = decide(cli, "--access", str(path), "--identity", identity(cli), stored)

    assert code == 2
    assert out == {}
    assert message in err


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"email": 5}, "email must be a string or null"),
        ({"groups": "eng"}, "groups must be a list of strings"),
        ({"ip": "10.0.0.0/8"}, "is not an IP address"),
        ({"mail": "a@example.com"}, "unknown field(s) mail"),
        ({"certificate": {"presented": "yes"}}, "certificate.presented must be true or false"),
    ],
)
def test_bad_identity_file(cli: Cli, stored: str, document: dict[str, Any], message: str) -> None:
    path = write_json(cli, "bad-identity.json", document)

    code, _, err = decide(cli, "--access", posture_policies(cli), "--identity", path, stored)

    assert code == 2
    assert message in err


def test_unknown_posture_document(cli: Cli, stored: str) -> None:
    other = write_json(cli, "other.json", {"something": 1})

    code, _, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), other)

    assert code == 2
    assert "neither a facts document" in err


def test_contradictory_results_rejected(cli: Cli, stored: str) -> None:
    results = write_json(
        cli,
        "results.json",
        {
            "evaluated_at": _rfc3339(_now()),
            "results": [{"rule_id": RULE_ID, "rule_name": "X", "status": "failed", "passed": True}],
        },
    )

    code, _, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), results)

    assert code == 2
    assert "contradicts status failed" in err


def test_unsupported_selector_denies(cli: Cli, stored: str, caplog: pytest.LogCaptureFixture) -> None:
    policies = write_json(
        cli,
        "geo.json",
        {
            "result": [
                {"name": "Geo", "decision": "allow", "include": [{"geo": {"country_code": "US"}}]},
                {"name": "All", "decision": "allow", "include": [{"everyone": {}}]},
            ]
        },
    )

    code, result, _ = decide(cli, "--access", policies, "--identity", identity(cli), stored)

    assert code == 1
    assert result["policy"]["name"] == "Geo"
    assert "selector geo is not supported" in result["reason"]
    assert "selector geo is not supported" in caplog.text


def test_precedence_orders_policies(cli: Cli, stored: str) -> None:
    policies = write_json(
        cli,
        "ordered.json",
        [
            {"name": "Allow all", "decision": "allow", "include": [{"everyone": {}}], "precedence": 2},
            {"name": "Deny all", "decision": "deny", "include": [{"everyone": {}}], "precedence": 1},
        ],
    )

    code, result, _ = decide(cli, "--access", policies, "--identity", identity(cli), stored)

    assert code == 1
    assert result["policy"]["name"] == "Deny all"


def test_broken_policy_fails_closed(
    cli: Cli, stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "policies"
    broken.mkdir()
    for source in shipped_policy_dir().glob("*.rego"):
        (broken / source.name).write_text(source.read_text())
    (broken / "access.rego").write_text(
        'package certposture.access\n\nimport rego.v1\n\ndecision := {"allowed": true, "decision": "deny"}\n'
    )
    monkeypatch.setattr("certposture.engine.shipped_policy_dir", lambda: broken)

    code, out, err = decide(cli, "--access", posture_policies(cli), "--identity", identity(cli), stored)

    assert code == 3
    assert out == {}
    assert "contradicts decision deny" in err


# Gateway decisions


def gateway_rules(cli: Cli) -> str:
    return write_json(
        cli,
        "gateway.json",
        {
            "default_action": "block",
            "rules": [
                {
                    "id": "managed",
                    "name": "Managed devices",
                    "precedence": 10,
                    "action": "allow",
                    "identity": 'identity.email == "alice@example.com"',
                    "device_posture": f'any(device_posture.checks.passed[*] in {{"{RULE_ID}"}})',
                }
            ],
        },
    )


def test_gateway_passing_device_allowed(cli: Cli, stored: str) -> None:
    code, result, err = decide(cli, "--gateway", gateway_rules(cli), "--identity", identity(cli), stored)

    assert code == 0, err
    assert result["allowed"] is True
    assert result["action"] == "allow"
    assert result["rule"] == {"id": "managed", "name": "Managed devices", "precedence": 10}


def test_gateway_failing_device_blocked(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)

    code, result, _ = decide(cli, "--gateway", gateway_rules(cli), "--identity", identity(cli), facts)

    assert code == 1
    assert result["allowed"] is False
    assert result["action"] == "block"
    assert result["rule"] is None


def test_gateway_table_format(cli: Cli, stored: str) -> None:
    code, out, _ = cli.run(
        "decide", "--gateway", gateway_rules(cli), "--identity", identity(cli), "--format", "table", stored
    )

    assert code == 0
    assert out.splitlines()[0].startswith("gateway: allow (allowed) at ")
    assert "rule: Managed devices (id managed)" in out


def test_bad_gateway_file(cli: Cli, stored: str) -> None:
    path = write_json(cli, "bad-gateway.json", {"rules": [{"id": "x"}]})

    code, out, err = decide(cli, "--gateway", path, "--identity", identity(cli), stored)

    assert code == 2
    assert out == {}
    assert "name" in err


# The same decisions on OPA


def _access_cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    policies = [
        {"id": "b", "name": "Bypass", "decision": "bypass", "include": [{"ip": {"ip": "192.168.0.0/16"}}]},
        {
            "id": "d",
            "name": "Deny contractors",
            "decision": "deny",
            "include": [{"group": {"id": "contractors"}}],
            "exclude": [{"email": {"email": "ALICE@example.com"}}],
        },
        {
            "id": "a",
            "name": "Corp",
            "decision": "allow",
            "include": [{"email_domain": {"domain": "example.com"}}],
            "require": [
                {"device_posture": {"integration_uid": "r1"}},
                {"common_name": {"common_name": "Dev"}},
            ],
        },
        {"id": "g", "name": "Geo", "decision": "allow", "include": [{"geo": {"country_code": "US"}}]},
    ]
    posture = [
        {
            "rule_id": "r1",
            "rule_name": "R",
            "status": "passed",
            "passed": True,
            "evaluated_at": "2026-12-04T19:30:00Z",
            "expiration": "1h",
        }
    ]
    cases = []
    for at in ("2026-12-04T19:45:00Z", "2026-12-04T21:00:00Z"):
        for ip in ("10.0.0.1", "192.168.1.1", "fd00::1"):
            for email in ("alice@example.com", "bob@example.com", "\u0130@example.com", None):
                for groups in ([], ["contractors"]):
                    request = {
                        "identity": {"email": email, "groups": groups, "ip": ip},
                        "certificate": {"presented": True, "common_name": "dev"},
                        "posture": posture,
                    }
                    config = {"certposture_config": {"evaluated_at": at, "access_policies": policies}}
                    cases.append((config, request))
    return cases


def test_access_decisions_match_opa() -> None:
    opa = require_opa()
    for config, request in _access_cases():
        rego = regorus.Engine()
        load_policies(rego, [shipped_policy_dir()])
        rego.add_data_json(json.dumps(config))
        rego.set_input_json(json.dumps(request))
        on_regorus = json.loads(rego.eval_rule_as_json("data.certposture.access.decision"))
        instance = opa_engine(opa, policy_sources(), config)
        try:
            on_opa = instance.eval_document("certposture.access.decision", request)
        finally:
            instance.close()

        assert on_opa == on_regorus, f"request {request} at {config['certposture_config']['evaluated_at']}"


def test_cloudflare_response_fixture_loads() -> None:
    path = (
        Path(__file__).resolve().parent.parent / "fixtures" / "access" / "cloudflare-policies-response.json"
    )

    policies = load_access_policies(path.read_bytes(), str(path))

    assert [policy["name"] for policy in policies] == [
        "Health check over mTLS",
        "Managed devices of example.com",
    ]


# Ways around expiration and missing results, found by trying to get an allow that should be a deny


def test_old_facts_count_from_collection_time(cli: Cli, ca: CertKey) -> None:
    now = _now()
    leaf = make_leaf(ca, "device01", eku=[CLIENT_AUTH], not_before=now - dt.timedelta(days=10))
    cert_path, key_path = device_files(cli, leaf)
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    facts_path = Path(collect(cli, cert_path, key_path))

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli),
        "--at", _rfc3339(now + dt.timedelta(hours=2)), str(facts_path),
    )  # fmt: skip

    assert code == 1
    assert result["posture"][0]["reason"] == "result expired"


def test_future_results_denied(cli: Cli, ca: CertKey) -> None:
    now = _now()
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    facts = collect(cli, cert_path, key_path)
    code, out, _ = cli.run("evaluate", facts, "--at", _rfc3339(now + dt.timedelta(days=3)))
    assert code == 0
    results = write_json(cli, "results.json", json.loads(out))

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli), "--at", _rfc3339(now), results
    )

    assert code == 1
    assert result["posture"][0]["reason"] == "result dated after the decision time"


def test_policy_naming_unstored_rule_rejected(cli: Cli, stored: str) -> None:
    policies = write_json(
        cli,
        "access.json",
        [
            {
                "name": "Corp",
                "decision": "allow",
                "include": [{"everyone": {}}],
                "exclude": [{"device_posture": {"integration_uid": "misspelled-rule"}}],
            }
        ],
    )

    code, _, err = decide(cli, "--access", policies, "--identity", identity(cli), stored)

    assert code == 2
    assert "posture rule(s) misspelled-rule, which are not stored" in err


def test_results_without_named_rule_rejected(cli: Cli, ca: CertKey) -> None:
    cert_path, key_path = device_files(cli, make_leaf(ca, "device01", eku=[CLIENT_AUTH]))
    store_rule(cli, ca, cert_path, key_path)
    results = write_json(cli, "results.json", {"evaluated_at": _rfc3339(_now()), "results": []})
    blocking = write_json(
        cli,
        "gateway.json",
        [
            {
                "id": "b",
                "name": "Block failed",
                "precedence": 1,
                "action": "block",
                "device_posture": f'any(device_posture.checks.failed[*] in {{"{RULE_ID}"}})',
            }
        ],
    )

    code, _, err = decide(cli, "--gateway", blocking, "--identity", identity(cli), results)

    assert code == 2
    assert f"no result for rule(s) {RULE_ID}, which the policies name" in err


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "BLOCK"}, "action 'BLOCK' is invalid"),
        ({"action": "block "}, "action 'block ' is invalid"),
        ({"action": "allow", "traffic": 'http.request.host == "only.example"'}, "have a condition traffic"),
    ],
)
def test_gateway_rule_that_could_allow_wrongly_rejected(
    cli: Cli, stored: str, rule: dict[str, Any], message: str
) -> None:
    rules = write_json(
        cli,
        "gateway.json",
        [
            {
                "id": "a",
                "name": "First",
                "precedence": 1,
                "identity": 'identity.email == "alice@example.com"',
                **rule,
            },
            {"id": "z", "name": "Block all", "precedence": 2, "action": "block"},
        ],
    )

    code, _, err = decide(cli, "--gateway", rules, "--identity", identity(cli), stored)

    assert code == 2
    assert message in err


def test_old_facts_stay_old_through_evaluate(cli: Cli, ca: CertKey) -> None:
    now = _now()
    leaf = make_leaf(ca, "device01", eku=[CLIENT_AUTH], not_before=now - dt.timedelta(days=60))
    cert_path, key_path = device_files(cli, leaf)
    store_rule(cli, ca, cert_path, key_path, expiration="1h")
    facts_path = Path(collect(cli, cert_path, key_path))
    facts = json.loads(facts_path.read_text())
    facts["collected_at"] = _rfc3339(now - dt.timedelta(days=30))
    facts_path.write_text(json.dumps(facts))
    code, out, _ = cli.run("evaluate", str(facts_path))
    assert code == 0
    results = json.loads(out)
    assert results["collected_at"] == facts["collected_at"]

    code, result, _ = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli),
        write_json(cli, "results.json", {**results, "observed_at": _rfc3339(now)}),
    )  # fmt: skip

    assert code == 1
    assert result["posture"][0]["reason"] == "result expired"


def test_ipv4_mapped_address_matches_ipv4_range(cli: Cli, stored: str) -> None:
    policies = write_json(
        cli,
        "access.json",
        [
            {"name": "Lab", "decision": "deny", "precedence": 1, "include": [{"ip": {"ip": "10.0.0.0/8"}}]},
            {"name": "All", "decision": "allow", "precedence": 2, "include": [{"everyone": {}}]},
        ],
    )

    code, result, _ = decide(
        cli, "--access", policies, "--identity", identity(cli, ip="::ffff:10.1.2.3"), stored
    )

    assert code == 1
    assert result["policy"]["name"] == "Lab"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"result": [], "default_action": "block"}, "unknown field(s) default_action beside result"),
        ([{"id": "a", "name": "A", "precedence": 1, "action": "allow", "schedule": {"time_zone": "UTC"}}],
         "have a condition schedule"),
        ([{"id": "a", "name": "A", "precedence": 1, "action": "allow", "expiration": {"expires_at": "2020-01-01T00:00:00Z"}}],
         "have a condition expiration"),
    ],
)  # fmt: skip
def test_gateway_document_that_could_allow_wrongly_rejected(
    cli: Cli, stored: str, document: Any, message: str
) -> None:
    code, _, err = decide(
        cli, "--gateway", write_json(cli, "gateway.json", document), "--identity", identity(cli), stored
    )

    assert code == 2
    assert message in err


def test_ip_with_zone_rejected(cli: Cli, stored: str) -> None:
    code, _, err = decide(
        cli, "--access", posture_policies(cli), "--identity", identity(cli, ip="fe80::1%eth0"), stored
    )

    assert code == 2
    assert "ip 'fe80::1%eth0' has a zone" in err


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([{"name": "p", "decision": "allow", "approval_required": True, "include": [{"everyone": {}}]}],
         "approval_required cannot be checked"),
        ([{"name": "p", "decision": "allow", "include": [{"certificate": {"common_name": "other"}}]}],
         "certificate takes no parameters"),
        ([{"name": "p", "decision": "allow", "precedence": 1, "include": [{"everyone": {}}]},
          {"name": "p", "decision": "deny", "precedence": 1, "include": [{"everyone": {}}]}],
         "share precedence 1"),
    ],
)  # fmt: skip
def test_access_policy_that_could_allow_wrongly_rejected(
    cli: Cli, stored: str, policies: Any, message: str
) -> None:
    code, _, err = decide(
        cli, "--access", write_json(cli, "access.json", policies), "--identity", identity(cli), stored
    )

    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"id": "d", "name": "DNS", "precedence": 1, "action": "allow", "filters": ["dns"]},
          {"id": "h", "name": "HTTP", "precedence": 2, "action": "block", "filters": ["http"]}],
         "filter different traffic types"),
        ([{"id": "s", "name": "Session", "precedence": 1, "action": "allow",
           "rule_settings": {"check_session": {"enforce": True, "duration": "1m"}}}],
         "enforce a session check"),
    ],
)  # fmt: skip
def test_gateway_stage_and_session_rejected(cli: Cli, stored: str, rules: Any, message: str) -> None:
    code, _, err = decide(
        cli, "--gateway", write_json(cli, "gateway.json", rules), "--identity", identity(cli), stored
    )

    assert code == 2
    assert message in err
