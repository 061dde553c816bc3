"""End-to-end CLI runs: `ca add`, `rules add`, `collect`, `evaluate` on real PEM files and NSS databases."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certposture.cli import main
from tests.certgen import (
    CLIENT_AUTH,
    EMAIL_PROTECTION,
    CertKey,
    create_nssdb,
    generate_key,
    make_ca,
    make_leaf,
    write_pem,
)

HOSTNAME = "pf2abc12"
SERIAL = "PF2ABC12"


@dataclass
class Cli:
    """Runs the CLI in-process against one temporary home."""

    home: Path
    work: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(["--home", str(self.home), *args])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def add_ca(self, ca: CertKey) -> str:
        path = self.work / f"ca-{ca.fingerprint[:12]}.pem"
        ca.write_cert(path)
        code, out, err = self.run("ca", "add", str(path))
        assert code == 0, err
        return str(json.loads(out)["id"])

    def add_rule(self, ca_id: str, operating_system: str = "linux", **input_fields: Any) -> str:
        rule = {
            "name": input_fields.pop("name", "Corp device certificate"),
            "type": "client_certificate_v2",
            "input": {
                "certificate_id": ca_id,
                "operating_system": operating_system,
                "check_private_key": input_fields.pop("check_private_key", True),
                **input_fields,
            },
        }
        path = self.work / "rule.json"
        path.write_text(json.dumps(rule))
        code, out, err = self.run("rules", "add", str(path))
        assert code == 0, err
        return out.strip()

    def check(self, *collect_args: str, at: str | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Collect to a file, evaluate it; return exit code, facts and results."""
        facts_path = self.work / "facts.json"
        code, _, err = self.run(
            "collect", "--hostname", HOSTNAME, "--serial-number", SERIAL, *collect_args, "-o", str(facts_path)
        )
        assert code == 0, err
        evaluate_args = ["evaluate", str(facts_path)] + (["--at", at] if at else [])
        code, out, err = self.run(*evaluate_args)
        assert "Traceback" not in err
        return code, json.loads(facts_path.read_text()), json.loads(out)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "home", work, capsys)


@pytest.fixture
def ca() -> CertKey:
    return make_ca("Example Device CA")


def reason_codes(result: dict[str, Any]) -> set[str]:
    """Codes of the reasons why the rule's candidate certificates failed."""
    return {reason["code"] for candidate in result["candidates"] for reason in candidate["reasons"]}


def pem_pair(cli: Cli, leaf: CertKey, name: str = "client") -> tuple[str, str]:
    cert_path = leaf.write_cert(cli.work / f"{name}.pem")
    key_path = leaf.write_key(cli.work / f"{name}.key")
    return str(cert_path), str(key_path)


def good_leaf(ca: CertKey, **overrides: Any) -> CertKey:
    arguments: dict[str, Any] = {
        "sans": [f"{HOSTNAME}.corp.example"],
        "eku": [CLIENT_AUTH, EMAIL_PROTECTION],
        "key_type": "rsa",
    }
    arguments.update(overrides)
    return make_leaf(ca, f"{SERIAL}_mycompany", **arguments)


FULL_RULE: dict[str, Any] = {
    "cn": "${serial_number}_mycompany",
    "extended_key_usage": ["clientAuth", "emailProtection"],
    "subject_alternative_names": ["${hostname}.corp.example"],
}


# Every condition met


def test_pem_pass_all_conditions(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, facts, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 0
    (result,) = results["results"]
    assert result["status"] == "passed"
    assert result["passed"] is True
    assert result["matched_certificates"] == [leaf.fingerprint]
    assert facts["certificates"][0]["signed_by"] == [ca_id]
    assert facts["certificates"][0]["private_key"]["present"] is True


def test_nssdb_pass_all_conditions(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(leaf, "corp-device")
    db.add_certificate(ca.cert, "Example Device CA", trust="CT,,")
    cli.add_rule(ca_id, **FULL_RULE)

    code, facts, results = cli.check("--nssdb", f"sql:{db.directory}")
    assert code == 0
    (result,) = results["results"]
    assert result["status"] == "passed"
    assert result["matched_certificates"] == [leaf.fingerprint]
    sources = {cert["fingerprint_sha256"]: cert["source"] for cert in facts["certificates"]}
    assert sources[leaf.fingerprint]["type"] == "nssdb"
    assert sources[leaf.fingerprint]["label"] == "corp-device"


def test_nssdb_with_password_passes(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    db = create_nssdb(tmp_path / "nssdb", password="db-secret")
    db.import_key_pair(leaf, "corp-device")
    cli.add_rule(ca_id, **FULL_RULE)

    code, _, results = cli.check("--nssdb", str(db.directory))
    assert code == 0
    assert results["results"][0]["status"] == "passed"


def test_nssdb_certificate_without_key_fails(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    db = create_nssdb(tmp_path / "nssdb")
    db.add_certificate(leaf.cert, "no-key")
    cli.add_rule(ca_id, **FULL_RULE)

    code, _, results = cli.check("--nssdb", str(db.directory))
    assert code == 1
    assert reason_codes(results["results"][0]) == {"private_key_missing"}


# Signer


def test_forged_issuer_name_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    impostor = make_ca("Example Device CA")
    assert impostor.cert.subject == ca.cert.subject
    forged = good_leaf(impostor)
    assert forged.cert.issuer == ca.cert.subject
    cert_path, key_path = pem_pair(cli, forged)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, facts, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    assert facts["certificates"][0]["signed_by"] == []
    (result,) = results["results"]
    assert result["status"] == "failed"
    assert reason_codes(result) == {"signer_mismatch"}


def test_intermediate_leaf_root_stored_fails(cli: Cli) -> None:
    root = make_ca("Example Root CA")
    intermediate = make_ca("Example Issuing CA", parent=root)
    root_id = cli.add_ca(root)
    leaf = good_leaf(intermediate)
    chain_path = write_pem(cli.work / "chain.pem", leaf.cert_pem(), intermediate.cert_pem(), leaf.key_pem())
    cli.add_rule(root_id, **FULL_RULE, locations={"paths": [str(chain_path)]})

    code, _, results = cli.check("--path", str(chain_path))
    assert code == 1
    (result,) = results["results"]
    assert result["matched_certificates"] == []
    leaf_candidate = next(c for c in result["candidates"] if c["fingerprint_sha256"] == leaf.fingerprint)
    assert [reason["code"] for reason in leaf_candidate["reasons"]] == ["signer_mismatch"]


def test_intermediate_leaf_intermediate_stored_passes(cli: Cli) -> None:
    root = make_ca("Example Root CA")
    intermediate = make_ca("Example Issuing CA", parent=root)
    cli.add_ca(root)
    intermediate_id = cli.add_ca(intermediate)
    leaf = good_leaf(intermediate)
    chain_path = write_pem(cli.work / "chain.pem", leaf.cert_pem(), intermediate.cert_pem(), leaf.key_pem())
    cli.add_rule(intermediate_id, **FULL_RULE, locations={"paths": [str(chain_path)]})

    code, _, results = cli.check("--path", str(chain_path))
    assert code == 0
    assert results["results"][0]["matched_certificates"] == [leaf.fingerprint]


# Validity


def test_expired_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    leaf = good_leaf(ca, not_before=start, not_after=start + dt.timedelta(days=10))
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    assert reason_codes(results["results"][0]) == {"expired"}


def test_not_yet_valid_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    leaf = good_leaf(ca, not_before=start, not_after=start + dt.timedelta(days=10))
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    assert reason_codes(results["results"][0]) == {"not_yet_valid"}


def test_at_pins_evaluation_time(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    leaf = good_leaf(ca, not_before=start, not_after=start + dt.timedelta(days=10))
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    inside = (start + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, results = cli.check("--path", cert_path, "--path", key_path, at=inside)
    assert code == 0
    assert results["evaluated_at"] == inside
    after = (start + dt.timedelta(days=11)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, results = cli.check("--path", cert_path, "--path", key_path, at=after)
    assert code == 1
    assert reason_codes(results["results"][0]) == {"expired"}


# Common name and variables


def test_cn_case_insensitive_substitution(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "pf2abc12_MyCompany_PF2ABC12", key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(
        ca_id, cn="${hostname}_mycompany_${serial_number}", locations={"paths": [cert_path, key_path]}
    )

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 0
    assert results["results"][0]["status"] == "passed"


def test_cn_mismatch_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "OTHER_mycompany", key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, cn="${serial_number}_mycompany", locations={"paths": [cert_path, key_path]})

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    candidate = results["results"][0]["candidates"][0]
    (reason,) = candidate["reasons"]
    assert reason["code"] == "cn_mismatch"
    assert reason["expected"] == f"{SERIAL}_mycompany"


def test_serial_with_variable_not_expanded_again(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    serial = "SN${hostname}"
    literal = make_leaf(ca, "SN${hostname}-device", key_type="rsa")
    cert_path, key_path = pem_pair(cli, literal)
    cli.add_rule(ca_id, cn="${serial_number}-device", locations={"paths": [cert_path, key_path]})

    facts_path = cli.work / "facts.json"
    collect = ["collect", "--hostname", HOSTNAME, "--serial-number", serial, "--path", cert_path]
    assert cli.run(*collect, "--path", key_path, "-o", str(facts_path))[0] == 0
    code, out, _ = cli.run("evaluate", str(facts_path))
    assert code == 0
    assert json.loads(out)["results"][0]["status"] == "passed"

    expanded = make_leaf(ca, f"SN{HOSTNAME}-device", key_type="rsa")
    expanded.write_cert(Path(cert_path))
    expanded.write_key(Path(key_path))
    assert cli.run(*collect, "--path", key_path, "-o", str(facts_path))[0] == 0
    code, out, _ = cli.run("evaluate", str(facts_path))
    assert code == 1
    assert reason_codes(json.loads(out)["results"][0]) == {"cn_mismatch"}


# Subject alternative names


def test_san_any_match_passes(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(
        ca, "device", sans=["laptop@corp.example", "10.1.2.3", "PF2ABC12.Corp.Example"], key_type="rsa"
    )
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(
        ca_id,
        subject_alternative_names=["nothing.example", "${serial_number}.corp.example"],
        locations={"paths": [cert_path, key_path]},
    )

    code, _, _results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 0


def test_san_no_match_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device", sans=["other.corp.example"], key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(
        ca_id,
        subject_alternative_names=["${hostname}.corp.example"],
        locations={"paths": [cert_path, key_path]},
    )

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    assert reason_codes(results["results"][0]) == {"san_mismatch"}


def test_other_name_san_never_matches(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device", other_name_only=True, key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(
        ca_id, subject_alternative_names=["device@corp.example"], locations={"paths": [cert_path, key_path]}
    )

    code, facts, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    assert facts["certificates"][0]["subject_alternative_names"]["other_name_count"] == 1
    assert facts["certificates"][0]["subject_alternative_names"]["email"] == []
    assert reason_codes(results["results"][0]) == {"san_mismatch"}


# Extended key usage


@pytest.mark.parametrize(
    ("usages", "code"),
    [([CLIENT_AUTH, EMAIL_PROTECTION], 0), ([CLIENT_AUTH], 1), ([EMAIL_PROTECTION], 1), (None, 1)],
)
def test_eku_both_required(cli: Cli, ca: CertKey, usages: list[str] | None, code: int) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device", eku=usages, key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(
        ca_id,
        extended_key_usage=["clientAuth", "emailProtection"],
        locations={"paths": [cert_path, key_path]},
    )

    exit_code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert exit_code == code
    if code:
        assert reason_codes(results["results"][0]) == {"eku_missing"}


# Private key


def test_key_of_other_certificate_fails(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    other = good_leaf(ca)
    cert_path = leaf.write_cert(cli.work / "client.pem")
    key_path = other.write_key(cli.work / "client.key")
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [str(cert_path), str(key_path)]})

    code, facts, results = cli.check("--path", str(cert_path), "--path", str(key_path))
    assert code == 1
    assert facts["certificates"][0]["private_key"]["present"] is False
    assert reason_codes(results["results"][0]) == {"private_key_missing"}


def test_key_not_required_passes_without_key(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path = str(leaf.write_cert(cli.work / "client.pem"))
    cli.add_rule(ca_id, **FULL_RULE, check_private_key=False, locations={"paths": [cert_path]})

    code, _, _ = cli.check("--path", cert_path)
    assert code == 0


def test_encrypted_key_is_unverified(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path = leaf.write_cert(cli.work / "client.pem")
    key_path = leaf.write_key(cli.work / "client.key", password=b"passphrase")
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [str(cert_path), str(key_path)]})

    code, facts, results = cli.check("--path", str(cert_path), "--path", str(key_path))
    assert code == 1
    assert facts["certificates"][0]["private_key"]["status"] == "unverified"
    assert reason_codes(results["results"][0]) == {"private_key_unverified"}


# Operating system and locations


def test_other_os_not_applicable(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, operating_system="windows", **FULL_RULE)

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    (result,) = results["results"]
    assert result["status"] == "not_applicable"
    assert result["passed"] is False
    assert result["matched_certificates"] == []


def test_other_os_beside_passing_rule(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    cli.add_rule(ca_id, operating_system="mac", name="Mac rule")

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 0
    assert [result["status"] for result in results["results"]] == ["passed", "not_applicable"]


def test_certificate_outside_rule_paths_ignored(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": ["/opt/corp/client.pem"]})

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 1
    (result,) = results["results"]
    assert result["candidates"] == []
    assert [reason["code"] for reason in result["reasons"]] == ["no_certificate"]


def test_unreadable_file_beside_good_one(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    folder = cli.work / "certs"
    folder.mkdir()
    leaf.write_cert(folder / "client.pem")
    leaf.write_key(folder / "client.key")
    broken = folder / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [str(folder)]})

    code, facts, results = cli.check("--path", str(folder))
    assert code == 0
    assert [error["location"] for error in facts["errors"] if error["source"] == "pem"] == [str(broken)]
    (result,) = results["results"]
    assert result["status"] == "passed"
    assert result["matched_certificates"] == [leaf.fingerprint]


def test_missing_path_beside_good_one(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    missing = str(cli.work / "missing.pem")
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [missing, cert_path, key_path]})

    code, facts, results = cli.check("--path", missing, "--path", cert_path, "--path", key_path)
    assert code == 0
    assert any(error["location"] == missing for error in facts["errors"])
    assert results["results"][0]["status"] == "passed"


def test_rule_locations_used_without_path(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, facts, _ = cli.check()
    assert code == 0
    assert {cert["source"]["location"] for cert in facts["certificates"]} == {cert_path}


# Output, exit codes and failing closed


def test_table_format(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device", eku=[CLIENT_AUTH], key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, extended_key_usage=["emailProtection"], locations={"paths": [cert_path, key_path]})
    facts_path = cli.work / "facts.json"
    cli.run("collect", "--path", cert_path, "--path", key_path, "-o", str(facts_path))

    code, out, _ = cli.run("evaluate", str(facts_path), "--format", "table")
    assert code == 1
    assert "FAILED" in out
    assert "eku_missing" in out
    assert out.strip().splitlines()[-1] == "1 rule(s): 1 failed"


def test_invalid_facts_fail_closed(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    rule_id = cli.add_rule(ca_id)
    bad = cli.work / "facts.json"
    bad.write_text(json.dumps({"schema_version": 1, "certificates": "everything is fine"}))

    code, out, err = cli.run("evaluate", str(bad))
    assert code == 3
    (result,) = json.loads(out)["results"]
    assert result["rule_id"] == rule_id
    assert result["status"] == "error"
    assert result["passed"] is False
    assert "facts are invalid" in err


def test_unparseable_facts_fail_closed(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    bad = cli.work / "facts.json"
    bad.write_text("{")
    code, out, err = cli.run("evaluate", str(bad))
    assert code == 3
    assert json.loads(out)["results"][0]["status"] == "error"
    assert "not valid JSON" in err


def test_broken_policy_fails_closed(
    cli: Cli, ca: CertKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    broken = tmp_path / "policies" / "certposture"
    broken.mkdir(parents=True)
    (broken / "posture.rego").write_text("package certposture.posture\n\nresults := [x | x := 1 / 0]\n")
    monkeypatch.setattr(
        "certposture.engine.shipped_policy_dir", lambda: tmp_path / "policies" / "certposture"
    )

    code, _, results = cli.check("--path", cert_path, "--path", key_path)
    assert code == 3
    assert results["results"][0]["status"] == "error"
    assert results["results"][0]["passed"] is False


def test_no_rules_is_usage_error(cli: Cli, tmp_path: Path) -> None:
    facts_path = cli.work / "facts.json"
    assert cli.run("collect", "--path", str(tmp_path), "-o", str(facts_path))[0] == 0
    code, _, err = cli.run("evaluate", str(facts_path))
    assert code == 2
    assert "no rules stored" in err


def test_bad_at_is_usage_error(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    facts_path = cli.work / "facts.json"
    assert cli.run("collect", "--path", str(cli.work), "-o", str(facts_path))[0] == 0
    code, _, err = cli.run("evaluate", str(facts_path), "--at", "yesterday")
    assert code == 2
    assert "RFC 3339" in err


def test_check_runs_in_one_process(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    code, out, _ = cli.run("check", "--hostname", HOSTNAME, "--serial-number", SERIAL)
    assert code == 0
    assert json.loads(out)["results"][0]["status"] == "passed"


def test_collect_pipe_evaluate(cli: Cli, ca: CertKey) -> None:
    """`collect | evaluate` through a real shell pipe and the module entry point."""
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    python = sys.executable
    command = (
        f"{python} -m certposture collect --hostname {HOSTNAME} --serial-number {SERIAL} "
        f"| {python} -m certposture evaluate - --format json"
    )
    environment = {**os.environ, "CERTPOSTURE_HOME": str(cli.home)}
    completed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["results"][0]["status"] == "passed"


def test_facts_hold_no_private_key(cli: Cli, ca: CertKey) -> None:
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    code, out, err = cli.run("collect", "--path", cert_path, "--path", key_path)
    assert code == 0
    key_body = "".join(leaf.key_pem().decode().splitlines()[1:-1])
    assert key_body[:40] not in out + err
    assert "PRIVATE KEY" not in out + err


def test_rsa_sha384_ca_verifies(cli: Cli) -> None:
    """An RSA CA signing with SHA-384 and without keyUsage is verified like any other."""
    key = generate_key("rsa")
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Legacy CA")])
    now = dt.datetime.now(dt.UTC)
    legacy = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    ca = CertKey(legacy, key)
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca)
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    code, _, _ = cli.check("--path", cert_path, "--path", key_path)
    assert code == 0


# The same scenarios through both Linux sources


def _scenario_leaf(name: str, ca: CertKey, impostor: CertKey, intermediate: CertKey) -> CertKey:
    now = dt.datetime.now(dt.UTC)
    if name == "forged_issuer_name":
        return good_leaf(impostor)
    if name == "expired":
        return good_leaf(ca, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    if name == "not_yet_valid":
        return good_leaf(ca, not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30))
    if name == "intermediate_issuer":
        return good_leaf(intermediate)
    if name == "cn_other_case":
        return make_leaf(ca, f"{SERIAL.lower()}_MYCOMPANY", sans=[f"{HOSTNAME}.corp.example"],
                         eku=[CLIENT_AUTH, EMAIL_PROTECTION], key_type="rsa")  # fmt: skip
    if name == "eku_client_only":
        return good_leaf(ca, eku=[CLIENT_AUTH])
    if name == "other_name_san_only":
        return make_leaf(ca, f"{SERIAL}_mycompany", other_name_only=True, eku=[CLIENT_AUTH, EMAIL_PROTECTION],
                         key_type="rsa")  # fmt: skip
    return good_leaf(ca, key_type="ec")


SCENARIOS = [
    ("all_conditions_ec", 0, set()),
    ("forged_issuer_name", 1, {"signer_mismatch"}),
    ("expired", 1, {"expired"}),
    ("not_yet_valid", 1, {"not_yet_valid"}),
    ("intermediate_issuer", 1, {"signer_mismatch"}),
    ("cn_other_case", 0, set()),
    ("eku_client_only", 1, {"eku_missing"}),
    ("other_name_san_only", 1, {"san_mismatch"}),
]


@pytest.mark.parametrize("source", ["pem", "nssdb"])
@pytest.mark.parametrize(("scenario", "expected_code", "expected_reasons"), SCENARIOS)
def test_scenario_per_source(
    cli: Cli,
    tmp_path: Path,
    source: str,
    scenario: str,
    expected_code: int,
    expected_reasons: set[str],
) -> None:
    ca = make_ca("Example Device CA")
    impostor = make_ca("Example Device CA")
    intermediate = make_ca("Example Issuing CA", parent=ca)
    ca_id = cli.add_ca(ca)
    leaf = _scenario_leaf(scenario, ca, impostor, intermediate)

    if source == "pem":
        cert_path, key_path = pem_pair(cli, leaf)
        cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
        collect_args = ["--path", cert_path, "--path", key_path]
    else:
        db = create_nssdb(tmp_path / "nssdb")
        db.import_key_pair(leaf, "device")
        cli.add_rule(ca_id, **FULL_RULE)
        collect_args = ["--nssdb", str(db.directory)]

    code, facts, results = cli.check(*collect_args)
    assert code == expected_code
    (result,) = results["results"]
    candidate = next(c for c in result["candidates"] if c["fingerprint_sha256"] == leaf.fingerprint)
    assert {reason["code"] for reason in candidate["reasons"]} == expected_reasons
    certificate = next(c for c in facts["certificates"] if c["fingerprint_sha256"] == leaf.fingerprint)
    assert certificate["source"]["type"] == source
    assert certificate["private_key"]["present"] is True


def test_key_outside_rule_paths_same_verdict(cli: Cli, ca: CertKey) -> None:
    """A key read only because another rule names its folder does not satisfy this rule."""
    ca_id = cli.add_ca(ca)
    folder = cli.work / "pki"
    folder.mkdir()
    leaf = good_leaf(ca)
    stranger = good_leaf(ca)
    cert_path = str(leaf.write_cert(folder / "device.pem"))
    leaf.write_key(folder / "device.key")
    wrong_key = str(stranger.write_key(cli.work / "wrong.key"))
    narrow = cli.add_rule(ca_id, name="narrow", **FULL_RULE, locations={"paths": [cert_path, wrong_key]})
    cli.add_rule(ca_id, name="folder", **FULL_RULE, locations={"paths": [str(folder)]})

    facts_path = cli.work / "facts.json"
    for rule_args in ([], ["--rule", narrow]):
        collect = [
            "collect",
            "--hostname",
            HOSTNAME,
            "--serial-number",
            SERIAL,
            *rule_args,
            "-o",
            str(facts_path),
        ]
        assert cli.run(*collect)[0] == 0
        code, out, _ = cli.run("evaluate", str(facts_path), "--rule", narrow)
        assert code == 1
        codes = reason_codes(json.loads(out)["results"][0])
        assert codes == ({"private_key_outside_locations"} if not rule_args else {"private_key_missing"})
        if not rule_args:
            code, out, _ = cli.run("evaluate", str(facts_path))
            assert [result["status"] for result in json.loads(out)["results"]] == ["failed", "passed"]


def test_check_evaluates_the_rules_it_collected_for(
    cli: Cli, ca: CertKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process adds a rule while check collects: that rule must not be evaluated
    # against facts gathered without its locations.
    import certposture.cli as cli_module

    ca_id = cli.add_ca(ca)
    first_cert, first_key = pem_pair(cli, good_leaf(ca), "first")
    second_cert, second_key = pem_pair(cli, good_leaf(ca), "second")
    cli.add_rule(ca_id, name="first", locations={"paths": [first_cert, first_key]})
    second_rule = {
        "name": "second",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": [second_cert, second_key]},
        },
    }
    (cli.work / "second.json").write_text(json.dumps(second_rule))
    collect = cli_module._collect

    def collect_then_add_rule(*arguments: Any) -> Any:
        facts = collect(*arguments)
        assert main(["--home", str(cli.home), "rules", "add", str(cli.work / "second.json")]) == 0
        return facts

    monkeypatch.setattr(cli_module, "_collect", collect_then_add_rule)
    code, out, err = cli.run("check", "--hostname", HOSTNAME, "--serial-number", SERIAL)

    assert code == 0, err
    # stdout starts with the id that the concurrent `rules add` printed.
    results = json.loads(out[out.index("{") :])
    assert [result["rule_name"] for result in results["results"]] == ["first"]
