"""Proof of possession: sign a challenge with each certificate's private key.

The collector responds to a challenge nonce by signing, with every private key it
can use, a message that binds the nonce, the SHA-256 digest of the canonical
facts document (the document without ``proofs``) and the certificate's
fingerprint. The evaluator checks those signatures against the certificate
DER carried beside them, so it no longer has to trust the device's report.

Keys from PEM and DER files sign here with ``cryptography``. Keys in an NSS
database sign inside NSS (``collector.nsssign``), with the database password
when one is set. Keys in the macOS keychain and the Windows stores cannot
sign yet; their certificates get an entry in ``proofs.errors``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from collector.facts import Certificate, CertificateProof, Facts, ProofAlgorithm, ProofError, Proofs
from collector.nsssign import PSS_SALT_LENGTH as PSS_SALT_LENGTH
from collector.x509facts import CertificateError, public_key_der

logger = logging.getLogger(__name__)

PROOF_VERSION: Final = 1

# A callable that reads an NSS database's password for the given folder, or returns None when it cannot.
PasswordPrompt = Callable[[str], "str | None"]


def canonical_document(facts: Facts) -> bytes:
    """Return the canonical form of the facts without ``proofs``: compact JSON with keys sorted at every level.

    The document is the one ``collect`` prints (every field present, times in
    whole seconds with ``Z``), encoded by orjson: UTF-8, no whitespace, and only
    the quotation mark, the backslash and control characters escaped.
    """
    return orjson.dumps(facts.model_dump(mode="json", exclude={"proofs"}), option=orjson.OPT_SORT_KEYS)


def document_digest(facts: Facts) -> str:
    """Return the SHA-256 of the canonical facts document, in lower-case hexadecimal."""
    return hashlib.sha256(canonical_document(facts)).hexdigest()


def proof_message(nonce: str, document_sha256: str, fingerprint_sha256: str) -> bytes:
    """Return the bytes a proof signs: a version tag, the nonce, the document digest and the fingerprint, one per line."""
    return f"certposture-proof-v{PROOF_VERSION}\n{nonce}\n{document_sha256}\n{fingerprint_sha256}\n".encode(
        "ascii"
    )


def sign_with_key(key: PrivateKeyTypes, message: bytes) -> tuple[ProofAlgorithm, bytes]:
    """Sign ``message`` with a private key; raise ValueError for a key type that proofs do not support."""
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
        return "rsa-pss-sha256", key.sign(message, pss, hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa-sha256", key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key.sign(message)
    raise ValueError(
        f"a {type(key).__name__.removeprefix('_').replace('PrivateKey', '')} key cannot sign a proof; "
        "proofs use RSA, ECDSA or Ed25519 keys"
    )


@dataclass
class KeyMaterial:
    """Certificates and keys that the sources keep while collecting with a challenge, for signing proofs.

    ``certificates`` maps a fingerprint to the certificate's DER. ``pem_keys``
    maps a SubjectPublicKeyInfo DER to the unencrypted private key read from a
    PEM or DER file. Nothing here is ever written out except the certificates.
    """

    certificates: dict[str, bytes] = field(default_factory=dict)
    pem_keys: dict[bytes, PrivateKeyTypes] = field(default_factory=dict)


@dataclass
class _Signed:
    proofs: list[CertificateProof] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    def add(self, fingerprint: str, der: bytes, algorithm: ProofAlgorithm, signature: bytes) -> None:
        self.proofs.append(
            CertificateProof(
                fingerprint_sha256=fingerprint,
                certificate=base64.b64encode(der).decode("ascii"),
                algorithm=algorithm,
                signature=base64.b64encode(signature).decode("ascii"),
            )
        )
        self.done.add(fingerprint)


def add_proofs(
    facts: Facts,
    nonce: str,
    material: KeyMaterial,
    *,
    nss_password: str | None = None,
    prompt: PasswordPrompt | None = None,
) -> Facts:
    """Return ``facts`` with ``proofs`` that respond to ``nonce``: one signature per certificate whose key can sign.

    A certificate is signed once, with the first usable key: PEM keys first,
    then NSS databases in the order collected. A key that was found but could
    not sign becomes an entry in ``proofs.errors``, unless another copy of the
    certificate was signed. ``nss_password`` opens every NSS database that has
    a password; without it, ``prompt`` is asked once per such database.
    """
    digest = document_digest(facts)
    signed = _Signed()
    failures: dict[str, ProofError] = {}

    def fail(certificate: Certificate, message: str) -> None:
        if certificate.private_key.status == "unverified" and certificate.private_key.reason:
            # The key evidence already explains what is wrong with the key, such as an encrypted key file.
            message = (
                f"the collector reported the key as unverified ({certificate.private_key.reason.rstrip('.')}), "
                f"and signing failed: {message}"
            )
        failures.setdefault(
            certificate.fingerprint_sha256,
            ProofError(
                fingerprint_sha256=certificate.fingerprint_sha256, source=certificate.source, message=message
            ),
        )

    nss_items: dict[str, list[Certificate]] = {}
    for certificate in facts.certificates:
        fingerprint = certificate.fingerprint_sha256
        der = material.certificates.get(fingerprint)
        if fingerprint in signed.done or certificate.private_key.status == "missing":
            continue
        if der is None:
            fail(certificate, f"the {certificate.source.type} source kept no certificate DER to prove")
            continue
        message = proof_message(nonce, digest, fingerprint)
        if certificate.source.type == "pem":
            key = material.pem_keys.get(_public_key_der(der))
            if key is None:
                fail(certificate, "no unencrypted private key for it was read, so it cannot sign")
                continue
            try:
                algorithm, signature = sign_with_key(key, message)
            except ValueError as error:
                fail(certificate, str(error))
                continue
            signed.add(fingerprint, der, algorithm, signature)
        elif certificate.source.type == "nssdb":
            nss_items.setdefault(certificate.source.location, []).append(certificate)
        else:
            fail(
                certificate,
                f"certposture cannot yet sign with a key in the {certificate.source.type} store "
                f"{certificate.source.location}, so this certificate has no proof",
            )

    for directory, certificates in nss_items.items():
        pending = [item for item in certificates if item.fingerprint_sha256 not in signed.done]
        _sign_in_nssdb(directory, pending, nonce, digest, material, signed, fail, nss_password, prompt)

    errors = [error for fingerprint, error in failures.items() if fingerprint not in signed.done]
    proofs = Proofs(
        version=PROOF_VERSION, nonce=nonce, document_sha256=digest, certificates=signed.proofs, errors=errors
    )
    logger.debug("signed %d proof(s), %d certificate(s) without one", len(signed.proofs), len(errors))
    return facts.model_copy(update={"proofs": proofs})


def _public_key_der(certificate_der: bytes) -> bytes:
    try:
        return public_key_der(x509.load_der_x509_certificate(certificate_der)) or b""
    except (ValueError, CertificateError):
        return b""


def _sign_in_nssdb(
    directory: str,
    certificates: Sequence[Certificate],
    nonce: str,
    digest: str,
    material: KeyMaterial,
    signed: _Signed,
    fail: Callable[[Certificate, str], None],
    password: str | None,
    prompt: PasswordPrompt | None,
) -> None:
    from collector.nsssign import NssSignature, sign_with_nssdb

    if not certificates:
        return
    by_fingerprint = {certificate.fingerprint_sha256: certificate for certificate in certificates}
    items = [
        (fingerprint, material.certificates[fingerprint], proof_message(nonce, digest, fingerprint))
        for fingerprint in by_fingerprint
    ]
    outcomes = sign_with_nssdb(directory, items, password)
    if (
        password is None
        and prompt is not None
        and any(
            not isinstance(outcome, NssSignature) and outcome.password_needed for outcome in outcomes.values()
        )
    ):
        asked = prompt(directory)
        if asked is not None:
            outcomes = sign_with_nssdb(directory, items, asked)
    for fingerprint, outcome in outcomes.items():
        if isinstance(outcome, NssSignature):
            signed.add(fingerprint, material.certificates[fingerprint], outcome.algorithm, outcome.signature)
        else:
            fail(by_fingerprint[fingerprint], outcome.message)
