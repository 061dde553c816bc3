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
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sqlite3
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from collector.facts import CertificateSource, CollectionError, PrivateKey
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import CertificateError, certificate_facts, load_certificate

logger = logging.getLogger(__name__)

SOURCE = "nssdb"
DEFAULT_NSSDB = "/etc/pki/nssdb"

CERT_DB = "cert9.db"
KEY_DB = "key4.db"
LEGACY_CERT_DB = "cert8.db"

CKO_CERTIFICATE = 1
CKO_PRIVATE_KEY = 3
# Columns of the attributes read here: "a" + PKCS#11 attribute type in lowercase hex.
COLUMN_CLASS = "a0"  # CKA_CLASS = 0x0
COLUMN_LABEL = "a3"  # CKA_LABEL = 0x3
COLUMN_VALUE = "a11"  # CKA_VALUE = 0x11
COLUMN_ID = "a102"  # CKA_ID = 0x102

_EMPTY_VALUE = b"\xa5\x00\x5a"

# Seconds to wait while an NSS process holds a write lock on the database.
_BUSY_TIMEOUT = 5.0


@dataclass(frozen=True)
class _CertificateRow:
    row_id: int
    label: str | None
    value: bytes | None
    ckaid: bytes | None


def _ulong(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _blob(value: object) -> bytes | None:
    if not isinstance(value, bytes) or value == _EMPTY_VALUE:
        return None
    return value


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
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT)


def collect_nssdb(directory: str, signers: Sequence[Signer]) -> SourceResult:
    """Collect the certificates of one NSS database and whether each has its private key."""
    result = SourceResult()
    try:
        location = database_directory(directory)
    except ValueError as exc:
        result.errors.append(_error(directory, "open", str(exc)))
        return result

    rows = _read_certificate_rows(location, result.errors)
    if rows is None:
        return result
    key_lookup = _read_private_key_ids(location, result.errors)

    for row in rows:
        where = f"certificate {row.label or '(no nickname)'} (row {row.row_id}) in {location}/{CERT_DB}"
        if row.value is None:
            result.errors.append(_error(location, "load", f"{where} has no DER value"))
            continue
        if isinstance(key_lookup, PrivateKey):
            private_key = key_lookup
        else:
            private_key = _private_key(row, location, key_lookup)
        source = CertificateSource(type="nssdb", location=location, label=row.label)
        try:
            cert = load_certificate(row.value, "der")
            result.certificates.append(certificate_facts(cert, source, private_key, signers))
        except CertificateError as exc:
            result.errors.append(_error(location, exc.step, f"{where}: {exc.message}"))
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
    except sqlite3.Error as exc:
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


def _read_private_key_ids(location: str, errors: list[CollectionError]) -> set[bytes] | PrivateKey:
    """Return the CKA_IDs of the private keys in key4.db.

    When key4.db is missing or unreadable, returns instead the private-key
    facts that every certificate of the database gets.
    """
    key_db = os.path.join(location, KEY_DB)
    if not os.path.exists(key_db):
        return PrivateKey(present=False, status="missing", reason=f"the key database {key_db} was not found")

    query = f"SELECT {COLUMN_ID} FROM nssPrivate WHERE {COLUMN_CLASS} = ?"
    try:
        with contextlib.closing(_connect_read_only(key_db)) as connection:
            records = connection.execute(query, (_ulong(CKO_PRIVATE_KEY),)).fetchall()
    except sqlite3.Error as exc:
        errors.append(_error(location, "database", f"cannot read NSS key database {key_db}: {exc}"))
        return PrivateKey(
            present=False,
            status="unverified",
            location=location,
            reason=f"the key database {key_db} could not be read, so the private key could not be looked up",
        )
    return {ckaid for (value,) in records if (ckaid := _blob(value)) is not None}


def _private_key(row: _CertificateRow, location: str, key_ids: set[bytes]) -> PrivateKey:
    if row.ckaid is not None and row.ckaid in key_ids:
        return PrivateKey(present=True, status="present", location=location)
    if row.ckaid is None:
        reason = (
            f"the certificate has no CKA_ID in {location}/{CERT_DB}, so no private key can be matched to it"
        )
        return PrivateKey(present=False, status="missing", reason=reason)
    return PrivateKey(
        present=False,
        status="missing",
        reason=f"no private key with the certificate's CKA_ID was found in {location}/{KEY_DB}",
    )
