"""Signing certificates and the direct-issuer check behind ``signed_by`` and ``unverified_signers``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cryptography
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from collector.facts import SignatureCheckStatus, UnverifiedSigner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signer:
    """A signing certificate that a rule may name as the direct issuer, with its store id."""

    id: str
    certificate: x509.Certificate

    @functools.cached_property
    def subject_der(self) -> bytes | None:
        """The subject name re-encoded as DER, computed once; None when it cannot be read."""
        try:
            return self.certificate.subject.public_bytes()
        except ValueError as exc:
            logger.debug("subject of signer %s cannot be read: %s", self.id, exc)
            return None


@dataclass(frozen=True)
class SignerCheck:
    """The signers that directly issued a certificate, and those named as its issuer that did not verify it."""

    signed_by: list[str] = field(default_factory=list)
    unverified: list[UnverifiedSigner] = field(default_factory=list)


def check_signers(cert: x509.Certificate, signers: Sequence[Signer]) -> SignerCheck:
    """Check ``cert`` against each signer, in ``signers`` order, each id once.

    A signer is in ``signed_by`` only when its subject equals the
    certificate's issuer name and its public key verifies the certificate's
    signature. No chain is built: a root above the real issuer does not match.
    A signer whose subject equals the issuer name but whose key did not verify
    the signature is in ``unverified``, with the reason. A signer with another
    subject is in neither list, because that is the normal case for every
    signer but one.
    """
    result = SignerCheck()
    try:
        issuer = cert.issuer.public_bytes()
    except ValueError as exc:
        # certificate_facts reports an invalid issuer name at its names step.
        logger.debug("issuer name cannot be read, so no signer matches: %s", exc)
        return result

    for signer in signers:
        if signer.id in result.signed_by:
            continue
        if not _subject_is(signer, issuer):
            continue
        unverified = _verify(cert, signer)
        if unverified is None:
            result.signed_by.append(signer.id)
        elif all(entry.id != signer.id for entry in result.unverified):
            result.unverified.append(unverified)

    # Store ids are unique, so this matters only for a list with repeated ids.
    result.unverified[:] = [entry for entry in result.unverified if entry.id not in result.signed_by]
    return result


def find_signers(cert: x509.Certificate, signers: Sequence[Signer]) -> list[str]:
    """Return the ids of the signers that directly issued ``cert``, in ``signers`` order."""
    return check_signers(cert, signers).signed_by


def _subject_is(signer: Signer, issuer: bytes) -> bool:
    """Compare the signer's subject with the issuer name as DER, as ``verify_directly_issued_by`` does.

    x509.Name equality ignores the string type of attribute values, so a
    PrintableString and a UTF8String name would be equal, and cryptography
    would then reject the pair as a name mismatch.

    NOTE: public_bytes re-encodes the parsed name, and cryptography compares
    the encoded names as they were read. Where a non-DER encoding makes the two
    differ, the signer is recorded as unsupported with cryptography's message.
    """
    return signer.subject_der == issuer


def _verify(cert: x509.Certificate, signer: Signer) -> UnverifiedSigner | None:
    """Verify the signature with the signer's key; return None when it verifies, else why not."""
    status: SignatureCheckStatus
    try:
        cert.verify_directly_issued_by(signer.certificate)
    except InvalidSignature:
        status = "invalid"
        reason = "the signature does not verify with the public key of this signing certificate"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # ValueError: an unsupported signature algorithm, or one that does not fit the
        # signer's key type. TypeError and UnsupportedAlgorithm: an unsupported key type.
        status = "unsupported"
        reason = f"cryptography {cryptography.__version__} cannot check this signature ({_sentence(exc)})"
    else:
        return None

    logger.debug("signer %s did not verify the certificate: %s", signer.id, reason)
    return UnverifiedSigner(
        id=signer.id,
        status=status,
        signature_algorithm=signature_algorithm_name(cert),
        reason=reason,
    )


def signature_algorithm_name(cert: x509.Certificate) -> str:
    """Name the certificate's signature algorithm as OpenSSL does, or give its dotted OID when it has no name."""
    oid = cert.signature_algorithm_oid
    # ObjectIdentifier exposes its name only as the private _name, "Unknown OID" when it has none.
    name = oid._name
    return name if name != "Unknown OID" else oid.dotted_string


def _sentence(exc: Exception) -> str:
    return str(exc).rstrip(".") or type(exc).__name__
