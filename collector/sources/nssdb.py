"""NSS shared databases (``sql:`` format): cert9.db for certificates, key4.db for private keys.

The databases are read directly with sqlite3 in read-only mode, so neither
NSS nor the database password is needed. Each database has one table
(``nssPublic`` in cert9.db, ``nssPrivate`` in key4.db) with a row per PKCS#11
object and a column per attribute, named ``a`` followed by the attribute
type in lowercase hex. Facts checked against databases written by NSS 3.87
``certutil`` and ``pk12util``:

- CK_ULONG values such as CKA_CLASS are 4-byte big-endian blobs.
- A zero-length value is stored as the 3-byte marker ``a5 00 5a``.
- CKA_VALUE of a certificate object is its DER encoding.
- CKA_ID of a private key is stored in clear even when the key database has
  a password. Only sensitive attributes, the private key values, are
  encrypted. ``pk12util`` and ``certutil`` give a certificate and its
  private key the same CKA_ID.
- The public attributes of a private key are stored in clear as well:
  CKA_KEY_TYPE, CKA_MODULUS and CKA_PUBLIC_EXPONENT of RSA keys, and
  CKA_EC_PARAMS (the curve OID) of EC keys. CKA_NSS_DB (0xD5A0DB00) is the RSA
  modulus or the raw X9.62 uncompressed EC point. EC private keys have no
  CKA_EC_POINT.
- CKA_ID is the SHA-1 of the RSA modulus (big-endian, no leading zero) or of
  the uncompressed EC point, for keys imported with ``pk12util`` and keys
  generated with ``certutil -S``.

A certificate has its private key only when key4.db contains a private-key
object with the certificate's CKA_ID whose public key equals the
certificate's. For RSA the key's CKA_MODULUS (or CKA_NSS_DB) must be the
certificate's modulus, and for EC its CKA_NSS_DB must be the certificate's
point. A key that stores neither value counts only when its CKA_ID is the
SHA-1 that NSS derives from the certificate's public key. So a CKA_ID copied
onto another certificate does not count. A key with a different public key is
reported ``missing``. A key of another type, such as DSA, cannot be compared
and is reported ``unverified``.

NOTE: anyone who can write key4.db can still set these public values to another
certificate's key. NSS 3.87 protects an RSA key's CKA_MODULUS with a MAC keyed
by the database password (the ``sig_key_`` rows of the metaData table), which
this reader does not check, and does not protect CKA_NSS_DB of EC keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import sqlite3
import stat
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from collector.facts import CertificateSource, CollectionError, PrivateKey
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import CertificateError, certificate_facts, load_certificate

if TYPE_CHECKING:
    from collector.proofs import KeyMaterial

logger = logging.getLogger(__name__)

SOURCE = "nssdb"
DEFAULT_NSSDB = "/etc/pki/nssdb"

CERT_DB = "cert9.db"
KEY_DB = "key4.db"
LEGACY_CERT_DB = "cert8.db"

CKO_CERTIFICATE = 1
CKO_PRIVATE_KEY = 3
CKK_RSA = 0
CKK_EC = 3
# Columns of the attributes read here: "a" + PKCS#11 attribute type in lowercase hex.
COLUMN_CLASS = "a0"  # CKA_CLASS = 0x0
COLUMN_LABEL = "a3"  # CKA_LABEL = 0x3
COLUMN_VALUE = "a11"  # CKA_VALUE = 0x11
COLUMN_KEY_TYPE = "a100"  # CKA_KEY_TYPE = 0x100
COLUMN_ID = "a102"  # CKA_ID = 0x102
COLUMN_MODULUS = "a120"  # CKA_MODULUS = 0x120
COLUMN_NSS_DB = "ad5a0db00"  # CKA_NSS_DB = 0xD5A0DB00, the public value of an NSS private key

_EMPTY_VALUE = b"\xa5\x00\x5a"

# Seconds to wait while an NSS process holds a write lock on the database.
_BUSY_TIMEOUT = 5.0


@dataclass(frozen=True)
class _CertificateRow:
    row_id: int
    label: str | None
    value: bytes | None
    ckaid: bytes | None


@dataclass(frozen=True)
class _PrivateKeyRow:
    """The public attributes of one private-key object in key4.db, all stored in clear."""

    ckaid: bytes
    key_type: int | None
    modulus: bytes | None
    public_value: bytes | None


@dataclass(frozen=True)
class _KeyComparison:
    """The result of comparing one private-key object with the certificate.

    ``detail`` explains a mismatch, or why no comparison was possible.
    """

    outcome: Literal["match", "mismatch", "not_comparable"]
    detail: str = ""


def _ulong(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _blob(value: object) -> bytes | None:
    if not isinstance(value, bytes) or value == _EMPTY_VALUE:
        return None
    return value


def _ulong_value(value: object) -> int | None:
    blob = _blob(value)
    if blob is None or len(blob) != 4:
        return None
    return int.from_bytes(blob, "big")


def _error(location: str, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=location, step=step, message=message)


def database_directory(spec: str) -> str:
    """Return the absolute directory of an NSS database given as ``sql:DIR`` or ``DIR``.

    Raises ValueError for another NSS prefix such as ``dbm:``.
    """
    prefix, separator, rest = spec.partition(":")
    if separator and prefix == "dbm":
        raise ValueError(_legacy_message(os.path.abspath(rest)))
    if separator and prefix in {"extern", "rdb", "multiaccess"}:
        raise ValueError(
            f"NSS database {spec!r} uses the {prefix}: format, but only sql: databases (cert9.db) are supported"
        )
    directory = rest if separator and prefix == "sql" else spec
    return os.path.abspath(directory)


def _connect_read_only(path: str) -> sqlite3.Connection:
    # mode=ro never writes or creates the file, but it still takes SQLite's shared
    # lock, so a read never returns a half-written NSS transaction. immutable=1 would
    # skip that lock and is therefore not used.
    # SQLite opens the database and any journal beside it with a blocking open(), so a FIFO
    # there would hang the collector. Special files are rejected before SQLite opens them.
    for candidate in (path, f"{path}-journal", f"{path}-wal", f"{path}-shm"):
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise sqlite3.OperationalError(f"{candidate} is not a regular file, so it was not opened")
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT)
    # NSS stores its attributes as BLOBs. A TEXT value that is not UTF-8 would otherwise
    # fail the whole query, and hide every other certificate with it.
    connection.text_factory = bytes
    return connection


def collect_nssdb(
    directory: str, signers: Sequence[Signer], material: KeyMaterial | None = None
) -> SourceResult:
    """Collect the certificates of one NSS database and whether each has its private key.

    ``material``, given when collecting with a challenge, receives each
    certificate's DER, for signing proofs inside NSS.
    """
    result = SourceResult()
    try:
        location = database_directory(directory)
    except ValueError as exc:
        result.errors.append(_error(directory, "open", str(exc)))
        return result

    rows = _read_certificate_rows(location, result.errors)
    if rows is None:
        return result
    key_lookup = _read_private_keys(location, result.errors)

    for row in rows:
        where = f"certificate {row.label or '(no nickname)'} (row {row.row_id}) in {location}/{CERT_DB}"
        if row.value is None:
            result.errors.append(_error(location, "load", f"{where} has no DER value"))
            continue
        source = CertificateSource(type="nssdb", location=location, label=row.label)
        try:
            cert = load_certificate(row.value, "der")
            if isinstance(key_lookup, PrivateKey):
                private_key = key_lookup
            else:
                private_key = _private_key(row, cert, location, key_lookup)
            facts = certificate_facts(cert, source, private_key, signers)
        except CertificateError as exc:
            result.errors.append(_error(location, exc.step, f"{where}: {exc.message}"))
            continue
        result.certificates.append(facts)
        if material is not None:
            material.certificates[facts.fingerprint_sha256] = row.value
    return result


def _read_certificate_rows(location: str, errors: list[CollectionError]) -> list[_CertificateRow] | None:
    if not os.path.isdir(location):
        message = (
            f"NSS database directory {location} not found"
            if not os.path.exists(location)
            else f"NSS database path {location} is not a directory"
        )
        errors.append(_error(location, "open", message))
        return None

    cert_db = os.path.join(location, CERT_DB)
    if not os.path.exists(cert_db):
        if os.path.exists(os.path.join(location, LEGACY_CERT_DB)):
            errors.append(_error(location, "database", _legacy_message(location)))
        else:
            errors.append(_error(location, "open", f"NSS database {cert_db} not found"))
        return None

    query = (
        f"SELECT id, {COLUMN_LABEL}, {COLUMN_VALUE}, {COLUMN_ID} FROM nssPublic "
        f"WHERE {COLUMN_CLASS} = ? ORDER BY id"
    )
    try:
        with contextlib.closing(_connect_read_only(cert_db)) as connection:
            records = connection.execute(query, (_ulong(CKO_CERTIFICATE),)).fetchall()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        # sqlite3 raises UnicodeDecodeError when an error message quotes a schema that is not UTF-8.
        errors.append(_error(location, "database", f"cannot read NSS certificate database {cert_db}: {exc}"))
        return None

    rows: list[_CertificateRow] = []
    for row_id, label, value, ckaid in records:
        label_bytes = _blob(label)
        rows.append(
            _CertificateRow(
                row_id=row_id,
                label=label_bytes.decode("utf-8", "replace") if label_bytes is not None else None,
                value=_blob(value),
                ckaid=_blob(ckaid),
            )
        )
    return rows


def _legacy_message(location: str) -> str:
    # The command was checked with NSS 3.87 certutil: opening the directory as sql:
    # read-write converts it, and the merge then adds no duplicates.
    quoted = shlex.quote(location)
    return (
        f"NSS database {location} is in the legacy DBM format (cert8.db, key3.db), which is not "
        f"supported. Upgrade it in place to the SQL format (cert9.db, key4.db) with "
        f"`certutil --merge -d sql:{quoted} --source-dir dbm:{quoted}`, adding "
        "`-f PASSWORD_FILE -@ PASSWORD_FILE` if the key database has a password."
    )


def _read_private_keys(
    location: str, errors: list[CollectionError]
) -> dict[bytes, list[_PrivateKeyRow]] | PrivateKey:
    """Return the private-key objects of key4.db by CKA_ID.

    When key4.db is missing or unreadable, returns instead the private-key
    facts that every certificate of the database gets.
    """
    key_db = os.path.join(location, KEY_DB)
    if not os.path.exists(key_db):
        return PrivateKey(present=False, status="missing", reason=f"the key database {key_db} was not found")

    # Only public attributes are read, because CKA_VALUE and the other private-key values contain key material.
    query = (
        f"SELECT {COLUMN_ID}, {COLUMN_KEY_TYPE}, {COLUMN_MODULUS}, {COLUMN_NSS_DB} FROM nssPrivate "
        f"WHERE {COLUMN_CLASS} = ?"
    )
    try:
        with contextlib.closing(_connect_read_only(key_db)) as connection:
            records = connection.execute(query, (_ulong(CKO_PRIVATE_KEY),)).fetchall()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        # sqlite3 raises UnicodeDecodeError when an error message quotes a schema that is not UTF-8.
        errors.append(_error(location, "database", f"cannot read NSS key database {key_db}: {exc}"))
        return PrivateKey(
            present=False,
            status="unverified",
            location=location,
            reason=f"the key database {key_db} could not be read, so the private key could not be looked up",
        )

    keys: dict[bytes, list[_PrivateKeyRow]] = {}
    for ckaid_value, key_type, modulus, public_value in records:
        ckaid = _blob(ckaid_value)
        if ckaid is None:
            continue
        key = _PrivateKeyRow(
            ckaid=ckaid,
            key_type=_ulong_value(key_type),
            modulus=_blob(modulus),
            public_value=_blob(public_value),
        )
        keys.setdefault(ckaid, []).append(key)
    return keys


def _private_key(
    row: _CertificateRow, cert: x509.Certificate, location: str, keys: dict[bytes, list[_PrivateKeyRow]]
) -> PrivateKey:
    if row.ckaid is None:
        reason = (
            f"the certificate has no CKA_ID in {location}/{CERT_DB}, so no private key can be matched to it"
        )
        return PrivateKey(present=False, status="missing", reason=reason)
    candidates = keys.get(row.ckaid)
    if not candidates:
        return PrivateKey(
            present=False,
            status="missing",
            reason=f"no private key with the certificate's CKA_ID was found in {location}/{KEY_DB}",
        )

    try:
        public_key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        # certificate_facts reports an invalid key at its public_key step, with the fingerprint.
        return PrivateKey(
            present=False,
            status="unverified",
            location=location,
            reason=f"a private key with the certificate's CKA_ID exists in {location}/{KEY_DB}, but the "
            "certificate's public key is invalid or its algorithm is not supported, so the key could not "
            "be compared with it",
        )

    comparisons = [_compare_key(key, public_key) for key in candidates]
    if any(comparison.outcome == "match" for comparison in comparisons):
        return PrivateKey(present=True, status="present", location=location)

    key_name = f"the private key with the certificate's CKA_ID {row.ckaid.hex()} in {location}/{KEY_DB}"
    not_comparable = [comparison for comparison in comparisons if comparison.outcome == "not_comparable"]
    if not_comparable:
        return PrivateKey(
            present=False,
            status="unverified",
            location=location,
            reason=f"{key_name} could not be compared with the certificate's public key because "
            f"{not_comparable[0].detail}. An unverified key does not count as present.",
        )
    return PrivateKey(
        present=False,
        status="missing",
        reason=f"{key_name} belongs to a different public key, because {comparisons[0].detail}",
    )


def _compare_key(key: _PrivateKeyRow, public_key: CertificatePublicKeyTypes) -> _KeyComparison:
    """Compare the public attributes of a private-key object with the certificate's public key."""
    if key.key_type == CKK_RSA:
        if not isinstance(public_key, rsa.RSAPublicKey):
            return _KeyComparison("mismatch", "it is an RSA key, and the certificate's public key is not RSA")
        # NSS softoken sets CKA_NSS_DB of an RSA private key to its modulus (checked with NSS 3.87).
        modulus = key.modulus if key.modulus is not None else key.public_value
        if modulus is None:
            return _compare_derived_id(key, _rsa_modulus(public_key))
        if int.from_bytes(modulus, "big") == public_key.public_numbers().n:
            return _KeyComparison("match")
        return _KeyComparison("mismatch", "its modulus differs from the certificate's")

    if key.key_type == CKK_EC:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            return _KeyComparison("mismatch", "it is an EC key, and the certificate's public key is not EC")
        point = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        if key.public_value is None:
            return _compare_derived_id(key, point)
        if key.public_value in _ec_point_encodings(public_key):
            return _KeyComparison("match")
        return _KeyComparison("mismatch", "its EC public point (CKA_NSS_DB) differs from the certificate's")

    key_type = "missing" if key.key_type is None else f"0x{key.key_type:x}"
    return _KeyComparison("not_comparable", f"its CKA_KEY_TYPE {key_type} is neither RSA nor EC")


def _compare_derived_id(key: _PrivateKeyRow, public_value: bytes) -> _KeyComparison:
    # Reached only for a key object without a public value. pk12util and certutil -S of NSS 3.87
    # always store one, so the tests reach this path by editing key4.db.
    if key.ckaid == hashlib.sha1(public_value).digest():
        return _KeyComparison("match")
    return _KeyComparison(
        "mismatch",
        "it stores no public value, and its CKA_ID is not the SHA-1 that NSS derives from the "
        "certificate's public key",
    )


def _rsa_modulus(public_key: rsa.RSAPublicKey) -> bytes:
    modulus = public_key.public_numbers().n
    return modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")


def _ec_point_encodings(public_key: ec.EllipticCurvePublicKey) -> set[bytes]:
    """Return the encodings of the certificate's EC point that a CKA_NSS_DB value may have.

    NSS 3.87 stores the raw uncompressed point. The compressed form and the DER
    OCTET STRING form that CKA_EC_POINT uses name the same point, so they match too.
    """
    raw_points = {
        public_key.public_bytes(serialization.Encoding.X962, point_format)
        for point_format in (
            serialization.PublicFormat.UncompressedPoint,
            serialization.PublicFormat.CompressedPoint,
        )
    }
    return raw_points | {_der_octet_string(point) for point in raw_points}


def _der_octet_string(content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return b"\x04" + bytes([length]) + content
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(length_bytes)]) + length_bytes + content
