"""Parse and check a signing certificate given to ``certposture ca add``.

Accepted input: a PEM certificate, a DER certificate, a PEM whose line breaks
were written as the two characters ``\\n`` (as copied from a JSON field), or a
PEM bundle holding the certificate and its private key. Everything else is
rejected with an :class:`InputError` whose message names what was found and
what to pass instead. Error messages never contain key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certposture.errors import InputError
from collector.facts import format_utc
from collector.x509facts import split_pem


@dataclass(frozen=True)
class _PemBlock:
    """A complete PEM block: its label and its text from the BEGIN line through the END line."""

    label: bytes
    text: bytes


_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_PRIVATE_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"}
_ENCRYPTED_KEY_LABELS = {b"ENCRYPTED PRIVATE KEY"}
_PUBLIC_KEY_LABELS = {b"PUBLIC KEY", b"RSA PUBLIC KEY"}
_REQUEST_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}


@dataclass(frozen=True)
class SigningCertificateInput:
    """A checked signing certificate and, when the input held one, its private key in PKCS#8 PEM."""

    certificate: x509.Certificate
    private_key_pem: bytes | None
    warnings: tuple[str, ...]


def parse_signing_certificate(raw: bytes, source: str) -> SigningCertificateInput:
    """Parse ``raw`` (read from ``source``, a path or ``-``) and check that it is a CA certificate."""
    data = _unescape_one_line_pem(raw)
    if not data.strip():
        raise InputError(f"{source}: input is empty; pass a PEM or DER CA certificate")

    if b"-----BEGIN" in data:
        certificate, key, warnings = _parse_pem_bundle(data, source)
    else:
        certificate, key, warnings = _parse_der(data, source), None, []

    _check_parseable(certificate, source)
    check_is_ca(certificate, source)
    if certificate.not_valid_after_utc < datetime.now(UTC):
        warnings.append(
            f"{source}: certificate expired on {format_utc(certificate.not_valid_after_utc)}; "
            "device certificates it signed will still be checked against it"
        )

    key_pem = None
    if key is not None:
        _check_key_matches(certificate, key, source)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return SigningCertificateInput(certificate, key_pem, tuple(warnings))


def _check_parseable(certificate: x509.Certificate, source: str) -> None:
    """Raise InputError when a part that cryptography decodes only on first use is invalid.

    The collector reads the same parts of every device certificate, so a
    signing certificate that fails here could never be matched anyway.
    """
    fix = "the file is not a well-formed X.509 certificate; ask the CA's owner for a valid export"
    try:
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
    except ValueError as error:
        raise InputError(f"{source}: certificate names cannot be parsed ({error}); {fix}") from None
    try:
        _ = certificate.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        raise InputError(f"{source}: certificate extensions cannot be parsed ({error}); {fix}") from None
    try:
        certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise InputError(f"{source}: certificate public key cannot be used ({error}); {fix}") from None


def check_is_ca(certificate: x509.Certificate, source: str) -> None:
    """Raise InputError unless basicConstraints marks a CA and keyUsage, when present, allows keyCertSign."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise InputError(
            f"{source}: certificate {certificate.subject.rfc4514_string()!r} has no basicConstraints "
            "extension, so it is not a CA; pass the certificate of the CA that signs device certificates"
        ) from None
    except ValueError as error:
        raise InputError(f"{source}: certificate extensions cannot be parsed: {error}") from None
    if not constraints.ca:
        raise InputError(
            f"{source}: certificate {certificate.subject.rfc4514_string()!r} is not a CA "
            "(basicConstraints CA:FALSE); pass the certificate of the CA that signs device certificates"
        )

    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not key_usage.key_cert_sign:
        raise InputError(
            f"{source}: certificate {certificate.subject.rfc4514_string()!r} has a keyUsage extension "
            "without keyCertSign, so it cannot sign certificates; pass the signing CA's certificate"
        )


def _unescape_one_line_pem(data: bytes) -> bytes:
    """Turn a PEM copied out of a JSON string (quotes, literal ``\\n``) back into PEM.

    Input without PEM armor is returned unchanged: DER may begin or end with whitespace bytes.
    """
    if b"-----BEGIN" not in data:
        return data
    data = data.strip()
    if data[:1] in (b'"', b"'") and data[-1:] == data[:1]:
        data = data[1:-1]
    if b"\\n" in data:
        data = data.replace(b"\\r\\n", b"\n").replace(b"\\n", b"\n")
    return data.strip() + b"\n"


def _parse_pem_bundle(data: bytes, source: str) -> tuple[x509.Certificate, PrivateKeyTypes | None, list[str]]:
    # The collector's one-pass splitter, because a pattern search for each BEGIN line takes
    # quadratic time on a file of BEGIN lines without END lines.
    blocks = [
        _PemBlock(block.label.encode("ascii", "replace"), block.text)
        for block in split_pem(data)
        if block.text
    ]
    if not blocks:
        raise InputError(
            f"{source}: PEM armor found but no complete BEGIN/END block; check the file is whole"
        )

    labels = [block.label for block in blocks]
    if b"TRUSTED CERTIFICATE" in labels:
        raise InputError(
            f"{source}: contains an OpenSSL TRUSTED CERTIFICATE, which carries trust settings; "
            "convert it with `openssl x509 -in FILE -out ca.pem` and add ca.pem"
        )
    certificate_blocks = [block for block in blocks if block.label in _CERTIFICATE_LABELS]
    if not certificate_blocks:
        raise InputError(f"{source}: {_describe_non_certificate(labels)}")
    if len(certificate_blocks) > 1:
        raise InputError(
            f"{source}: contains {len(certificate_blocks)} certificates; add the signing CA's certificate "
            "alone (one `ca add` per certificate)"
        )

    try:
        certificate = x509.load_pem_x509_certificate(certificate_blocks[0].text)
    except (ValueError, x509.InvalidVersion) as error:
        raise InputError(f"{source}: certificate cannot be parsed: {error}") from None

    warnings: list[str] = []
    key: PrivateKeyTypes | None = None
    for block in blocks:
        label = block.label
        if label in _ENCRYPTED_KEY_LABELS or (label in _PRIVATE_KEY_LABELS and b"ENCRYPTED" in block.text):
            raise InputError(
                f"{source}: private key is encrypted; add the certificate without its key, "
                "or decrypt the key first"
            )
        if label in _PRIVATE_KEY_LABELS:
            if key is not None:
                raise InputError(f"{source}: contains more than one private key; keep only the CA's key")
            try:
                key = serialization.load_pem_private_key(block.text, password=None)
            except (ValueError, TypeError):
                # The exception text of a key parser is not echoed: it could quote key bytes.
                raise InputError(f"{source}: private key block cannot be parsed; check the PEM") from None
        elif label not in _CERTIFICATE_LABELS:
            warnings.append(f"{source}: ignored a PEM block of type {label.decode(errors='replace')!r}")
    return certificate, key, warnings


def _parse_der(data: bytes, source: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except x509.InvalidVersion as error:
        raise InputError(f"{source}: certificate cannot be parsed: {error}") from None
    except ValueError:
        pass
    try:
        serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        pass
    else:
        raise InputError(
            f"{source}: contains a public key, not a certificate; pass the CA's X.509 certificate"
        )
    raise InputError(
        f"{source}: not a certificate: neither PEM nor DER X.509 could be parsed; "
        "pass the CA certificate as PEM or DER"
    )


def _describe_non_certificate(labels: list[bytes]) -> str:
    found = {label.decode(errors="replace") for label in labels}
    if any(label in _PUBLIC_KEY_LABELS for label in labels):
        return "contains a public key, not a certificate; pass the CA's X.509 certificate"
    if any(label in _REQUEST_LABELS for label in labels):
        return "contains a certificate signing request, not a certificate; pass the issued CA certificate"
    if any(label in _PRIVATE_KEY_LABELS | _ENCRYPTED_KEY_LABELS for label in labels):
        return "contains a private key but no certificate; pass the CA's X.509 certificate"
    return f"contains no certificate (found PEM blocks: {', '.join(sorted(found))}); pass a CA certificate"


def _check_key_matches(certificate: x509.Certificate, key: PrivateKeyTypes, source: str) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise InputError(
            f"{source}: private key does not belong to the certificate (public keys differ); "
            "pass the CA certificate with its own key, or the certificate alone"
        )
