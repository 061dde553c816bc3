from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from collector.facts import Certificate, CertificateSource, CollectionError, PrivateKey
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.keychain import collect_keychain
from tests.certgen import CertKey, make_ca, make_leaf
from tests.collector.macos_tools import (
    EXPIRED,
    GARBAGE,
    NOT_TRUSTED,
    FakeTools,
    certificate_der,
    find_certificate_entry,
    find_certificate_output,
    find_identity_output,
    hash_lines,
    pem_block,
)

# Written out rather than imported from the module under test, so that a change of
# arguments (such as adding -v, which drops expired identities) fails these tests.
FIND_CERTIFICATE = ["security", "find-certificate", "-a", "-Z", "-p", "/Library/Keychains/System.keychain"]
FIND_IDENTITY = ["security", "find-identity", "-p", "ssl-client", "/Library/Keychains/System.keychain"]

# A DER SEQUENCE containing one INTEGER: valid base64 and DER, but not a certificate.
NOT_A_CERTIFICATE = bytes.fromhex("3003020105")


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools.install(tmp_path / "tools")
    monkeypatch.setenv("PATH", fake.path)
    return fake


@pytest.fixture(scope="module")
def device(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-1")


@pytest.fixture(scope="module")
def other(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-2")


def record_keychain(tools: FakeTools, certificates: bytes, identities: bytes | None = None) -> None:
    tools.record(FIND_CERTIFICATE, certificates)
    if identities is not None:
        tools.record(FIND_IDENTITY, identities)


def collect_system(signers: list[Signer] | None = None) -> SourceResult:
    return collect_keychain(["system"], signers or [])


def by_fingerprint(result: SourceResult, cert_key: CertKey) -> Certificate:
    matches = [cert for cert in result.certificates if cert.fingerprint_sha256 == cert_key.fingerprint]
    assert len(matches) == 1, f"expected the certificate {cert_key.fingerprint} once: {result}"
    return matches[0]


def fingerprints(result: SourceResult) -> set[str]:
    return {cert.fingerprint_sha256 for cert in result.certificates}


def sha1_upper(cert: x509.Certificate) -> str:
    return hashlib.sha1(certificate_der(cert)).hexdigest().upper()


def begin_line(preceding: bytes) -> int:
    """Return the line number of the BEGIN line of the entry that follows ``preceding`` output."""
    # The entry's two hash lines come first.
    return preceding.count(b"\n") + 3


def patch_der(cert: x509.Certificate, old: bytes, new: bytes) -> bytes:
    der = certificate_der(cert)
    assert der.count(old) == 1, "the bytes to patch must occur exactly once"
    return der.replace(old, new)


# Certificates and private keys


def test_keychain_key_present(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    record_keychain(
        tools,
        find_certificate_output([device.cert, ca.cert]),
        find_identity_output([(device.cert, "device-1", None)]),
    )
    result = collect_system()
    cert = by_fingerprint(result, device)
    assert cert.source == CertificateSource(type="keychain", location="system", label=None)
    assert cert.private_key == PrivateKey(present=True, status="present", location="system")
    assert cert.subject.common_names == ["device-1"]
    assert result.errors == []


def test_keychain_key_missing(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    record_keychain(
        tools,
        find_certificate_output([device.cert, ca.cert]),
        find_identity_output([(device.cert, "device-1", None)]),
    )
    result = collect_system()
    key = by_fingerprint(result, ca).private_key
    assert key.present is False
    assert key.status == "missing"
    assert key.reason is not None
    assert "no identity (certificate + private key)" in key.reason
    assert sha1_upper(ca.cert) in key.reason
    assert result.errors == []


def test_keychain_commands_run(tools: FakeTools, device: CertKey) -> None:
    record_keychain(tools, find_certificate_output([device.cert]), find_identity_output([]))
    collect_system()
    assert tools.calls() == [FIND_CERTIFICATE, FIND_IDENTITY]


def test_keychain_expired_identities_count(tools: FakeTools, ca: CertKey) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = make_leaf(ca, "expired", not_before=past - dt.timedelta(days=365), not_after=past)
    untrusted = make_leaf(make_ca("Unknown CA"), "untrusted")
    identities = find_identity_output(
        [(expired.cert, "expired", EXPIRED), (untrusted.cert, "untrusted", NOT_TRUSTED)]
    )
    assert b"     0 valid identities found" in identities
    record_keychain(tools, find_certificate_output([expired.cert, untrusted.cert]), identities)
    result = collect_system()
    assert by_fingerprint(result, expired).private_key.status == "present"
    assert by_fingerprint(result, untrusted).private_key.status == "present"
    assert result.errors == []


def test_keychain_valid_list_ignored(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    # Only "Matching identities" counts, even when "Valid identities only" lists another certificate.
    identities = find_identity_output(
        [(device.cert, "device-1", None)],
        valid_identities=[(device.cert, "device-1", None), (ca.cert, "CA", None)],
    )
    record_keychain(tools, find_certificate_output([device.cert, ca.cert]), identities)
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert by_fingerprint(result, ca).private_key.status == "missing"
    assert result.errors == []


def test_keychain_no_identities(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    identities = find_identity_output([])
    assert b"     0 identities found" in identities
    record_keychain(tools, find_certificate_output([device.cert, ca.cert]), identities)
    result = collect_system()
    assert {cert.private_key.status for cert in result.certificates} == {"missing"}
    assert len(result.certificates) == 2
    assert result.errors == []


def test_keychain_label_with_quotes(tools: FakeTools, device: CertKey, other: CertKey) -> None:
    labels = ['Corp "device" (laptop) ü', 'tricky" (CSSMERR_TP_CERT_EXPIRED)']
    identities = find_identity_output([(device.cert, labels[0], None), (other.cert, labels[1], EXPIRED)])
    record_keychain(tools, find_certificate_output([device.cert, other.cert]), identities)
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert by_fingerprint(result, other).private_key.status == "present"
    assert result.errors == []


def test_keychain_label_invalid_utf8(tools: FakeTools, device: CertKey) -> None:
    identities = find_identity_output([(device.cert, "LABEL", None)]).replace(b"LABEL", b"\xff\xfe\xc3(")
    record_keychain(tools, find_certificate_output([device.cert]), identities)
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert result.errors == []


def test_keychain_identity_without_digest(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    identities = find_identity_output([(device.cert, "device-1", None), (ca.cert, "CA", None)])
    identities = identities.replace(sha1_upper(ca.cert).encode(), b"!----- unable to get SHA-1 digest -----!")
    record_keychain(tools, find_certificate_output([device.cert, ca.cert]), identities)
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    ca_key = by_fingerprint(result, ca).private_key
    assert ca_key.status == "unverified"
    assert ca_key.reason is not None
    assert "without their SHA-1" in ca_key.reason
    assert [(error.step, error.location) for error in result.errors] == [("parse", "system")]


def test_keychain_signed_by(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    stranger = make_leaf(make_ca("Other CA"), "stranger")
    record_keychain(tools, find_certificate_output([device.cert, stranger.cert]), find_identity_output([]))
    result = collect_system([Signer("device-ca", ca.cert)])
    assert by_fingerprint(result, device).signed_by == ["device-ca"]
    assert by_fingerprint(result, stranger).signed_by == []


def test_keychain_empty(tools: FakeTools) -> None:
    record_keychain(tools, b"")
    result = collect_system()
    assert result.certificates == []
    assert result.errors == []
    # Without certificates there are no keys to look up.
    assert tools.calls() == [FIND_CERTIFICATE]


# find-certificate output


def test_keychain_sha1_lines_only(tools: FakeTools, device: CertKey) -> None:
    # security leaves out the SHA-256 line when it cannot compute that hash.
    certificates = find_certificate_output([device.cert], sha256_line=False)
    assert b"SHA-256" not in certificates
    record_keychain(tools, certificates, find_identity_output([(device.cert, "device-1", None)]))
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert result.errors == []


def test_keychain_sha256_mismatch(tools: FakeTools, ca: CertKey, device: CertKey, other: CertKey) -> None:
    wrong_sha256 = hashlib.sha256(certificate_der(other.cert)).hexdigest().upper()
    real_sha256 = hashlib.sha256(certificate_der(ca.cert)).hexdigest().upper()
    mismatched = find_certificate_entry(certificate_der(ca.cert)).replace(
        real_sha256.encode(), wrong_sha256.encode()
    )
    first = find_certificate_entry(certificate_der(device.cert))
    certificates = first + mismatched + find_certificate_entry(certificate_der(other.cert))
    record_keychain(tools, certificates, find_identity_output([(device.cert, "device-1", None)]))
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint, other.fingerprint}
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.source, error.location, error.step) == ("keychain", "system", "parse")
    assert "SHA-256" in error.message
    assert wrong_sha256 in error.message
    assert f"certificate at line {begin_line(first)} " in error.message


def test_keychain_sha1_mismatch(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    mismatched = find_certificate_entry(certificate_der(ca.cert)).replace(
        sha1_upper(ca.cert).encode(), sha1_upper(device.cert).encode()
    )
    record_keychain(
        tools,
        find_certificate_entry(certificate_der(device.cert)) + mismatched,
        find_identity_output([(device.cert, "device-1", None)]),
    )
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint}
    assert len(result.errors) == 1
    assert result.errors[0].step == "parse"
    assert "SHA-1" in result.errors[0].message


def test_keychain_broken_pem_between_good(
    tools: FakeTools, ca: CertKey, device: CertKey, other: CertKey
) -> None:
    first = find_certificate_entry(certificate_der(device.cert))
    certificates = (
        first
        + find_certificate_entry(NOT_A_CERTIFICATE)
        + find_certificate_entry(certificate_der(other.cert))
    )
    record_keychain(tools, certificates, find_identity_output([(other.cert, "device-2", None)]))
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "missing"
    assert by_fingerprint(result, other).private_key.status == "present"
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.source, error.location, error.step) == ("keychain", "system", "load")
    assert f"certificate at line {begin_line(first)} " in error.message


def test_keychain_bad_base64_block(tools: FakeTools, device: CertKey) -> None:
    bad_block = (
        hash_lines(b"x") + b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"
    )
    record_keychain(
        tools,
        bad_block + find_certificate_entry(certificate_der(device.cert)),
        find_identity_output([]),
    )
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint}
    assert [error.step for error in result.errors] == ["load"]


def late_failures(ca: CertKey) -> dict[str, bytes]:
    """DER certificates that load but fail at a later step, each by patching a valid certificate."""
    names = make_leaf(ca, "AAAAAAAA")
    extensions = make_leaf(ca, "device-x", sans=["a.example"])
    public_key = make_leaf(ca, "device-k", key_type="ec")
    point = public_key.cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        # A UTF8String that is not UTF-8.
        "names": patch_der(names.cert, b"\x0c\x08AAAAAAAA", b"\x0c\x08\xff\xfeAAAAAA"),
        # The SAN extension renamed to basicConstraints, which the certificate already has.
        "extensions": patch_der(extensions.cert, b"\x06\x03\x55\x1d\x11", b"\x06\x03\x55\x1d\x13"),
        # One bit of y flipped, which moves the point off the curve.
        "public_key": patch_der(public_key.cert, point, point[:-1] + bytes([point[-1] ^ 1])),
    }


@pytest.mark.parametrize("step", ["names", "extensions", "public_key"])
def test_keychain_late_parse_failure(tools: FakeTools, ca: CertKey, device: CertKey, step: str) -> None:
    broken = late_failures(ca)[step]
    certificates = find_certificate_entry(broken) + find_certificate_entry(certificate_der(device.cert))
    record_keychain(tools, certificates, find_identity_output([(device.cert, "device-1", None)]))
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.location, error.step) == ("system", step)
    assert hashlib.sha256(broken).hexdigest() in error.message


def test_keychain_truncated_output(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    last = find_certificate_entry(certificate_der(ca.cert))
    certificates = find_certificate_entry(certificate_der(device.cert)) + last[: len(last) // 2]
    record_keychain(tools, certificates, find_identity_output([(device.cert, "device-1", None)]))
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint}
    assert len(result.errors) == 1
    assert result.errors[0].step == "load"
    assert "no END line" in result.errors[0].message


def test_keychain_unexpected_lines(tools: FakeTools, device: CertKey) -> None:
    # Attribute output, as find-certificate prints without -p, does not belong here.
    certificates = b'keychain: "/Library/Keychains/System.keychain"\n' + find_certificate_output(
        [device.cert]
    )
    record_keychain(tools, certificates, find_identity_output([(device.cert, "device-1", None)]))
    result = collect_system()
    assert by_fingerprint(result, device).private_key.status == "present"
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.location, error.step) == ("system", "parse")
    assert "line 1" in error.message


def test_keychain_hash_lines_without_certificate(tools: FakeTools, ca: CertKey, device: CertKey) -> None:
    certificates = find_certificate_output([device.cert]) + hash_lines(certificate_der(ca.cert))
    record_keychain(tools, certificates, find_identity_output([]))
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint}
    assert len(result.errors) == 1
    assert result.errors[0].step == "parse"
    assert "not followed by a certificate" in result.errors[0].message


def test_keychain_garbage_certificate_output(tools: FakeTools) -> None:
    record_keychain(tools, GARBAGE)
    result = collect_system()
    assert result.certificates == []
    assert [(error.location, error.step) for error in result.errors] == [("system", "parse")]


def test_keychain_pem_without_trailing_newline(tools: FakeTools, device: CertKey) -> None:
    certificates = hash_lines(certificate_der(device.cert)) + pem_block(certificate_der(device.cert)).rstrip()
    record_keychain(tools, certificates, find_identity_output([]))
    result = collect_system()
    assert fingerprints(result) == {device.fingerprint}
    assert result.errors == []


# Tool failures


def test_keychain_security_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = FakeTools.install(tmp_path / "tools", tools=["ioreg", "sw_vers"])
    monkeypatch.setenv("PATH", tools.path)
    result = collect_system()
    assert result.certificates == []
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.source, error.location, error.step) == ("keychain", "system", "command")
    assert "security was not found on PATH" in error.message


def test_keychain_find_certificate_fails(tools: FakeTools) -> None:
    stderr = "security: SecKeychainSearchCreateFromAttributes: The specified keychain could not be found."
    tools.record(FIND_CERTIFICATE, status=50, stderr=stderr)
    result = collect_system()
    assert result.certificates == []
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.location, error.step) == ("system", "command")
    assert "exited with status 50" in error.message
    assert "The specified keychain could not be found." in error.message
    assert tools.calls() == [FIND_CERTIFICATE]


def test_keychain_find_identity_fails(tools: FakeTools, device: CertKey) -> None:
    record_keychain(tools, find_certificate_output([device.cert]))
    tools.record(FIND_IDENTITY, status=1, stderr="security: SecIdentitySearchCreateWithPolicy: failed")
    result = collect_system()
    key = by_fingerprint(result, device).private_key
    assert key.present is False
    assert key.status == "unverified"
    assert key.reason is not None
    assert "failed" in key.reason
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.location, error.step) == ("system", "command")
    assert "exited with status 1" in error.message


def unreadable_identity_outputs(device: CertKey, ca: CertKey) -> dict[str, bytes]:
    """find-identity outputs that list the device's identity but cannot be trusted as a whole."""
    good = find_identity_output([(device.cert, "device-1", None)])
    ca_sha1 = sha1_upper(ca.cert)
    return {
        "garbage": GARBAGE,
        "truncated": good[: good.index(b"identities found") - 3],
        "count_mismatch": good.replace(b"     1 identities found", b"     2 identities found"),
        "no_valid_list": good[: good.index(b"  Valid identities only")],
        "numbering_gap": good.replace(b"  1) ", b"  2) ", 1),
        "other_policy": good.replace(b"Policy: SSL (client)", b"Policy: SSL (server)"),
        "trailing_line": good + b"unexpected\n",
        # A label with a line break that imitates an identity line for the CA.
        "label_line_break": find_identity_output([(device.cert, f'device"\n  2) {ca_sha1} "injected', None)]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "truncated",
        "count_mismatch",
        "no_valid_list",
        "numbering_gap",
        "other_policy",
        "trailing_line",
        "label_line_break",
    ],
)
def test_keychain_identity_output_unreadable(
    tools: FakeTools, ca: CertKey, device: CertKey, case: str
) -> None:
    identities = unreadable_identity_outputs(device, ca)[case]
    record_keychain(tools, find_certificate_output([device.cert, ca.cert]), identities)
    result = collect_system()
    for cert in result.certificates:
        assert cert.private_key.present is False
        assert cert.private_key.status == "unverified"
        assert cert.private_key.reason is not None
        assert "could not be read" in cert.private_key.reason
    assert len(result.certificates) == 2
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.source, error.location, error.step) == ("keychain", "system", "parse")


# Trust store names


def test_keychain_user_store_rejected(tools: FakeTools) -> None:
    result = collect_keychain(["user"], [])
    assert result.certificates == []
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.source, error.location, error.step) == ("keychain", "user", "open")
    assert "Windows only" in error.message
    assert "'system'" in error.message
    assert tools.calls() == []


def test_keychain_unknown_store_rejected(tools: FakeTools) -> None:
    result = collect_keychain(["login"], [])
    assert result.errors == [
        CollectionError(
            source="keychain",
            location="login",
            step="open",
            message="unknown trust store 'login'. Mac rules must use 'system' "
            "(the System keychain /Library/Keychains/System.keychain)",
        )
    ]
    assert tools.calls() == []


def test_keychain_user_beside_system(tools: FakeTools, device: CertKey) -> None:
    record_keychain(tools, find_certificate_output([device.cert]), find_identity_output([]))
    result = collect_keychain(["user", "system"], [])
    assert fingerprints(result) == {device.fingerprint}
    assert [(error.location, error.step) for error in result.errors] == [("user", "open")]


def test_keychain_store_listed_twice(tools: FakeTools, device: CertKey) -> None:
    record_keychain(tools, find_certificate_output([device.cert]), find_identity_output([]))
    result = collect_keychain(["system", "system"], [])
    assert len(result.certificates) == 1
    assert tools.calls() == [FIND_CERTIFICATE, FIND_IDENTITY]
