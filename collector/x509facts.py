"""Turn X.509 certificates into facts, one parsing step at a time.

``cryptography`` parses a certificate's outer structure on load but decodes
names, extensions and the public key only when they are first read, so a
certificate that loaded can still fail later. Each step catches the
exceptions ``cryptography`` raises for it and raises ``CertificateError``
naming the step, so the caller can record it and go on with other
certificates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from collector.facts import (
    Certificate,
    CertificateSource,
    CollectionError,
    IssuerName,
    Name,
    PrivateKey,
    PublicKey,
    SubjectAlternativeNames,
)
from collector.signers import Signer, check_signers

logger = logging.getLogger(__name__)

Step = Literal["load", "names", "extensions", "public_key"]

CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})

_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n-]*)-----")
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([^\r\n-]*)-----")


class CertificateError(Exception):
    """Failure to parse a certificate, with ``step`` naming the stage that failed."""

    def __init__(self, step: Step, message: str) -> None:
        super().__init__(message)
        self.step: Step = step
        self.message = message

    def to_collection_error(self, source: str, location: str) -> CollectionError:
        return CollectionError(source=source, location=location, step=self.step, message=self.message)


@dataclass(frozen=True)
class PemBlock:
    """One ``-----BEGIN label-----`` block of a PEM file.

    ``line`` is the 1-based line of the BEGIN line. ``text`` runs from the
    BEGIN line through the END line, and is None when no END line follows.
    """

    label: str
    line: int
    text: bytes | None


def split_pem(data: bytes) -> list[PemBlock]:
    """Split PEM data into its blocks, in file order, without decoding them.

    One forward pass over the BEGIN and END lines, so the time grows with
    the data's length even for a file of nothing but BEGIN lines.
    """
    markers = list(_PEM_MARKER.finditer(data))
    blocks: list[PemBlock] = []
    line = 1
    counted_to = 0
    index = 0
    while index < len(markers):
        begin = markers[index]
        index += 1
        if begin.group(1) != b"BEGIN":
            continue
        line += data.count(b"\n", counted_to, begin.start())
        counted_to = begin.start()
        label = begin.group(2)

        # The block ends at the first END line with the same label, unless another BEGIN comes first.
        while index < len(markers) and markers[index].group(1) == b"END" and markers[index].group(2) != label:
            index += 1
        if index < len(markers) and markers[index].group(1) == b"END":
            end = markers[index]
            index += 1
            blocks.append(PemBlock(label.decode("ascii", "replace"), line, data[begin.start() : end.end()]))
        else:
            # A BEGIN line without its END line, as in a truncated file.
            blocks.append(PemBlock(label.decode("ascii", "replace"), line, None))
    return blocks


def looks_like_pem(data: bytes) -> bool:
    return _PEM_BEGIN.search(data) is not None


def load_certificate(data: bytes, encoding: Literal["pem", "der"] = "der") -> x509.Certificate:
    """Load one certificate, raising ``CertificateError`` with step ``load`` on invalid data."""
    try:
        if encoding == "pem":
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        # InvalidVersion (a version field other than v1, v2 or v3) is not a ValueError.
        raise CertificateError("load", f"invalid {encoding.upper()} certificate: {exc}") from exc


def load_certificates(data: bytes) -> tuple[list[x509.Certificate], list[CertificateError]]:
    """Load every certificate in raw bytes: all CERTIFICATE blocks of PEM data, or one DER certificate.

    Each block that fails to load is returned as a ``CertificateError`` and
    the other blocks are still loaded. PEM blocks of other types (keys,
    requests, parameters) are skipped.
    """
    if not looks_like_pem(data):
        try:
            return [load_certificate(data, "der")], []
        except CertificateError as exc:
            return [], [exc]

    certificates: list[x509.Certificate] = []
    errors: list[CertificateError] = []
    for block in split_pem(data):
        if block.label not in CERTIFICATE_LABELS:
            continue
        if block.text is None:
            errors.append(
                CertificateError("load", f"PEM block {block.label} at line {block.line} has no END line")
            )
            continue
        try:
            certificates.append(load_certificate(block.text, "pem"))
        except CertificateError as exc:
            errors.append(
                CertificateError("load", f"PEM block {block.label} at line {block.line}: {exc.message}")
            )
    return certificates, errors


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Return the SHA-256 of the DER certificate as lowercase hex without colons."""
    return cert.fingerprint(hashes.SHA256()).hex()


def format_serial_number(serial: int) -> str:
    """Format a serial number as uppercase hex of whole bytes, as ``openssl x509 -serial`` prints it."""
    digits = f"{abs(serial):X}"
    if len(digits) % 2:
        digits = "0" + digits
    return f"-{digits}" if serial < 0 else digits


def public_key_der(cert: x509.Certificate) -> bytes | None:
    """Return the certificate's SubjectPublicKeyInfo re-encoded by ``cryptography``, for comparing with keys.

    Returns None when ``cryptography`` does not support the key algorithm.
    Raises ``CertificateError`` with step ``public_key`` when the key is invalid.
    """
    try:
        key = cert.public_key()
    except UnsupportedAlgorithm:
        return None
    except ValueError as exc:
        raise CertificateError("public_key", f"invalid public key: {exc}") from exc
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# Certificates in one location usually share a few issuers, and cryptography's RFC 4514
# formatting took about 18 us per name here, so the text of each issuer is cached.
_ISSUER_DNS: dict[bytes, str] = {}
_ISSUER_DNS_KEPT = 1024


def _issuer_dn(name: x509.Name) -> str:
    """Format an issuer name as RFC 4514 text, reusing the text of a name seen before."""
    key = name.public_bytes()
    text = _ISSUER_DNS.get(key)
    if text is None:
        text = name.rfc4514_string()
        if len(_ISSUER_DNS) >= _ISSUER_DNS_KEPT:
            _ISSUER_DNS.clear()
        _ISSUER_DNS[key] = text
    return text


def _common_names(name: x509.Name) -> list[str]:
    values: list[str] = []
    for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        values.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    return values


def _subject_alternative_names(extensions: x509.Extensions) -> SubjectAlternativeNames:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SubjectAlternativeNames()
    ip_addresses = [str(value) for value in san.get_values_for_type(x509.IPAddress)]
    return SubjectAlternativeNames(
        dns=san.get_values_for_type(x509.DNSName),
        email=san.get_values_for_type(x509.RFC822Name),
        uri=san.get_values_for_type(x509.UniformResourceIdentifier),
        ip=ip_addresses,
        other_name_count=len(san.get_values_for_type(x509.OtherName)),
    )


def _extended_key_usage(extensions: x509.Extensions) -> list[str]:
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [oid.dotted_string for oid in usages]


def _is_ca(extensions: x509.Extensions) -> bool:
    try:
        return extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def public_key_facts(cert: x509.Certificate) -> PublicKey:
    """Describe the certificate's public key, as ``unknown`` when ``cryptography`` does not support it."""
    try:
        key = cert.public_key()
    except UnsupportedAlgorithm as exc:
        logger.debug("public key algorithm %s is not supported: %s", cert.public_key_algorithm_oid, exc)
        return PublicKey(algorithm="unknown")
    except ValueError as exc:
        raise CertificateError("public_key", f"invalid public key: {exc}") from exc

    if isinstance(key, rsa.RSAPublicKey):
        return PublicKey(algorithm="rsa", size=key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return PublicKey(algorithm="ec", size=key.curve.key_size, curve=key.curve.name)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return PublicKey(algorithm="ed25519")
    if isinstance(key, ed448.Ed448PublicKey):
        return PublicKey(algorithm="ed448")
    if isinstance(key, dsa.DSAPublicKey):
        return PublicKey(algorithm="dsa", size=key.key_size)
    return PublicKey(algorithm="unknown")


# The facts model that rejected a value, mapped to the parsing step that read it.
_MODEL_STEPS: dict[str, Step] = {
    "Name": "names",
    "IssuerName": "names",
    "SubjectAlternativeNames": "extensions",
    "PublicKey": "public_key",
}


def certificate_facts(
    cert: x509.Certificate,
    source: CertificateSource,
    private_key: PrivateKey,
    signers: Sequence[Signer],
) -> Certificate:
    """Build the facts of one certificate, raising ``CertificateError`` that names the step that failed.

    A value that parses but lies outside the facts schema's bounds, such as
    a key of more than 1,000,000 bits, is a ``CertificateError`` too, so one
    such certificate never stops the collection of the others.
    """
    try:
        return _certificate_facts(cert, source, private_key, signers)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        step = _MODEL_STEPS.get(exc.title, "load")
        message = f"certificate {fingerprint_sha256(cert)}: {exc.title}.{field} {problem['msg']}"
        raise CertificateError(step, message) from None


def _certificate_facts(
    cert: x509.Certificate,
    source: CertificateSource,
    private_key: PrivateKey,
    signers: Sequence[Signer],
) -> Certificate:
    fingerprint = fingerprint_sha256(cert)
    prefix = f"certificate {fingerprint}"

    try:
        serial_number = format_serial_number(cert.serial_number)
        not_before = cert.not_valid_before_utc
        not_after = cert.not_valid_after_utc
    except ValueError as exc:
        raise CertificateError("load", f"{prefix}: invalid serial number or validity: {exc}") from exc

    try:
        subject = Name(dn=cert.subject.rfc4514_string(), common_names=_common_names(cert.subject))
        issuer = IssuerName(dn=_issuer_dn(cert.issuer))
    except ValueError as exc:
        raise CertificateError("names", f"{prefix}: invalid subject or issuer name: {exc}") from exc

    try:
        extensions = cert.extensions
        alternative_names = _subject_alternative_names(extensions)
        extended_key_usage = _extended_key_usage(extensions)
        is_ca = _is_ca(extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError("extensions", f"{prefix}: invalid extensions: {exc}") from exc

    try:
        public_key = public_key_facts(cert)
    except CertificateError as exc:
        raise CertificateError("public_key", f"{prefix}: {exc.message}") from exc

    signer_check = check_signers(cert, signers)
    return Certificate(
        source=source,
        fingerprint_sha256=fingerprint,
        subject=subject,
        issuer=issuer,
        serial_number=serial_number,
        not_before=not_before,
        not_after=not_after,
        subject_alternative_names=alternative_names,
        extended_key_usage=extended_key_usage,
        is_ca=is_ca,
        public_key=public_key,
        private_key=private_key,
        signed_by=signer_check.signed_by,
        unverified_signers=signer_check.unverified,
    )
