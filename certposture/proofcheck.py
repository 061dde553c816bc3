"""Verify proofs of possession, so that the policy can rely on the certificate instead of the device's report.

Rego has no builtin that checks an RSA-PSS, ECDSA or Ed25519 signature over
arbitrary data, so the check runs here, before the policy, and its verdict
goes to the policy as ``input.proof_verification``. For each certificate in
the facts, in this order:

1. the required nonce was issued by this store and has not expired;
2. the facts carry proofs, and they respond to the required nonce;
3. there is a proof for the certificate's fingerprint;
4. the SHA-256 of the proof's DER equals the fingerprint;
5. the signature verifies, with the DER's public key, over the proof message
   built from the nonce, the stated document digest and the fingerprint;
6. the canonical facts document hashes to the stated digest, and every
   certificate field the device reported equals the field read from the DER.

A certificate that passes gets ``signed_by`` and ``unverified_signers``
recomputed from its DER against the stored signing certificates; the policy
uses those, not the device's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from collector.facts import Certificate, CertificateProof, Facts, ProofAlgorithm
from collector.proofs import PSS_SALT_LENGTH, document_digest, proof_message
from collector.signers import Signer
from collector.x509facts import CertificateError, certificate_facts

Verdict = Literal["verified", "missing", "invalid", "facts_altered", "nonce_invalid", "fingerprint_mismatch"]

# The certificate fields that the DER decides. source and private_key describe the device, and
# signed_by and unverified_signers are recomputed rather than compared.
_DER_FIELDS: Final = (
    "subject",
    "issuer",
    "serial_number",
    "not_before",
    "not_after",
    "subject_alternative_names",
    "extended_key_usage",
    "is_ca",
    "public_key",
)


@dataclass(frozen=True)
class ProofVerifier:
    """Checks the proofs of facts documents against one required nonce and the stored signing certificates.

    ``nonce_problem`` is why the nonce cannot be accepted (unknown or
    expired), decided once by ``certposture.challenge.nonce_problem``, or None.
    """

    nonce: str
    nonce_problem: str | None
    signers: Sequence[Signer]

    def verify(self, facts: Facts) -> dict[str, Any]:
        """Return ``{"nonce", "certificates": {fingerprint: verdict}}`` for ``input.proof_verification``.

        Each verdict is ``{"status", "message", "signed_by",
        "unverified_signers"}``; the lists are filled only for ``verified``.
        """
        copies: dict[str, list[Certificate]] = {}
        for certificate in facts.certificates:
            copies.setdefault(certificate.fingerprint_sha256, []).append(certificate)
        proofs: dict[str, CertificateProof] = {}
        proof_errors: dict[str, str] = {}
        digest = None
        if facts.proofs is not None:
            proofs = {proof.fingerprint_sha256: proof for proof in facts.proofs.certificates}
            proof_errors = {error.fingerprint_sha256: error.message for error in facts.proofs.errors}
            digest = document_digest(facts)
        verdicts: dict[str, dict[str, Any]] = {}
        for fingerprint, certificates in copies.items():
            verdicts[fingerprint] = self._verdict(
                facts,
                fingerprint,
                certificates,
                proofs.get(fingerprint),
                proof_errors.get(fingerprint),
                digest,
            )
        return {"nonce": self.nonce, "certificates": verdicts}

    def _verdict(
        self,
        facts: Facts,
        fingerprint: str,
        certificates: Sequence[Certificate],
        proof: CertificateProof | None,
        proof_error: str | None,
        digest: str | None,
    ) -> dict[str, Any]:
        if self.nonce_problem is not None:
            return _result("nonce_invalid", self.nonce_problem)
        if facts.proofs is None:
            return _result(
                "missing",
                f"the facts carry no proofs; collect with --challenge {self.nonce} so that the device "
                "signs the challenge with the certificate's private key",
            )
        if facts.proofs.nonce != self.nonce:
            return _result(
                "nonce_invalid",
                f"the proofs respond to challenge {facts.proofs.nonce}, not the required challenge "
                f"{self.nonce}; collect again with --challenge {self.nonce}",
            )
        if proof is None:
            cause = (
                f"the collector could not sign with its key: {proof_error}"
                if proof_error is not None
                else "the collector had no usable private key for it"
            )
            return _result("missing", f"the facts carry no proof for this certificate; {cause}")

        der = _decode(proof.certificate)
        signature = _decode(proof.signature)
        if der is None or signature is None:
            return _result("invalid", "the proof's certificate or signature is not valid base64")
        actual = hashlib.sha256(der).hexdigest()
        if actual != fingerprint:
            return _result(
                "fingerprint_mismatch",
                f"the proof carries a certificate whose SHA-256 is {actual}, not the reported fingerprint "
                f"{fingerprint}",
            )
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return _result("invalid", "the proof's certificate cannot be read as DER X.509")
        message = proof_message(self.nonce, facts.proofs.document_sha256, fingerprint)
        problem = _signature_problem(cert, proof.algorithm, signature, message)
        if problem is not None:
            return _result("invalid", problem)
        if digest != facts.proofs.document_sha256:
            return _result(
                "facts_altered",
                "the facts changed after the device signed them: the document's SHA-256 is "
                f"{digest}, but the signed digest is {facts.proofs.document_sha256}",
            )
        return self._compare_fields(cert, certificates)

    def _compare_fields(self, cert: x509.Certificate, certificates: Sequence[Certificate]) -> dict[str, Any]:
        reported = certificates[0]
        try:
            expected = certificate_facts(cert, reported.source, reported.private_key, self.signers)
        except CertificateError as error:
            return _result("invalid", f"the proof's certificate cannot be read: {error.message}")
        read = expected.model_dump(mode="json", include=set(_DER_FIELDS))
        for certificate in certificates:
            claimed = certificate.model_dump(mode="json", include=set(_DER_FIELDS))
            changed = [name for name in _DER_FIELDS if claimed[name] != read[name]]
            if changed:
                return _result(
                    "facts_altered",
                    f"the reported {', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} from the signed certificate "
                    f"(found in {certificate.source.type} {certificate.source.location})",
                )
        return {
            "status": "verified",
            "message": "the certificate's private key signed the challenge and these facts",
            "signed_by": list(expected.signed_by),
            "unverified_signers": [entry.model_dump(mode="json") for entry in expected.unverified_signers],
        }


def _result(status: Verdict, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "signed_by": [], "unverified_signers": []}


def _decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _signature_problem(
    cert: x509.Certificate, algorithm: ProofAlgorithm, signature: bytes, message: bytes
) -> str | None:
    """Return why ``signature`` does not prove possession of ``cert``'s key, or None when it verifies."""
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the certificate's public key cannot be read, so the proof cannot be checked"
    try:
        if algorithm == "rsa-pss-sha256" and isinstance(public_key, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
            public_key.verify(signature, message, pss, hashes.SHA256())
        elif algorithm == "ecdsa-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif algorithm == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            return f"the proof's algorithm {algorithm} does not fit the certificate's {_key_type(public_key)} key"
    except InvalidSignature:
        return (
            "the signature does not verify with the certificate's public key over this challenge and "
            "document digest, so the device did not prove it holds the key"
        )
    return None


def _key_type(public_key: object) -> str:
    names = {
        rsa.RSAPublicKey: "RSA",
        ec.EllipticCurvePublicKey: "EC",
        ed25519.Ed25519PublicKey: "Ed25519",
    }
    return next(
        (name for kind, name in names.items() if isinstance(public_key, kind)), type(public_key).__name__
    )
