"""Certificates for the benchmarks: a signing CA, leaf certificates and NSS databases.

Certificates are built with ``cryptography``; NSS databases with the real
``certutil`` and ``pk12util``, as a device has them.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Password of the PKCS#12 files that carry certificates into NSS databases. It protects no real secret.
TRANSPORT_PASSWORD = "bench-transport"

NSS_TOOLS = ("certutil", "pk12util")


class ToolMissingError(RuntimeError):
    """An NSS tool that the benchmark needs is not installed."""


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def name(common_name: str, organization: str = "Example Corp") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    common_name: str, not_before: dt.datetime, *, organization: str = "Example Corp", days: int = 3650
) -> Issued:
    """Create a self-signed CA certificate with an EC P-256 key, valid for ``days`` from ``not_before``."""
    key = ec_key()
    subject = name(common_name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    subject: x509.Name,
    key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    dns_names: Sequence[str] = (),
    emails: Sequence[str] = (),
    client_auth: bool = True,
    email_protection: bool = False,
) -> Issued:
    """Issue a leaf certificate for ``key`` from ``ca``, with the given SANs and extended key usages."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    usages = []
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if email_protection:
        usages.append(ExtendedKeyUsageOID.EMAIL_PROTECTION)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    general_names: list[x509.GeneralName] = [x509.DNSName(value) for value in dns_names]
    general_names += [x509.RFC822Name(value) for value in emails]
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def require_nss_tools() -> None:
    missing = [tool for tool in NSS_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ToolMissingError(
            f"{' and '.join(missing)} not found; install the libnss3-tools package (Debian, Ubuntu) "
            "or nss-tools (Fedora)"
        )


def create_nssdb(directory: Path) -> str:
    """Create an empty NSS ``sql:`` database without a password and return its ``sql:`` spec."""
    require_nss_tools()
    directory.mkdir(parents=True)
    spec = f"sql:{directory}"
    subprocess.run(["certutil", "-N", "-d", spec, "--empty-password"], check=True, capture_output=True)
    return spec


def import_pkcs12(spec: str, data: bytes, scratch: Path) -> None:
    """Import a PKCS#12 file (keys and certificates) into the NSS database ``spec`` with one pk12util call."""
    scratch.write_bytes(data)
    try:
        subprocess.run(
            ["pk12util", "-i", str(scratch), "-d", spec, "-W", TRANSPORT_PASSWORD],
            check=True,
            capture_output=True,
        )
    finally:
        scratch.unlink()


def import_key_pair(spec: str, issued: Issued, nickname: str, scratch: Path) -> None:
    """Import a certificate with its private key, as a user or an enrollment agent does with pk12util."""
    data = pkcs12.serialize_key_and_certificates(
        nickname.encode(),
        issued.key,
        issued.cert,
        None,
        serialization.BestAvailableEncryption(TRANSPORT_PASSWORD.encode()),
    )
    import_pkcs12(spec, data, scratch)


def import_certificates(
    spec: str, certificates: Sequence[x509.Certificate], nickname: str, scratch: Path
) -> None:
    """Import many certificates without keys with one pk12util call, named ``NICKNAME-00000`` and up.

    One ``certutil -A`` per certificate would start a process each time. A
    PKCS#12 file with all certificates as bags took 7 s for 2,000
    certificates with NSS 3.87 on a 2-core AMD EPYC VM, as long as
    ``certutil -B`` with a batch file.
    """
    bags = [
        pkcs12.PKCS12Certificate(certificate, f"{nickname}-{index:05d}".encode())
        for index, certificate in enumerate(certificates)
    ]
    data = pkcs12.serialize_key_and_certificates(
        None, None, None, bags, serialization.BestAvailableEncryption(TRANSPORT_PASSWORD.encode())
    )
    import_pkcs12(spec, data, scratch)


def add_certificate(
    spec: str, certificate: x509.Certificate, nickname: str, trust: str, scratch: Path
) -> None:
    """Add one certificate without a key, such as a CA with trust ``CT,,``, with certutil -A."""
    scratch.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    try:
        subprocess.run(
            ["certutil", "-A", "-d", spec, "-n", nickname, "-t", trust, "-i", str(scratch)],
            check=True,
            capture_output=True,
        )
    finally:
        scratch.unlink()
