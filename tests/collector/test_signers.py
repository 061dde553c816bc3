from __future__ import annotations

import datetime as dt
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from pydantic import ValidationError

from collector.facts import Certificate, CertificateSource, PrivateKey, UnverifiedSigner
from collector.signers import Signer, check_signers, find_signers
from collector.x509facts import certificate_facts
from tests.certgen import CertKey, KeyType, generate_key, make_ca, make_leaf

PKITS_CERTS = Path(cryptography_vectors.__file__).parent / "x509" / "PKITS_data" / "certs"


def pkits(name: str) -> x509.Certificate:
    """Load one certificate of the NIST PKITS suite shipped in cryptography-vectors."""
    return x509.load_der_x509_certificate((PKITS_CERTS / f"{name}.crt").read_bytes())


@pytest.mark.parametrize("key_type", ["rsa", "ec", "ed25519"])
def test_signers_real_signature(key_type: KeyType) -> None:
    ca = make_ca("Device CA", key_type=key_type)
    leaf = make_leaf(ca, "device-1")
    assert find_signers(leaf.cert, [Signer("device-ca", ca.cert)]) == ["device-ca"]


def test_signers_forged_issuer_name() -> None:
    genuine = make_ca("Device CA")
    impostor = make_ca("Device CA")
    forged = make_leaf(impostor, "device-1")
    assert forged.cert.issuer == genuine.cert.subject
    assert find_signers(forged.cert, [Signer("device-ca", genuine.cert)]) == []


def test_signers_other_ca() -> None:
    leaf = make_leaf(make_ca("Device CA"), "device-1")
    assert find_signers(leaf.cert, [Signer("other", make_ca("Other CA").cert)]) == []


def test_signers_intermediate_not_root() -> None:
    root = make_ca("Root CA", key_type="rsa")
    intermediate = make_ca("Issuing CA", parent=root)
    leaf = make_leaf(intermediate, "device-1")
    signers = [Signer("root", root.cert), Signer("intermediate", intermediate.cert)]
    assert find_signers(leaf.cert, signers) == ["intermediate"]
    assert find_signers(intermediate.cert, signers) == ["root"]


def test_signers_keep_order_and_dedupe() -> None:
    ca = make_ca("Device CA")
    leaf = make_leaf(ca, "device-1")
    signers = [Signer("b", ca.cert), Signer("a", ca.cert), Signer("b", ca.cert)]
    assert find_signers(leaf.cert, signers) == ["b", "a"]


def test_signers_none() -> None:
    leaf = make_leaf(make_ca("Device CA"), "device-1")
    assert find_signers(leaf.cert, []) == []


# Signers whose subject is the issuer name but whose key did not verify the signature.


def test_unverified_forged_signature_invalid() -> None:
    genuine = make_ca("Device CA", key_type="rsa")
    forged = make_leaf(make_ca("Device CA", key_type="rsa"), "device-1")

    check = check_signers(forged.cert, [Signer("device-ca", genuine.cert)])

    assert check.signed_by == []
    assert check.unverified == [
        UnverifiedSigner(
            id="device-ca",
            status="invalid",
            signature_algorithm="sha256WithRSAEncryption",
            reason="the signature does not verify with the public key of this signing certificate",
        )
    ]


def test_unverified_dsa_sha1_unsupported() -> None:
    # A valid DSA signature with SHA-1, which cryptography 50 does not verify.
    check = check_signers(pkits("ValidDSASignaturesTest4EE"), [Signer("dsa-ca", pkits("DSACACert"))])

    assert check.signed_by == []
    (unverified,) = check.unverified
    assert unverified.id == "dsa-ca"
    assert unverified.status == "unsupported"
    assert unverified.signature_algorithm == "dsa-with-sha1"
    assert "Unsupported signature algorithm" in unverified.reason


def test_unverified_key_type_differs() -> None:
    """An EC signing certificate named like the RSA issuer cannot check an RSA signature."""
    leaf = make_leaf(make_ca("Device CA", key_type="rsa"), "device-1")
    ec_namesake = make_ca("Device CA", key_type="ec")

    (unverified,) = check_signers(leaf.cert, [Signer("device-ca", ec_namesake.cert)]).unverified

    assert unverified.status == "unsupported"
    assert unverified.signature_algorithm == "sha256WithRSAEncryption"
    assert "does not match issuer key type" in unverified.reason


def _ca_with_x25519_key(issuer: CertKey) -> x509.Certificate:
    """A CA certificate named like ``issuer`` whose public key is X25519, which cannot verify signatures."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(issuer.name)
        .issuer_name(issuer.name)
        .public_key(x25519.X25519PrivateKey.generate().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(generate_key("ec"), hashes.SHA256())
    )


def test_unverified_key_type_unsupported() -> None:
    ca = make_ca("Device CA")
    leaf = make_leaf(ca, "device-1")

    (unverified,) = check_signers(leaf.cert, [Signer("x25519-ca", _ca_with_x25519_key(ca))]).unverified

    assert unverified.status == "unsupported"
    assert unverified.signature_algorithm == "ecdsa-with-SHA256"
    assert "Key must be" in unverified.reason


def test_unverified_skips_other_names() -> None:
    leaf = make_leaf(make_ca("Device CA"), "device-1")
    assert check_signers(leaf.cert, [Signer("other", make_ca("Other CA").cert)]).unverified == []


def test_unverified_skips_other_string_type() -> None:
    """An issuer name equal in value but not in string type is another name, as cryptography compares them.

    In this PKITS pair the end entity names its CA with UTF8Strings, and the
    CA's subject has PrintableStrings.
    """
    leaf = pkits("ValidRolloverfromPrintableStringtoUTF8StringTest10EE")
    ca = pkits("RolloverfromPrintableStringtoUTF8StringCACert")
    assert leaf.issuer == ca.subject

    check = check_signers(leaf, [Signer("rollover-ca", ca)])

    assert check.signed_by == []
    assert check.unverified == []


def test_unverified_listed_once_per_id() -> None:
    genuine = make_ca("Device CA")
    impostor = make_ca("Device CA")
    leaf = make_leaf(genuine, "device-1")

    repeated = check_signers(leaf.cert, [Signer("x", impostor.cert), Signer("x", impostor.cert)])
    verified_later = check_signers(leaf.cert, [Signer("x", impostor.cert), Signer("x", genuine.cert)])

    assert [entry.id for entry in repeated.unverified] == ["x"]
    assert verified_later.signed_by == ["x"]
    assert verified_later.unverified == []


def test_unverified_in_certificate_facts() -> None:
    ca = make_ca("Device CA")
    impostor = make_ca("Device CA")
    source = CertificateSource(type="pem", location="/certs/client.pem")
    missing = PrivateKey(present=False, status="missing")
    signers = [Signer("impostor", impostor.cert), Signer("device-ca", ca.cert)]

    facts = certificate_facts(make_leaf(ca, "device-1").cert, source, missing, signers)

    assert facts.signed_by == ["device-ca"]
    assert [(entry.id, entry.status) for entry in facts.unverified_signers] == [("impostor", "invalid")]
    dumped = facts.model_dump(mode="json")
    assert list(dumped)[-2:] == ["signed_by", "unverified_signers"]


def test_unverified_contradicting_signed_by_rejected() -> None:
    ca = make_ca("Device CA")
    source = CertificateSource(type="pem", location="/certs/client.pem")
    missing = PrivateKey(present=False, status="missing")
    facts = certificate_facts(make_leaf(ca, "device-1").cert, source, missing, [Signer("device-ca", ca.cert)])
    document = facts.model_dump(mode="json")
    document["unverified_signers"] = [
        {
            "id": "device-ca",
            "status": "invalid",
            "signature_algorithm": "ecdsa-with-SHA256",
            "reason": "edited",
        }
    ]

    with pytest.raises(ValidationError, match="in both signed_by and unverified_signers"):
        Certificate.model_validate(document)
