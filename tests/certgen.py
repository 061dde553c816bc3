"""Generate certificates, keys and NSS databases for tests.

Every helper builds real objects with ``cryptography`` or the real NSS tools
(``certutil``, ``pk12util``), so tests exercise the same formats a device has:

    ca = make_ca("Example Device CA")
    leaf = make_leaf(ca, "pf2abc12_mycompany", sans=["pf2abc12.corp.example"])
    leaf.write_cert(tmp_path / "client.pem")
    leaf.write_key(tmp_path / "client.key", key_format="traditional")

    db = create_nssdb(tmp_path / "nssdb", password="secret")
    db.import_key_pair(leaf, "corp-device")
    db.add_certificate(ca.cert, "Example Device CA")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

KeyType = Literal["rsa", "ec", "ed25519"]
KeyFormat = Literal["pkcs8", "traditional"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string
EMAIL_PROTECTION = ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string
# Microsoft's User Principal Name, the usual otherName in client certificates.
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

PKCS12_PASSWORD = "p12-transport"


def generate_key(key_type: KeyType) -> PrivateKey:
    """Generate a fresh private key: RSA 2048, EC P-256 or Ed25519."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; expected rsa, ec or ed25519")


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself and takes no separate hash algorithm.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass(frozen=True)
class CertKey:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def name(self) -> x509.Name:
        return self.cert.subject

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, key_format: KeyFormat = "pkcs8", password: bytes | None = None) -> bytes:
        """Serialize the key as PEM; ``traditional`` is ``RSA PRIVATE KEY`` or ``EC PRIVATE KEY``."""
        return self._key_bytes(serialization.Encoding.PEM, key_format, password)

    def key_der(self, key_format: KeyFormat = "pkcs8", password: bytes | None = None) -> bytes:
        return self._key_bytes(serialization.Encoding.DER, key_format, password)

    def _key_bytes(
        self, encoding: serialization.Encoding, key_format: KeyFormat, password: bytes | None
    ) -> bytes:
        private_format = (
            serialization.PrivateFormat.PKCS8
            if key_format == "pkcs8"
            else serialization.PrivateFormat.TraditionalOpenSSL
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption()
            if password is None
            else serialization.BestAvailableEncryption(password)
        )
        return self.key.private_bytes(encoding, private_format, encryption)

    def write_cert(self, path: Path, encoding: Literal["pem", "der"] = "pem") -> Path:
        path.write_bytes(self.cert_pem() if encoding == "pem" else self.cert_der())
        return path

    def write_key(
        self,
        path: Path,
        key_format: KeyFormat = "pkcs8",
        password: bytes | None = None,
        encoding: Literal["pem", "der"] = "pem",
    ) -> Path:
        if encoding == "pem":
            path.write_bytes(self.key_pem(key_format, password))
        else:
            path.write_bytes(self.key_der(key_format, password))
        return path

    def pkcs12(self, friendly_name: str, password: str = PKCS12_PASSWORD) -> bytes:
        """Serialize certificate and key as PKCS#12 encrypted with ``password``."""
        return pkcs12.serialize_key_and_certificates(
            friendly_name.encode(),
            self.key,
            self.cert,
            None,
            serialization.BestAvailableEncryption(password.encode()),
        )


def write_pem(path: Path, *parts: bytes) -> Path:
    """Write PEM parts (certificates, keys) one after another into one file."""
    path.write_bytes(b"".join(parts))
    return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(
    name: str,
    parent: CertKey | None = None,
    key_type: KeyType = "ec",
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertKey:
    """Create a CA certificate named ``CN=name``: self-signed, or signed by ``parent`` (an intermediate)."""
    key = generate_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.name if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + dt.timedelta(days=3650))
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
    )
    signing_key = parent.key if parent else key
    cert = builder.sign(signing_key, _signature_hash(signing_key))
    return CertKey(cert, key)


def _general_name(value: str | x509.GeneralName) -> x509.GeneralName:
    """Map a plain SAN string to its type: ``@`` is email, ``://`` is URI, an IP address is IP, else DNS."""
    if isinstance(value, x509.GeneralName):
        return value
    if "://" in value:
        return x509.UniformResourceIdentifier(value)
    if "@" in value:
        return x509.RFC822Name(value)
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def upn(value: str) -> x509.OtherName:
    """Build a UPN otherName SAN holding a DER UTF8String."""
    encoded = value.encode()
    if len(encoded) > 127:
        raise ValueError("UPN longer than 127 bytes needs a long-form DER length")
    return x509.OtherName(UPN_OID, b"\x0c" + bytes([len(encoded)]) + encoded)


def make_leaf(
    issuer: CertKey,
    cn: str | Sequence[str] | None,
    *,
    sans: Sequence[str | x509.GeneralName] = (),
    eku: Sequence[str] | None = (CLIENT_AUTH,),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    key_type: KeyType = "ec",
    other_name_only: bool = False,
    extra_subject: Sequence[x509.NameAttribute[str]] = (),
) -> CertKey:
    """Create an end-entity certificate signed by ``issuer``.

    ``cn`` may be one value, several values (several CN attributes) or None.
    ``eku`` is a list of dotted OIDs; None leaves the extension out.
    ``other_name_only`` gives the certificate a SAN extension holding only a
    UPN otherName, as Windows user certificates often have.
    """
    key = generate_key(key_type)
    if cn is None:
        common_names: list[str] = []
    elif isinstance(cn, str):
        common_names = [cn]
    else:
        common_names = list(cn)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, value) for value in common_names]
    subject = x509.Name([*extra_subject, *attributes])
    start = not_before or _now() - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    general_names: list[x509.GeneralName] = []
    if other_name_only:
        general_names.append(upn(f"{common_names[0] if common_names else 'user'}@corp.example"))
    general_names += [_general_name(value) for value in sans]
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    if eku is not None:
        usages = [ObjectIdentifier(oid) for oid in eku]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(issuer.key, _signature_hash(issuer.key))
    return CertKey(cert, key)


def _run(args: Sequence[str]) -> None:
    # stdin is closed so that a tool asking for a password fails instead of waiting.
    result = subprocess.run(
        list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed with exit code {result.returncode}: {result.stdout}{result.stderr}"
        )


@dataclass(frozen=True)
class NssDb:
    """An NSS database directory created with ``certutil -N``."""

    directory: Path
    password: str | None = None
    legacy: bool = False

    @property
    def spec(self) -> str:
        """The ``-d`` argument: ``sql:DIR`` or, for a legacy database, ``dbm:DIR``."""
        return f"{'dbm' if self.legacy else 'sql'}:{self.directory}"

    def _password_args(self, flag: str, scratch: Path) -> list[str]:
        if self.password is None:
            return []
        password_file = scratch / "password"
        password_file.write_text(f"{self.password}\n")
        return [flag, str(password_file)]

    def import_key_pair(self, cert_key: CertKey, nickname: str) -> None:
        """Import certificate and private key through a PKCS#12 file and ``pk12util -i``.

        NSS 3.87 (Debian 12) rejects Ed25519 keys here, so NSS tests use RSA or EC keys.
        """
        with tempfile.TemporaryDirectory() as scratch:
            p12 = Path(scratch) / "import.p12"
            p12.write_bytes(cert_key.pkcs12(nickname))
            args = ["pk12util", "-i", str(p12), "-d", self.spec, "-W", PKCS12_PASSWORD]
            if self.password is not None:
                args += ["-K", self.password]
            _run(args)

    def add_certificate(self, cert: x509.Certificate, nickname: str, trust: str = "C,,") -> None:
        """Add a certificate without key, as for a CA, with ``certutil -A``."""
        with tempfile.TemporaryDirectory() as scratch:
            der = Path(scratch) / "cert.der"
            der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
            args = ["certutil", "-A", "-d", self.spec, "-n", nickname, "-t", trust, "-i", str(der)]
            _run(args + self._password_args("-f", Path(scratch)))

    def generate_self_signed(self, nickname: str, key_type: Literal["rsa", "ec", "dsa"]) -> None:
        """Generate a key pair and a self-signed certificate ``CN=nickname`` inside the database.

        ``certutil -S`` creates the key, so its attributes are the ones NSS
        writes itself rather than the ones ``pk12util`` imports. EC keys use P-256.
        """
        with tempfile.TemporaryDirectory() as scratch:
            noise = Path(scratch) / "noise"
            noise.write_bytes(os.urandom(64))
            args = ["certutil", "-S", "-d", self.spec, "-n", nickname, "-s", f"CN={nickname}", "-x"]
            args += ["-t", "u,u,u", "-k", key_type, "-z", str(noise)]
            if key_type == "ec":
                args += ["-q", "nistp256"]
            _run(args + self._password_args("-f", Path(scratch)))


def create_nssdb(directory: Path, *, password: str | None = None, legacy: bool = False) -> NssDb:
    """Create an NSS database with ``certutil -N``, empty-password unless ``password`` is given.

    ``legacy`` creates the old DBM format (cert8.db, key3.db). NSS builds
    without DBM support fail there, and this raises RuntimeError.
    """
    directory.mkdir(parents=True, exist_ok=True)
    db = NssDb(directory, password, legacy)
    if password is None:
        _run(["certutil", "-N", "-d", db.spec, "--empty-password"])
        return db
    with tempfile.TemporaryDirectory() as scratch:
        _run(["certutil", "-N", "-d", db.spec, *db._password_args("-f", Path(scratch))])
    return db


def der_length(length: int) -> bytes:
    """Encode a DER length in its shortest form."""
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def _der_read(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """Return the tag, content and end offset of the DER element at ``offset``."""
    tag = data[offset]
    first = data[offset + 1]
    if first < 0x80:
        length, start = first, offset + 2
    else:
        size = first & 0x7F
        length = int.from_bytes(data[offset + 2 : offset + 2 + size], "big")
        start = offset + 2 + size
    return tag, data[start : start + length], start + length


def der_integer(value: int) -> bytes:
    """Encode a non-negative DER INTEGER."""
    return _der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def with_huge_rsa_modulus(cert: x509.Certificate, bits: int) -> bytes:
    """Return the certificate's DER with its public key replaced by an RSA key of ``bits`` bits.

    The signature no longer verifies, but the certificate parses, so it
    tests what the collector does with a key size outside the facts schema.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    old_spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    modulus = (1 << (bits - 1)) | 1
    rsa_algorithm = _der_tlv(0x30, _der_tlv(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    key = _der_tlv(0x30, der_integer(modulus) + der_integer(65537))
    new_spki = _der_tlv(0x30, rsa_algorithm + _der_tlv(0x03, b"\x00" + key))

    _, certificate_content, _ = _der_read(der, 0)
    tbs_tag, tbs_content, tbs_end = _der_read(certificate_content, 0)
    assert tbs_content.count(old_spki) == 1
    tbs = _der_tlv(tbs_tag, tbs_content.replace(old_spki, new_spki))
    return _der_tlv(0x30, tbs + certificate_content[tbs_end:])
