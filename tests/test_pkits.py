"""NIST PKITS certificate pairs through the collector, the store and the shipped policy.

PKITS (the NIST Public Key Interoperability Test Suite, as shipped in
cryptography-vectors) has certificates whose signatures are valid, invalid or
made with DSA. Each case here stores the issuer as a signing certificate the
way `certposture ca add` does, adds one rule that names it and searches only
the certificate's own file, collects that file and evaluates the rule. The
rules check only the signer and validity conditions, because PKITS
certificates have no client-certificate EKU, SAN or private key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest

from certposture.posture import evaluate_facts, parse_time
from certposture.rules import validate_rules
from certposture.signing import parse_signing_certificate
from certposture.store import Store
from collector.collect import Locations, collect
from collector.facts import Certificate, Facts
from collector.signers import Signer
from tests.test_end_to_end import HOSTNAME, SERIAL, Cli, cli

__all__ = ["cli"]  # fixture, imported for pytest

PKITS_CERTS = Path(cryptography_vectors.__file__).parent / "x509" / "PKITS_data" / "certs"

# Inside the validity period of every PKITS certificate (2010-01-01 to 2030-12-31)
# except those that the suite makes expired or not yet valid.
EVALUATED_AT = "2026-06-01T00:00:00Z"


@dataclass(frozen=True)
class Pair:
    """A PKITS certificate, the signing certificate a rule names for it, and the reason codes expected."""

    certificate: str
    issuer: str
    codes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.certificate}-by-{self.issuer}"

    @property
    def path(self) -> str:
        return str(PKITS_CERTS / f"{self.certificate}.crt")


PAIRS = (
    # Direct issuer with a valid signature.
    Pair("ValidCertificatePathTest1EE", "GoodCACert"),
    Pair("GoodCACert", "TrustAnchorRootCertificate"),
    Pair("DSACACert", "TrustAnchorRootCertificate"),
    Pair("pathLenConstraint0CACert", "TrustAnchorRootCertificate"),
    Pair("ValidpathLenConstraintTest7EE", "pathLenConstraint0CACert"),
    Pair("ValidUTF8StringEncodedNamesTest9EE", "UTF8StringEncodedNamesCACert"),
    Pair("ValidRFC3280MandatoryAttributeTypesTest7EE", "RFC3280MandatoryAttributeTypesCACert"),
    Pair("ValidGeneralizedTimenotAfterDateTest8EE", "GoodCACert"),
    Pair("Validpre2000UTCnotBeforeDateTest3EE", "GoodCACert"),
    # Only the direct issuer's signature is checked, so the CA's own bad signature
    # and its expired validity period do not matter here.
    Pair("InvalidCASignatureTest2EE", "BadSignedCACert"),
    Pair("InvalidCAnotAfterDateTest5EE", "BadnotAfterDateCACert"),
    # The issuer name matches, but the signature does not verify.
    Pair("InvalidEESignatureTest3EE", "GoodCACert", ("signer_mismatch",)),
    Pair("BadSignedCACert", "TrustAnchorRootCertificate", ("signer_mismatch",)),
    # No chain building: the root above the issuer is not a signer.
    Pair("ValidCertificatePathTest1EE", "TrustAnchorRootCertificate", ("signer_mismatch",)),
    # NOTE: cryptography compares issuer and subject names byte for byte, not with the
    # LDAP StringPrep rules (case and spaces ignored) of RFC 5280 section 7.1, so this
    # valid PKITS path fails the signer condition.
    Pair("ValidNameChainingCapitalizationTest5EE", "GoodCACert", ("signer_mismatch",)),
    # cryptography 50 cannot verify DSA with SHA-1, so valid and invalid signatures alike fail.
    Pair("ValidDSASignaturesTest4EE", "DSACACert", ("signature_unsupported",)),
    Pair("InvalidDSASignatureTest6EE", "DSACACert", ("signature_unsupported",)),
    # Signed by the issuer, outside the validity period.
    Pair("InvalidEEnotAfterDateTest6EE", "GoodCACert", ("expired",)),
    Pair("Invalidpre2000UTCEEnotAfterDateTest7EE", "GoodCACert", ("expired",)),
    Pair("InvalidEEnotBeforeDateTest2EE", "GoodCACert", ("not_yet_valid",)),
)


@dataclass(frozen=True)
class PkitsRun:
    facts: Facts
    results: dict[Pair, dict[str, Any]]

    def certificate(self, name: str) -> Certificate:
        path = str(PKITS_CERTS / f"{name}.crt")
        (certificate,) = [item for item in self.facts.certificates if item.source.location == path]
        return certificate


def _rule(pair: Pair, rule_id: str) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": f"{pair.certificate} signed by {pair.issuer}",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": pair.issuer,
            "operating_system": "linux",
            "check_private_key": False,
            "locations": {"paths": [pair.path]},
        },
    }


@pytest.fixture(scope="module")
def pkits_run(tmp_path_factory: pytest.TempPathFactory) -> PkitsRun:
    """Store every issuer, add one rule per pair, collect every certificate file once and evaluate."""
    store = Store(tmp_path_factory.mktemp("pkits-home"))
    for issuer in sorted({pair.issuer for pair in PAIRS}):
        path = PKITS_CERTS / f"{issuer}.crt"
        parsed = parse_signing_certificate(path.read_bytes(), str(path))
        store.add_signing_certificate(parsed, issuer, False, issuer)

    rule_ids = {pair: f"pkits-{number}" for number, pair in enumerate(PAIRS)}
    documents = [_rule(pair, rule_ids[pair]) for pair in PAIRS]
    rules, problems = validate_rules(documents, store.signing_certificate_exists)
    assert problems == []
    store.add_rules(rules)

    signers = [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]
    paths = tuple(sorted({pair.path for pair in PAIRS}))
    facts = collect(
        Locations(paths=paths), signers, hostname=HOSTNAME, serial_number=SERIAL, platform="linux"
    )
    assert facts.errors == []

    document, errors = evaluate_facts(store, facts, at=parse_time(EVALUATED_AT))
    assert errors == []
    results = {result["rule_id"]: result for result in document["results"]}
    return PkitsRun(facts, {pair: results[rule_id] for pair, rule_id in rule_ids.items()})


def _candidate_reasons(result: dict[str, Any]) -> list[dict[str, Any]]:
    (candidate,) = result["candidates"]
    reasons: list[dict[str, Any]] = candidate["reasons"]
    return reasons


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: pair.label)
def test_pkits_pair(pkits_run: PkitsRun, pair: Pair) -> None:
    result = pkits_run.results[pair]
    codes = tuple(reason["code"] for reason in _candidate_reasons(result))

    assert codes == pair.codes, _candidate_reasons(result)
    assert result["status"] == ("failed" if pair.codes else "passed")
    assert result["passed"] is not pair.codes


def test_pkits_invalid_signature_recorded(pkits_run: PkitsRun) -> None:
    ee = pkits_run.certificate("InvalidEESignatureTest3EE")
    ca = pkits_run.certificate("BadSignedCACert")

    assert ee.signed_by == []
    assert [(entry.id, entry.status) for entry in ee.unverified_signers] == [("GoodCACert", "invalid")]
    assert ca.signed_by == []
    assert [(entry.id, entry.status) for entry in ca.unverified_signers] == [
        ("TrustAnchorRootCertificate", "invalid")
    ]


def test_pkits_other_issuer_not_recorded(pkits_run: PkitsRun) -> None:
    ee = pkits_run.certificate("ValidCertificatePathTest1EE")

    assert ee.signed_by == ["GoodCACert"]
    assert ee.unverified_signers == []


@pytest.mark.parametrize("name", ["ValidDSASignaturesTest4EE", "InvalidDSASignatureTest6EE"])
def test_pkits_dsa_signature_unsupported(pkits_run: PkitsRun, name: str) -> None:
    certificate = pkits_run.certificate(name)
    (unverified,) = certificate.unverified_signers

    assert certificate.signed_by == []
    assert unverified.id == "DSACACert"
    assert unverified.status == "unsupported"
    assert unverified.signature_algorithm == "dsa-with-sha1"

    (reason,) = _candidate_reasons(pkits_run.results[Pair(name, "DSACACert", ("signature_unsupported",))])
    assert reason["condition"] == "signer"
    assert "signature algorithm dsa-with-sha1 could not be checked" in reason["message"]
    assert "Unsupported signature algorithm" in reason["message"]
    assert reason["expected"] == {
        "certificate_id": "DSACACert",
        "subject": "CN=DSA CA,O=Test Certificates 2011,C=US",
    }
    assert reason["actual"]["unverified_signer"] == unverified.model_dump(mode="json")


def test_pkits_dsa_ca_through_cli(cli: Cli) -> None:
    """`ca add` accepts a CA with a DSA key, and a DSA-signed certificate fails with a clear reason."""
    code, out, err = cli.run("ca", "add", "--id", "dsa-ca", str(PKITS_CERTS / "DSACACert.crt"))
    assert code == 0, err
    assert json.loads(out)["subject"] == "CN=DSA CA,O=Test Certificates 2011,C=US"

    pair = Pair("ValidDSASignaturesTest4EE", "dsa-ca")
    rule_path = cli.work / "rule.json"
    rule_path.write_text(json.dumps(_rule(pair, "dsa-rule")))
    code, _, err = cli.run("rules", "add", str(rule_path))
    assert code == 0, err

    code, facts, results = cli.check("--path", pair.path, at=EVALUATED_AT)

    assert code == 1
    (certificate,) = facts["certificates"]
    assert certificate["unverified_signers"][0]["status"] == "unsupported"
    (result,) = results["results"]
    assert result["status"] == "failed"
    assert [reason["code"] for reason in _candidate_reasons(result)] == ["signature_unsupported"]
