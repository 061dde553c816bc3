"""Match safety: names and keys that look like the expected ones never pass, end to end with the shipped policy.

Each case collects real certificates from tests/certgen with the CLI and
evaluates them with the shipped Rego policy, at a fixed time inside the
certificates' validity. The match must be literal: variables are substituted
once, regular-expression characters and NUL bytes are plain characters, and
only the ASCII letters A-Z are compared without case.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from tests.certgen import CertKey, make_ca, make_leaf
from tests.test_end_to_end import Cli, ca, cli

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

AT = "2026-12-04T19:00:00Z"
HOSTNAME = "pf2abc12"
SERIAL = "PF2ABC12"
# Certificates are valid around the fixed evaluation time, so the results do not depend on today's date.
VALIDITY = {
    "not_before": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "not_after": dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
}


@dataclass
class Outcome:
    """Exit code and the one rule result of an evaluation, with the facts it read."""

    code: int
    result: dict[str, Any]
    facts: dict[str, Any]

    def candidate(self, leaf: CertKey) -> dict[str, Any]:
        (found,) = [c for c in self.result["candidates"] if c["fingerprint_sha256"] == leaf.fingerprint]
        return found

    def reason_codes(self, leaf: CertKey) -> list[str]:
        return [reason["code"] for reason in self.candidate(leaf)["reasons"]]


def leaf(ca: CertKey, cn: str | Sequence[str] | None, **arguments: Any) -> CertKey:
    return make_leaf(ca, cn, key_type="ec", **{**VALIDITY, **arguments})


def evaluate(
    cli: Cli,
    ca_id: str,
    certificates: Sequence[CertKey],
    *,
    keys: Sequence[CertKey] | None = None,
    hostname: str = HOSTNAME,
    serial_number: str = SERIAL,
    **rule_input: Any,
) -> Outcome:
    """Write each certificate and key to its own file, store one rule over them, collect and evaluate."""
    paths = []
    for index, certificate in enumerate(certificates):
        paths.append(str(certificate.write_cert(cli.work / f"certificate-{index}.pem")))
    for index, key_owner in enumerate(certificates if keys is None else keys):
        paths.append(str(key_owner.write_key(cli.work / f"key-{index}.pem")))
    rule_id = cli.add_rule(ca_id, locations={"paths": paths}, **rule_input)

    facts_path = cli.work / "facts.json"
    path_options = [option for path in paths for option in ("--path", path)]
    identity = ["--hostname", hostname, "--serial-number", serial_number]
    code, _, err = cli.run("collect", *identity, *path_options, "-o", str(facts_path))
    assert code == 0, err
    code, out, err = cli.run("evaluate", str(facts_path), "--rule", rule_id, "--at", AT)
    assert "Traceback" not in err
    (result,) = json.loads(out)["results"]
    return Outcome(code, result, json.loads(facts_path.read_text()))


def assert_passed(outcome: Outcome, matched: CertKey) -> None:
    assert outcome.result["status"] == "passed", outcome.result
    assert outcome.code == 0
    assert outcome.result["matched_certificates"] == [matched.fingerprint]


def assert_failed(outcome: Outcome, candidate: CertKey, codes: list[str]) -> None:
    assert outcome.result["status"] == "failed", outcome.result
    assert outcome.code == 1
    assert outcome.result["passed"] is False
    assert outcome.result["matched_certificates"] == []
    assert outcome.reason_codes(candidate) == codes


# Variable substitution


@pytest.mark.parametrize(
    ("hostname", "serial_number"),
    [
        ("h${serial_number}", "S${hostname}"),
        ("${hostname}", "${serial_number}"),
        ("${serial_number}", "${serial_number}"),
    ],
)
def test_cn_variables_substituted_once(cli: Cli, ca: CertKey, hostname: str, serial_number: str) -> None:
    ca_id = cli.add_ca(ca)
    template = "${hostname}/${serial_number}"
    literal = leaf(ca, f"{hostname}/{serial_number}")

    outcome = evaluate(cli, ca_id, [literal], hostname=hostname, serial_number=serial_number, cn=template)

    assert_passed(outcome, literal)
    assert outcome.candidate(literal)["reasons"] == []


@pytest.mark.parametrize(
    "expanded",
    [
        "hS${hostname}/S${hostname}",
        "h${serial_number}/Sh${serial_number}",
        "hS${hostname}/Sh${serial_number}",
        "h/S",
    ],
)
def test_cn_expanded_twice_fails(cli: Cli, ca: CertKey, expanded: str) -> None:
    ca_id = cli.add_ca(ca)
    twice = leaf(ca, expanded)

    outcome = evaluate(
        cli,
        ca_id,
        [twice],
        hostname="h${serial_number}",
        serial_number="S${hostname}",
        cn="${hostname}/${serial_number}",
    )

    assert_failed(outcome, twice, ["cn_mismatch"])
    (reason,) = outcome.candidate(twice)["reasons"]
    assert reason["expected"] == "h${serial_number}/S${hostname}"
    assert reason["actual"] == [expanded]


@pytest.mark.parametrize(
    ("hostname", "serial_number", "template", "literal", "expanded"),
    [
        ("${serial_number}", SERIAL, "${hostname}.corp.example", "${serial_number}", SERIAL),
        (HOSTNAME, "${hostname}", "${serial_number}.corp.example", "${hostname}", HOSTNAME),
    ],
)
def test_san_variables_substituted_once(
    cli: Cli, ca: CertKey, hostname: str, serial_number: str, template: str, literal: str, expanded: str
) -> None:
    ca_id = cli.add_ca(ca)
    once = leaf(ca, "device", sans=[f"{literal}.corp.example"])
    twice = leaf(ca, "device", sans=[f"{expanded}.corp.example"])
    identity = {"hostname": hostname, "serial_number": serial_number}

    outcome = evaluate(cli, ca_id, [once], **identity, subject_alternative_names=[template])
    assert_passed(outcome, once)

    outcome = evaluate(cli, ca_id, [twice], **identity, subject_alternative_names=[template])
    assert_failed(outcome, twice, ["san_mismatch"])


# Regular-expression characters


REGEX_CNS = [
    (".*", "anything"),
    ("^device$", "device"),
    ("[a-z]+", "abc"),
    ("dev.ce", "device"),
    ("devic?e", "device"),
    ("(device|laptop)", "laptop"),
    ("device\\", "device"),
    ("\\d+", "123"),
    ("\\.", "."),
    ("device*", "devic"),
    ("%s", "device"),
]


@pytest.mark.parametrize(("pattern", "text"), REGEX_CNS)
def test_cn_regex_characters_match_literally(cli: Cli, ca: CertKey, pattern: str, text: str) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, text)
    same = leaf(ca, pattern)

    outcome = evaluate(cli, ca_id, [other], cn=pattern)
    assert_failed(outcome, other, ["cn_mismatch"])

    outcome = evaluate(cli, ca_id, [same], cn=pattern)
    assert_passed(outcome, same)


@pytest.mark.parametrize(
    ("rule_san", "certificate_san"),
    [
        (".*", "host.corp.example"),
        ("*.corp.example", "host.corp.example"),
        ("host.corp.example", "*.corp.example"),
        ("host.corp.example", "host.corp.example."),
        ("[a-z]+.corp.example", "host.corp.example"),
        ("host.corp.example$", "host.corp.example"),
        ("^host", "host"),
        ("host\\.corp\\.example", "host.corp.example"),
    ],
)
def test_san_regex_characters_match_literally(
    cli: Cli, ca: CertKey, rule_san: str, certificate_san: str
) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, "device", sans=[certificate_san])
    same = leaf(ca, "device", sans=[rule_san])

    outcome = evaluate(cli, ca_id, [other], subject_alternative_names=[rule_san])
    assert_failed(outcome, other, ["san_mismatch"])

    outcome = evaluate(cli, ca_id, [same], subject_alternative_names=[rule_san])
    assert_passed(outcome, same)


def test_hostname_with_regex_characters_matches_literally(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, "device", sans=["host.corp.example"])
    same = leaf(ca, "device", sans=[".*.corp.example"])
    rule = {"subject_alternative_names": ["${hostname}.corp.example"], "cn": "device"}

    assert_failed(evaluate(cli, ca_id, [other], hostname=".*", **rule), other, ["san_mismatch"])
    assert_passed(evaluate(cli, ca_id, [same], hostname=".*", **rule), same)


# NUL bytes


@pytest.mark.parametrize(
    ("rule_cn", "certificate_cn"),
    [
        ("device", "device\x00.evil.example"),
        ("device\x00.evil.example", "device"),
        ("device\x00a", "device\x00b"),
    ],
)
def test_cn_nul_not_a_terminator(cli: Cli, ca: CertKey, rule_cn: str, certificate_cn: str) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, certificate_cn)

    outcome = evaluate(cli, ca_id, [other], cn=rule_cn)

    assert outcome.facts["certificates"][0]["subject"]["common_names"] == [certificate_cn]
    assert_failed(outcome, other, ["cn_mismatch"])


def test_cn_with_nul_matches_itself(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    same = leaf(ca, "device\x00.evil.example")
    assert_passed(evaluate(cli, ca_id, [same], cn="device\x00.evil.example"), same)


@pytest.mark.parametrize(
    ("rule_san", "certificate_san"),
    [
        ("host.corp.example", "host.corp.example\x00.evil.example"),
        ("host.corp.example\x00.evil.example", "host.corp.example"),
        ("device@corp.example", x509.RFC822Name("device@corp.example\x00.evil.example")),
        ("https://host.corp.example", x509.UniformResourceIdentifier("https://host.corp.example\x00@evil")),
    ],
)
def test_san_nul_not_a_terminator(
    cli: Cli, ca: CertKey, rule_san: str, certificate_san: str | x509.GeneralName
) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, "device", sans=[certificate_san])

    outcome = evaluate(cli, ca_id, [other], subject_alternative_names=[rule_san])

    names = outcome.facts["certificates"][0]["subject_alternative_names"]
    value = certificate_san if isinstance(certificate_san, str) else certificate_san.value
    assert names["dns"] + names["email"] + names["uri"] == [value]
    assert_failed(outcome, other, ["san_mismatch"])


# Unicode case


UNICODE_LOOKALIKES = [
    ("kelvin", "\u212aelvin"),  # KELVIN SIGN, which lower() turns into k
    ("\u212aelvin", "kelvin"),
    ("\u212aelvin", "Kelvin"),
    ("istanbul", "\u0130stanbul"),  # LATIN CAPITAL LETTER I WITH DOT ABOVE
    ("ISTANBUL", "\u0131stanbul"),  # LATIN SMALL LETTER DOTLESS I, which upper() turns into I
    ("i\u0307stanbul", "\u0130stanbul"),  # what lower() makes of U+0130
    ("strasse", "stra\u00dfe"),  # LATIN SMALL LETTER SHARP S, which casefold() turns into ss
    ("STRASSE", "stra\u00dfe"),
    ("stra\u1e9ee", "stra\u00dfe"),  # LATIN CAPITAL LETTER SHARP S
    ("\u03bf\u03b4\u03bf\u03c2", "\u039f\u0394\u039f\u03a3"),  # final sigma against capital sigma
    ("\u03bf\u03b4\u03bf\u03c3", "\u03bf\u03b4\u03bf\u03c2"),  # sigma against final sigma
    ("\u00e9", "e\u0301"),  # composed against decomposed e with acute accent
    ("device", "\uff44\uff45\uff56\uff49\uff43\uff45"),  # fullwidth letters
    ("\u00c9cole", "\u00e9cole"),  # letters outside A-Z keep their case
]


@pytest.mark.parametrize(("rule_cn", "certificate_cn"), UNICODE_LOOKALIKES)
def test_cn_unicode_case_not_folded(cli: Cli, ca: CertKey, rule_cn: str, certificate_cn: str) -> None:
    ca_id = cli.add_ca(ca)
    other = leaf(ca, certificate_cn)

    outcome = evaluate(cli, ca_id, [other], cn=rule_cn)

    assert outcome.facts["certificates"][0]["subject"]["common_names"] == [certificate_cn]
    assert_failed(outcome, other, ["cn_mismatch"])


@pytest.mark.parametrize(
    ("rule_cn", "certificate_cn"),
    [
        ("stra\u00dfe", "stra\u00dfe"),
        ("\u039f\u0394\u039f\u03a3", "\u039f\u0394\u039f\u03a3"),
        ("\u212aelvin", "\u212aELVIN"),
        ("Device-\u00e9", "dEVICE-\u00e9"),
    ],
)
def test_cn_unicode_equal_or_ascii_case_matches(
    cli: Cli, ca: CertKey, rule_cn: str, certificate_cn: str
) -> None:
    ca_id = cli.add_ca(ca)
    same = leaf(ca, certificate_cn)
    assert_passed(evaluate(cli, ca_id, [same], cn=rule_cn), same)


@pytest.mark.parametrize("rule_san", ["\u212aelvin.corp.example", "\u0130stanbul.corp.example"])
def test_san_unicode_case_not_folded(cli: Cli, ca: CertKey, rule_san: str) -> None:
    ca_id = cli.add_ca(ca)
    ascii_names = leaf(ca, "device", sans=["kelvin.corp.example", "istanbul.corp.example"])

    outcome = evaluate(cli, ca_id, [ascii_names], subject_alternative_names=[rule_san])

    assert_failed(outcome, ascii_names, ["san_mismatch"])


# Several CN attributes


@pytest.mark.parametrize("common_names", [["other", "device"], ["device", "other"], ["DEVICE", "device"]])
def test_duplicate_cn_any_one_matches(cli: Cli, ca: CertKey, common_names: list[str]) -> None:
    ca_id = cli.add_ca(ca)
    several = leaf(ca, common_names)

    outcome = evaluate(cli, ca_id, [several], cn="device")

    assert outcome.facts["certificates"][0]["subject"]["common_names"] == common_names
    assert_passed(outcome, several)


def test_duplicate_cn_none_matches(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    several = leaf(ca, ["other", "device.corp"])

    outcome = evaluate(cli, ca_id, [several], cn="device")

    assert_failed(outcome, several, ["cn_mismatch"])
    (reason,) = outcome.candidate(several)["reasons"]
    assert reason == {
        "condition": "cn",
        "code": "cn_mismatch",
        "message": 'none of the certificate CNs "other", "device.corp" equals the expected "device" '
        "(compared ignoring the case of ASCII letters)",
        "expected": "device",
        "actual": ["other", "device.corp"],
    }


def test_cn_inside_another_attribute_does_not_count(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    organization = x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "device")
    unit = x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "CN=device")
    disguised = leaf(ca, "other", extra_subject=[organization, unit])

    outcome = evaluate(cli, ca_id, [disguised], cn="device")

    assert outcome.facts["certificates"][0]["subject"]["common_names"] == ["other"]
    assert_failed(outcome, disguised, ["cn_mismatch"])


# Look-alike certificates


@dataclass
class Twins:
    """A good certificate and look-alikes with its subject, serial number and issuer name."""

    good: CertKey
    forged: CertKey
    reissued: CertKey


@pytest.fixture
def twins(ca: CertKey) -> Twins:
    impostor = make_ca(ca.cert.subject.rfc4514_string().removeprefix("CN="))
    assert impostor.cert.subject == ca.cert.subject
    arguments: dict[str, Any] = {"sans": [f"{HOSTNAME}.corp.example"], "serial": 0x1234567890ABCDEF}
    good = leaf(ca, f"{SERIAL}_mycompany", **arguments)
    forged = leaf(impostor, f"{SERIAL}_mycompany", **arguments)
    reissued = leaf(ca, f"{SERIAL}_mycompany", **arguments)
    for twin in (forged, reissued):
        assert twin.cert.subject == good.cert.subject
        assert twin.cert.serial_number == good.cert.serial_number
        assert twin.cert.issuer == good.cert.issuer
        assert twin.fingerprint != good.fingerprint
        assert twin.cert.public_key() != good.cert.public_key()
    return Twins(good, forged, reissued)


FULL_RULE: dict[str, Any] = {
    "cn": "${serial_number}_mycompany",
    "subject_alternative_names": ["${hostname}.corp.example"],
}


def test_good_certificate_passes(cli: Cli, ca: CertKey, twins: Twins) -> None:
    ca_id = cli.add_ca(ca)
    assert_passed(evaluate(cli, ca_id, [twins.good], **FULL_RULE), twins.good)


def test_same_names_other_signer_fails(cli: Cli, ca: CertKey, twins: Twins) -> None:
    ca_id = cli.add_ca(ca)

    outcome = evaluate(cli, ca_id, [twins.forged], **FULL_RULE)

    assert_failed(outcome, twins.forged, ["signer_mismatch"])
    (certificate,) = outcome.facts["certificates"]
    assert certificate["signed_by"] == []
    assert certificate["private_key"]["present"] is True


def test_same_names_key_of_good_certificate_fails(cli: Cli, ca: CertKey, twins: Twins) -> None:
    ca_id = cli.add_ca(ca)

    outcome = evaluate(cli, ca_id, [twins.reissued], keys=[twins.good], **FULL_RULE)

    assert_failed(outcome, twins.reissued, ["private_key_missing"])
    (certificate,) = outcome.facts["certificates"]
    assert certificate["signed_by"] == [ca_id]
    assert certificate["private_key"]["status"] == "missing"


def test_same_names_only_key_owner_matches(cli: Cli, ca: CertKey, twins: Twins) -> None:
    """With the good certificate, its key and both look-alikes in the paths, only the good one matches."""
    ca_id = cli.add_ca(ca)

    outcome = evaluate(
        cli, ca_id, [twins.forged, twins.reissued, twins.good], keys=[twins.good, twins.forged], **FULL_RULE
    )

    assert_passed(outcome, twins.good)
    assert outcome.reason_codes(twins.forged) == ["signer_mismatch"]
    assert outcome.reason_codes(twins.reissued) == ["private_key_missing"]
    assert outcome.reason_codes(twins.good) == []
