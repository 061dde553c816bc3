"""Signing certificates and the direct-issuer check behind ``signed_by``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signer:
    """A signing certificate that a rule may name as the direct issuer, with its store id."""

    id: str
    certificate: x509.Certificate


def find_signers(cert: x509.Certificate, signers: Sequence[Signer]) -> list[str]:
    """Return the ids of the signers that directly issued ``cert``, in ``signers`` order.

    A signer counts only when its subject equals the certificate's issuer name
    and its public key verifies the certificate's signature. A matching issuer
    name alone never counts, and no chain is built: a root above the real
    issuer does not match.
    """
    matched: list[str] = []
    for signer in signers:
        if signer.id in matched:
            continue
        try:
            cert.verify_directly_issued_by(signer.certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            # ValueError covers an issuer name mismatch, the common case for every
            # other signer, so this is logged at DEBUG only.
            logger.debug(
                "signer %s did not issue the certificate: %s: %s", signer.id, type(exc).__name__, exc
            )
            continue
        matched.append(signer.id)
    return matched
