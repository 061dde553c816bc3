from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from collector.facts import CertificateSource, PrivateKey
from collector.signers import Signer
from collector.x509facts import (
    CertificateError,
    certificate_facts,
    format_serial_number,
    load_certificate,
    load_certificates,
    public_key_der,
    split_pem,
)
from tests.certgen import CLIENT_AUTH, EMAIL_PROTECTION, CertKey, make_ca, make_leaf, with_huge_rsa_modulus

SOURCE = CertificateSource(type="pem", location="/certs/client.pem")
MISSING = PrivateKey(present=False, status="missing", reason="test")


def test_facts_fingerprint_lowercase_hex(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    facts = certificate_facts(leaf.cert, SOURCE, MISSING, [])
    assert facts.fingerprint_sha256 == leaf.fingerprint
    assert facts.fingerprint_sha256 == facts.fingerprint_sha256.lower()
    assert ":" not in facts.fingerprint_sha256
    assert len(facts.fingerprint_sha256) == 64


@pytest.mark.parametrize("serial", [1, 10, 0x80, 0xFF00, 2**158 + 12345])
def test_serial_matches_openssl(tmp_path: Path, ca: CertKey, serial: int) -> None:
    leaf = make_leaf(ca, "device-1", serial=serial)
    path = leaf.write_cert(tmp_path / "leaf.pem")
    output = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-serial"], capture_output=True, text=True, check=True
    ).stdout.strip()
    facts = certificate_facts(leaf.cert, SOURCE, MISSING, [])
    assert output == f"serial={facts.serial_number}"


def test_serial_format_negative() -> None:
    assert format_serial_number(-0x1A) == "-1A"


def test_names_rfc4514_and_all_cns(ca: CertKey) -> None:
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc")
    leaf = make_leaf(ca, ["first", "second"], extra_subject=[organization])
    facts = certificate_facts(leaf.cert, SOURCE, MISSING, [])
    assert facts.subject.dn == leaf.cert.subject.rfc4514_string()
    assert facts.subject.dn == "CN=second,CN=first,O=Example\\, Inc"
    assert facts.subject.common_names == ["first", "second"]
    assert facts.issuer.dn == "CN=Example Device CA"


def test_names_without_cn(ca: CertKey) -> None:
    leaf = make_leaf(ca, None, extra_subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")])
    facts = certificate_facts(leaf.cert, SOURCE, MISSING, [])
    assert facts.subject.common_names == []
    assert facts.subject.dn == "O=Example"


def test_sans_by_type(ca: CertKey) -> None:
    sans = [
        "host.corp.example",
        "user@corp.example",
        "https://corp.example/device",
        "192.0.2.7",
        "2001:db8::1",
    ]
    leaf = make_leaf(ca, "device-1", sans=sans, other_name_only=True)
    names = certificate_facts(leaf.cert, SOURCE, MISSING, []).subject_alternative_names
    assert names.dns == ["host.corp.example"]
    assert names.email == ["user@corp.example"]
    assert names.uri == ["https://corp.example/device"]
    assert names.ip == ["192.0.2.7", "2001:db8::1"]
    assert names.other_name_count == 1


def test_sans_other_name_only(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", other_name_only=True)
    names = certificate_facts(leaf.cert, SOURCE, MISSING, []).subject_alternative_names
    assert names.other_name_count == 1
    assert names.dns == names.email == names.uri == names.ip == []


def test_sans_absent(ca: CertKey) -> None:
    names = certificate_facts(make_leaf(ca, "device-1").cert, SOURCE, MISSING, []).subject_alternative_names
    assert names.model_dump() == {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0}


def test_eku_dotted_oids(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", eku=[CLIENT_AUTH, EMAIL_PROTECTION])
    facts = certificate_facts(leaf.cert, SOURCE, MISSING, [])
    assert facts.extended_key_usage == ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.4"]


def test_eku_absent(ca: CertKey) -> None:
    facts = certificate_facts(make_leaf(ca, "device-1", eku=None).cert, SOURCE, MISSING, [])
    assert facts.extended_key_usage == []


def test_is_ca_from_basic_constraints(ca: CertKey) -> None:
    assert certificate_facts(ca.cert, SOURCE, MISSING, []).is_ca is True
    assert certificate_facts(make_leaf(ca, "device-1").cert, SOURCE, MISSING, []).is_ca is False


def test_public_key_rsa(ca: CertKey) -> None:
    key = certificate_facts(make_leaf(ca, "d", key_type="rsa").cert, SOURCE, MISSING, []).public_key
    assert (key.algorithm, key.size, key.curve) == ("rsa", 2048, None)


def test_public_key_ec(ca: CertKey) -> None:
    key = certificate_facts(make_leaf(ca, "d", key_type="ec").cert, SOURCE, MISSING, []).public_key
    assert (key.algorithm, key.size, key.curve) == ("ec", 256, "secp256r1")


def test_public_key_ed25519(ca: CertKey) -> None:
    key = certificate_facts(make_leaf(ca, "d", key_type="ed25519").cert, SOURCE, MISSING, []).public_key
    assert (key.algorithm, key.size, key.curve) == ("ed25519", None, None)


def test_validity_utc_aware(ca: CertKey) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2027, 1, 1, 12, 30, tzinfo=dt.UTC)
    facts = certificate_facts(make_leaf(ca, "d", not_before=start, not_after=end).cert, SOURCE, MISSING, [])
    assert facts.not_before == start
    assert facts.not_after == end
    assert facts.not_before.utcoffset() == dt.timedelta(0)


def test_facts_carry_source_and_key(ca: CertKey) -> None:
    present = PrivateKey(present=True, status="present", location="/certs/client.key")
    facts = certificate_facts(make_leaf(ca, "d").cert, SOURCE, present, [])
    assert facts.source == SOURCE
    assert facts.private_key == present


def test_signed_by_in_facts(ca: CertKey) -> None:
    other = make_ca("Other CA")
    signers = [Signer("other", other.cert), Signer("device-ca", ca.cert)]
    facts = certificate_facts(make_leaf(ca, "d").cert, SOURCE, MISSING, signers)
    assert facts.signed_by == ["device-ca"]


# Late parse failures: cryptography loads these certificates but fails when
# the damaged part is first read. Each is made by patching a valid DER.


def patched(cert: x509.Certificate, old: bytes, new: bytes) -> x509.Certificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1, "the bytes to patch must occur exactly once"
    return x509.load_der_x509_certificate(der.replace(old, new))


def test_step_names_invalid_utf8(ca: CertKey) -> None:
    leaf = make_leaf(ca, "AAAAAAAA")
    broken = patched(leaf.cert, b"\x0c\x08AAAAAAAA", b"\x0c\x08\xff\xfeAAAAAA")
    with pytest.raises(CertificateError) as caught:
        certificate_facts(broken, SOURCE, MISSING, [])
    assert caught.value.step == "names"
    assert CertKey(broken, leaf.key).fingerprint in caught.value.message


def test_step_extensions_duplicate(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", sans=["a.example"])
    # Rename the SAN extension (2.5.29.17) to basicConstraints (2.5.29.19), which the leaf already has.
    broken = patched(leaf.cert, b"\x06\x03\x55\x1d\x11", b"\x06\x03\x55\x1d\x13")
    with pytest.raises(CertificateError) as caught:
        certificate_facts(broken, SOURCE, MISSING, [])
    assert caught.value.step == "extensions"
    assert "2.5.29.19" in caught.value.message


def test_step_extensions_malformed_san(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", sans=["aaaa.example"])
    # Tag [9] is not a GeneralName choice.
    broken = patched(leaf.cert, b"\x82\x0caaaa.example", b"\x89\x0caaaa.example")
    with pytest.raises(CertificateError) as caught:
        certificate_facts(broken, SOURCE, MISSING, [])
    assert caught.value.step == "extensions"


def test_step_public_key_invalid_point(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", key_type="ec")
    point = leaf.cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # Flipping one bit of y moves the point off the curve.
    broken = patched(leaf.cert, point, point[:-1] + bytes([point[-1] ^ 1]))
    with pytest.raises(CertificateError) as caught:
        certificate_facts(broken, SOURCE, MISSING, [])
    assert caught.value.step == "public_key"
    with pytest.raises(CertificateError) as caught_der:
        public_key_der(broken)
    assert caught_der.value.step == "public_key"


def test_public_key_unknown_algorithm(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", key_type="ec")
    # id-ecPublicKey 1.2.840.10045.2.1 becomes the unassigned 1.2.840.10045.2.25.
    broken = patched(leaf.cert, bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0219"))
    facts = certificate_facts(broken, SOURCE, MISSING, [])
    assert facts.public_key.algorithm == "unknown"
    assert public_key_der(broken) is None


def test_collection_error_from_step() -> None:
    error = CertificateError("extensions", "certificate abc: invalid extensions").to_collection_error(
        "pem", "/x"
    )
    assert error.model_dump() == {
        "source": "pem",
        "location": "/x",
        "step": "extensions",
        "message": "certificate abc: invalid extensions",
    }


def test_load_certificate_garbage() -> None:
    with pytest.raises(CertificateError) as caught:
        load_certificate(b"\x30\x03\x02\x01\x05", "der")
    assert caught.value.step == "load"


def test_load_certificates_pem_chain_and_bad_block(ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    data = leaf.cert_pem() + bad + ca.cert_pem()
    certificates, errors = load_certificates(data)
    assert certificates == [leaf.cert, ca.cert]
    assert len(errors) == 1
    assert errors[0].step == "load"
    assert "line" in errors[0].message


def test_load_certificates_der(ca: CertKey) -> None:
    certificates, errors = load_certificates(ca.cert_der())
    assert certificates == [ca.cert]
    assert errors == []


def test_load_certificates_skips_keys(ca: CertKey) -> None:
    certificates, errors = load_certificates(ca.key_pem() + ca.cert_pem())
    assert certificates == [ca.cert]
    assert errors == []


def test_split_pem_truncated_block(ca: CertKey) -> None:
    pem = ca.cert_pem()
    blocks = split_pem(pem + pem[: len(pem) // 2])
    assert [block.label for block in blocks] == ["CERTIFICATE", "CERTIFICATE"]
    assert blocks[0].text == pem.rstrip(b"\n")
    assert blocks[1].text is None
    assert blocks[1].line == pem.count(b"\n") + 1


def test_ip_san_is_string(ca: CertKey) -> None:
    leaf = make_leaf(ca, "d", sans=[x509.IPAddress(ipaddress.ip_address("10.1.2.3"))])
    names = certificate_facts(leaf.cert, SOURCE, MISSING, []).subject_alternative_names
    assert names.ip == ["10.1.2.3"]


def test_split_pem_many_begin_lines() -> None:
    # A file of BEGIN lines only; each is an unterminated block on its own line.
    blocks = split_pem(b"-----BEGIN A-----\n" * 50_000)

    assert len(blocks) == 50_000
    assert all(block.text is None and block.label == "A" for block in blocks)
    assert [block.line for block in blocks[:3]] == [1, 2, 3]
    assert blocks[-1].line == 50_000


def test_split_pem_skips_other_end_lines() -> None:
    data = b"-----BEGIN A-----\n-----END B-----\nx\n-----END A-----\n-----BEGIN C-----\n"

    blocks = split_pem(data)

    assert [(block.label, block.line) for block in blocks] == [("A", 1), ("C", 5)]
    assert blocks[0].text == data[: data.index(b"-----END A-----") + len(b"-----END A-----")]
    assert blocks[1].text is None


def test_key_size_outside_schema_is_error(ca: CertKey) -> None:
    huge = x509.load_der_x509_certificate(with_huge_rsa_modulus(make_leaf(ca, "huge").cert, 1_000_008))

    with pytest.raises(CertificateError) as raised:
        certificate_facts(huge, CertificateSource(type="pem", location="/x"), MISSING, [])

    assert raised.value.step == "public_key"
    assert "PublicKey.size Input should be less than or equal to 1000000" in raised.value.message
