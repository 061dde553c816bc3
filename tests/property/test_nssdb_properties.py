"""collect_nssdb on damaged NSS databases: errors, never exceptions, and no key present without evidence.

A template database is built once per module with certutil and pk12util: an
RSA and an EC device certificate, each with its private key, and a CA
certificate without one. Every example copies the template and damages the
copy: bytes of the SQLite files, the schema, or the values of the attribute
columns that nssdb.py reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.nssdb import (
    CERT_DB,
    CKO_CERTIFICATE,
    CKO_PRIVATE_KEY,
    COLUMN_CLASS,
    COLUMN_ID,
    COLUMN_KEY_TYPE,
    COLUMN_LABEL,
    COLUMN_MODULUS,
    COLUMN_NSS_DB,
    COLUMN_VALUE,
    KEY_DB,
    collect_nssdb,
)
from tests.certgen import CertKey, create_nssdb, make_leaf
from tests.property import property_settings
from tests.property.checks import assert_well_formed, assume_no_key_header, fingerprint_counts
from tests.property.mutations import damaged_der, mutated_bytes

# Damaged DER often has a negative or zero serial number. cryptography loads such a certificate
# with a deprecation warning, which the CLI sends to the log and which here would fill the report.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive:cryptography.utils.CryptographyDeprecationWarning"
)

RSA_LABEL = "rsa-device"
EC_LABEL = "ec-device"
CA_LABEL = "Example Device CA"

TABLES = {CERT_DB: "nssPublic", KEY_DB: "nssPrivate"}
# The columns that nssdb.py reads from each table.
READ_COLUMNS = {
    CERT_DB: ("id", COLUMN_CLASS, COLUMN_LABEL, COLUMN_VALUE, COLUMN_ID),
    KEY_DB: (COLUMN_CLASS, COLUMN_ID, COLUMN_KEY_TYPE, COLUMN_MODULUS, COLUMN_NSS_DB),
}
_EMPTY_VALUE = b"\xa5\x00\x5a"


@dataclass(frozen=True)
class NssTemplate:
    directory: Path
    certificates: dict[str, CertKey]
    signers: list[Signer]

    @contextlib.contextmanager
    def copy(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory() as scratch:
            directory = Path(scratch) / "nssdb"
            shutil.copytree(self.directory, directory)
            yield directory


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, ca: CertKey, signers: list[Signer]) -> NssTemplate:
    certificates = {
        RSA_LABEL: make_leaf(ca, RSA_LABEL, key_type="rsa"),
        EC_LABEL: make_leaf(ca, EC_LABEL, key_type="ec"),
        CA_LABEL: ca,
    }
    db = create_nssdb(tmp_path_factory.mktemp("template") / "nssdb")
    db.import_key_pair(certificates[RSA_LABEL], RSA_LABEL)
    db.import_key_pair(certificates[EC_LABEL], EC_LABEL)
    db.add_certificate(ca.cert, CA_LABEL)
    template = NssTemplate(db.directory, certificates, signers)

    # The template itself must collect cleanly, or the damaged copies prove nothing.
    result = collect_nssdb(str(db.directory), signers)
    assert result.errors == []
    statuses = {cert.source.label: cert.private_key.status for cert in result.certificates}
    assert statuses == {RSA_LABEL: "present", EC_LABEL: "present", CA_LABEL: "missing"}
    return template


def collect(template: NssTemplate, directory: Path) -> SourceResult:
    result = collect_nssdb(str(directory), template.signers)
    assert_well_formed(result, "nssdb")
    return result


def assert_all_certificates_collected(result: SourceResult, template: NssTemplate) -> None:
    counts = fingerprint_counts(result)
    for label, cert_key in template.certificates.items():
        assert counts[cert_key.fingerprint] == 1, f"{label} collected {counts[cert_key.fingerprint]} times"


# Evidence of a private key, checked independently of nssdb.py


def _public_values(cert_key: CertKey) -> set[bytes]:
    """Encodings of the certificate's public key that key4.db may store as evidence of its private key."""
    public_key = cert_key.cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        modulus = public_key.public_numbers().n
        return {modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")}
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return {
        public_key.public_bytes(serialization.Encoding.X962, point_format)
        for point_format in (
            serialization.PublicFormat.UncompressedPoint,
            serialization.PublicFormat.CompressedPoint,
        )
    }


def _stores_public_value(value: object, public_values: set[bytes]) -> bool:
    if not isinstance(value, bytes):
        return False
    stripped = value.lstrip(b"\x00")
    # A DER OCTET STRING around an EC point counts too, so look for the point inside the value.
    return any(stripped == public_value or public_value in value for public_value in public_values)


def _rows(path: Path, query: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run a query on a damaged database, returning no rows when it cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            # Text that is not UTF-8 in one row must not hide the other rows, so text stays bytes.
            connection.text_factory = bytes
            return connection.execute(query, parameters).fetchall()
    except (sqlite3.Error, UnicodeDecodeError):
        # sqlite3 raises UnicodeDecodeError for an error message of SQLite that is not UTF-8,
        # such as one quoting a damaged schema.
        return []


def has_key_evidence(directory: Path, cert_key: CertKey) -> bool:
    """Tell whether key4.db contains a private-key object with the certificate's CKA_ID and its public key.

    The CKA_IDs come from the certificate's rows in the damaged cert9.db. A key
    counts when its modulus or CKA_NSS_DB stores the certificate's public key,
    or when its CKA_ID is the SHA-1 of that public key, as nssdb.py accepts
    for keys that store neither value. This is a necessary condition for
    ``present``, looser than the one nssdb.py applies.
    """
    certificate_class = CKO_CERTIFICATE.to_bytes(4, "big")
    ckaids = {
        ckaid
        for (ckaid,) in _rows(
            directory / CERT_DB,
            f"SELECT {COLUMN_ID} FROM nssPublic WHERE {COLUMN_CLASS} = ? AND {COLUMN_VALUE} = ?",
            (certificate_class, cert_key.cert_der()),
        )
        if isinstance(ckaid, bytes)
    }
    public_values = _public_values(cert_key)
    derived_ids = {hashlib.sha1(value).digest() for value in public_values}
    key_rows = _rows(
        directory / KEY_DB,
        f"SELECT {COLUMN_ID}, {COLUMN_MODULUS}, {COLUMN_NSS_DB} FROM nssPrivate WHERE {COLUMN_CLASS} = ?",
        (CKO_PRIVATE_KEY.to_bytes(4, "big"),),
    )
    for ckaid, modulus, public_value in key_rows:
        if ckaid not in ckaids:
            continue
        if _stores_public_value(modulus, public_values) or _stores_public_value(public_value, public_values):
            return True
        if ckaid in derived_ids:
            return True
    return False


def assert_keys_have_evidence(result: SourceResult, template: NssTemplate, directory: Path) -> None:
    for label, cert_key in template.certificates.items():
        for cert in result.certificates:
            if cert.fingerprint_sha256 == cert_key.fingerprint and cert.private_key.status == "present":
                assert has_key_evidence(directory, cert_key), (
                    f"{label} has its private key present, but key4.db contains no key with its CKA_ID "
                    "and public key"
                )


# Damaged files


@given(data=st.data(), damaged_files=st.sampled_from([(CERT_DB,), (KEY_DB,), (CERT_DB, KEY_DB)]))
@property_settings(max_examples=120)
def test_nssdb_damaged_files(
    template: NssTemplate, data: st.DataObject, damaged_files: tuple[str, ...]
) -> None:
    with template.copy() as directory:
        for name in damaged_files:
            path = directory / name
            damaged = data.draw(mutated_bytes(path.read_bytes()), label=name)
            assume_no_key_header(damaged)
            path.write_bytes(damaged)
        result = collect(template, directory)
        assert_keys_have_evidence(result, template, directory)
    if damaged_files == (KEY_DB,):
        # A damaged key database changes key statuses, but never hides a certificate.
        assert_all_certificates_collected(result, template)


# Damaged schema and side files

SCHEMA_DAMAGE = (
    "drop table",
    "rename table",
    "drop column",
    "empty file",
    "remove file",
    "directory",
    "garbage journal",
    "garbage wal",
)


def _drop_column(connection: sqlite3.Connection, table: str, column: str) -> None:
    # ALTER TABLE DROP COLUMN fails on indexed columns, so the table is rebuilt without the column.
    columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
    remaining_columns = ", ".join(name for name in columns if name != column)
    connection.execute(f"CREATE TABLE damaged AS SELECT {remaining_columns} FROM {table}")
    connection.execute(f"DROP TABLE {table}")
    connection.execute(f"ALTER TABLE damaged RENAME TO {table}")


def _damage_schema_text(connection: sqlite3.Connection, table: str, garbage: bytes, position: int) -> None:
    """Insert ``garbage`` into the table's CREATE statement in sqlite_master, as a damaged file could."""
    (sql,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    encoded = sql.encode()
    position %= len(encoded) + 1
    # SQLite reads SQL text up to its first NUL, so a NUL would only cut the statement short.
    damaged = encoded[:position] + garbage.replace(b"\x00", b"") + encoded[position:]
    connection.execute("PRAGMA writable_schema = ON")
    connection.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = ?", (damaged, table))


def damage_schema(path: Path, damage: str, column: str, garbage: bytes) -> None:
    table = TABLES[path.name]
    if damage in {"drop table", "rename table", "drop column"}:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            if damage == "drop table":
                connection.execute(f"DROP TABLE {table}")
            elif damage == "rename table":
                connection.execute(f"ALTER TABLE {table} RENAME TO renamed")
            else:
                _drop_column(connection, table, column)
            connection.commit()
    elif damage == "empty file":
        path.write_bytes(b"")
    elif damage == "remove file":
        path.unlink()
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "garbage journal":
        path.with_name(path.name + "-journal").write_bytes(garbage)
    else:
        path.with_name(path.name + "-wal").write_bytes(garbage)


@given(
    data=st.data(),
    name=st.sampled_from([CERT_DB, KEY_DB]),
    damage=st.sampled_from(SCHEMA_DAMAGE),
    garbage=st.binary(max_size=1024),
)
@property_settings(max_examples=100)
def test_nssdb_damaged_schema(
    template: NssTemplate, data: st.DataObject, name: str, damage: str, garbage: bytes
) -> None:
    assume_no_key_header(garbage)
    column = data.draw(st.sampled_from(READ_COLUMNS[name]), label="column")
    with template.copy() as directory:
        damage_schema(directory / name, damage, column, garbage)
        result = collect(template, directory)
        assert_keys_have_evidence(result, template, directory)
    if name == CERT_DB and damage in {"drop table", "rename table", "empty file", "remove file", "directory"}:
        assert result.certificates == []
        assert result.errors, "a certificate database without its table must be an error"
    if name == KEY_DB and damage not in {"garbage journal", "garbage wal"}:
        assert_all_certificates_collected(result, template)
        statuses = {cert.private_key.status for cert in result.certificates}
        assert "present" not in statuses, statuses


@given(
    name=st.sampled_from([CERT_DB, KEY_DB]),
    garbage=st.binary(min_size=1, max_size=8),
    position=st.integers(min_value=0),
)
@property_settings(max_examples=120)
def test_nssdb_damaged_schema_text(template: NssTemplate, name: str, garbage: bytes, position: int) -> None:
    assume_no_key_header(garbage)
    with template.copy() as directory:
        with contextlib.closing(sqlite3.connect(directory / name)) as connection:
            _damage_schema_text(connection, TABLES[name], garbage, position)
            connection.commit()
        result = collect(template, directory)
        assert_keys_have_evidence(result, template, directory)
    if name == KEY_DB:
        assert_all_certificates_collected(result, template)


# Wrong column types and values


@dataclass(frozen=True)
class ColumnUpdate:
    """One UPDATE: ``value`` goes into ``column`` of the rows whose label or CKA_ID belongs to ``target``.

    ``sql_value`` is the SQL expression for the value: ``?`` or a
    conversion such as ``CAST(? AS TEXT)`` or ``zeroblob(?)``.
    """

    database: str
    column: str
    target: str
    sql_value: str
    value: object


def column_values(der: bytes) -> st.SearchStrategy[tuple[str, object]]:
    """Values of every SQLite type, including ones NSS never writes, each with its SQL expression.

    ``der`` is the certificate that the column belongs to; damaged copies of it reach the certificate parser.
    """
    direct = st.one_of(
        damaged_der(der),
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=40),
        st.binary(max_size=300),
        st.just(_EMPTY_VALUE),
        st.just(b""),
        st.integers(0, 5).map(lambda value: value.to_bytes(4, "big")),
        st.integers(0, 5).map(lambda value: value.to_bytes(8, "big")),
    )
    return st.one_of(
        direct.map(lambda value: ("?", value)),
        # Text that is not UTF-8, which sqlite3 cannot decode when reading.
        st.binary(min_size=1, max_size=40).map(lambda value: ("CAST(? AS TEXT)", value)),
        # A blob far larger than any attribute: 2 MiB.
        st.just(("zeroblob(?)", 2 * 1024 * 1024)),
    )


@st.composite
def column_updates(draw: st.DrawFn, template_der: Mapping[str, bytes]) -> ColumnUpdate:
    database = draw(st.sampled_from([CERT_DB, KEY_DB]))
    column = draw(st.sampled_from(READ_COLUMNS[database]))
    targets = [RSA_LABEL, EC_LABEL] + ([CA_LABEL] if database == CERT_DB else [])
    target = draw(st.sampled_from(targets))
    sql_value, value = draw(column_values(template_der[target]))
    return ColumnUpdate(database, column, target, sql_value, value)


def apply_update(directory: Path, template: NssTemplate, update: ColumnUpdate) -> None:
    """Apply the update to the rows of its target; an update that breaks a constraint is left out."""
    # The rows are picked by the certificate's DER (cert9.db) or by the CKA_ID that cert9.db
    # gives the certificate in the template (key4.db), because earlier updates may change labels.
    if update.database == CERT_DB:
        where = f"{COLUMN_VALUE} = ?"
        key: object = template.certificates[update.target].cert_der()
    else:
        where = f"{COLUMN_ID} = ?"
        key = _template_ckaid(template, update.target)
    statement = f"UPDATE {TABLES[update.database]} SET {update.column} = {update.sql_value} WHERE {where}"
    with contextlib.closing(sqlite3.connect(directory / update.database)) as connection:
        try:
            connection.execute(statement, (update.value, key))
            connection.commit()
        except sqlite3.IntegrityError:
            # Two rows with one id break the table's PRIMARY KEY, which NSS would not write either.
            connection.rollback()


def _template_ckaid(template: NssTemplate, label: str) -> bytes:
    rows = _rows(
        template.directory / CERT_DB,
        f"SELECT {COLUMN_ID} FROM nssPublic WHERE {COLUMN_LABEL} = ?",
        (label.encode(),),
    )
    (ckaid,) = rows[0]
    assert isinstance(ckaid, bytes)
    return ckaid


@given(data=st.data())
@property_settings(max_examples=150)
def test_nssdb_wrong_column_values(template: NssTemplate, data: st.DataObject) -> None:
    ders = {label: cert_key.cert_der() for label, cert_key in template.certificates.items()}
    updates = data.draw(st.lists(column_updates(ders), min_size=1, max_size=4), label="updates")
    assume_no_key_header(*(update.value for update in updates if isinstance(update.value, str | bytes)))
    with template.copy() as directory:
        for update in updates:
            apply_update(directory, template, update)
        result = collect(template, directory)
        assert_keys_have_evidence(result, template, directory)

    # Certificates whose cert9.db row no update touched are still collected, whatever key4.db contains.
    touched = {update.target for update in updates if update.database == CERT_DB}
    counts = fingerprint_counts(result)
    for label, cert_key in template.certificates.items():
        if label not in touched:
            assert counts[cert_key.fingerprint] == 1, (
                f"{label} was not damaged but is missing: {result.errors}"
            )


@given(
    modulus=st.one_of(st.none(), st.text(max_size=8), st.binary(max_size=300)),
    public_value=st.one_of(st.none(), st.text(max_size=8), st.binary(max_size=300)),
)
@property_settings(max_examples=100)
def test_nssdb_forged_rsa_public_values(template: NssTemplate, modulus: object, public_value: object) -> None:
    rsa_device = template.certificates[RSA_LABEL]
    public_values = _public_values(rsa_device)
    with template.copy() as directory:
        for column, value in ((COLUMN_MODULUS, modulus), (COLUMN_NSS_DB, public_value)):
            update = ColumnUpdate(KEY_DB, column, RSA_LABEL, "?", value)
            apply_update(directory, template, update)
        result = collect(template, directory)
    (cert,) = [cert for cert in result.certificates if cert.source.label == RSA_LABEL]
    forged = [
        value
        for value in (modulus, public_value)
        if isinstance(value, bytes)
        and value != _EMPTY_VALUE
        and not _stores_public_value(value, public_values)
    ]
    if forged:
        # Without the real modulus, only a CKA_ID derived from it could count, and a forged value rules that out.
        assert cert.private_key.status != "present", cert.private_key
