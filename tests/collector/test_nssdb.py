from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from collector.facts import Certificate
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.nssdb import DEFAULT_NSSDB, collect_nssdb, database_directory
from tests.certgen import CertKey, KeyType, NssDb, create_nssdb, make_ca, make_leaf


def by_label(result: SourceResult, label: str) -> Certificate:
    matches = [cert for cert in result.certificates if cert.source.label == label]
    assert len(matches) == 1, f"expected one certificate labelled {label!r}: {result}"
    return matches[0]


@pytest.fixture(scope="module")
def device(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-1", key_type="rsa")


@pytest.fixture
def nssdb(tmp_path: Path, ca: CertKey, device: CertKey) -> NssDb:
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(device, "corp-device")
    db.add_certificate(ca.cert, "Example Device CA")
    return db


def test_default_location() -> None:
    assert DEFAULT_NSSDB == "/etc/pki/nssdb"


def test_nssdb_cert_with_key(nssdb: NssDb, ca: CertKey, device: CertKey) -> None:
    result = collect_nssdb(str(nssdb.directory), [Signer("device-ca", ca.cert)])
    cert = by_label(result, "corp-device")
    assert cert.fingerprint_sha256 == device.fingerprint
    assert cert.source.type == "nssdb"
    assert cert.source.location == str(nssdb.directory)
    assert cert.private_key.present is True
    assert cert.private_key.status == "present"
    assert cert.private_key.location == str(nssdb.directory)
    assert cert.signed_by == ["device-ca"]
    assert result.errors == []


def test_nssdb_ca_without_key(nssdb: NssDb, ca: CertKey) -> None:
    cert = by_label(collect_nssdb(str(nssdb.directory), []), "Example Device CA")
    assert cert.fingerprint_sha256 == ca.fingerprint
    assert cert.is_ca is True
    assert cert.private_key.present is False
    assert cert.private_key.status == "missing"
    assert cert.private_key.reason is not None
    assert "CKA_ID" in cert.private_key.reason


def test_nssdb_sql_prefix(nssdb: NssDb) -> None:
    result = collect_nssdb(f"sql:{nssdb.directory}", [])
    assert {cert.source.location for cert in result.certificates} == {str(nssdb.directory)}
    assert len(result.certificates) == 2


def test_nssdb_ec_key(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-ec", key_type="ec")
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(leaf, "ec-device")
    cert = by_label(collect_nssdb(str(db.directory), []), "ec-device")
    assert cert.private_key.present is True
    assert cert.public_key.algorithm == "ec"


def test_nssdb_password_protected(tmp_path: Path, ca: CertKey, device: CertKey) -> None:
    db = create_nssdb(tmp_path / "nssdb", password="db-secret")
    db.import_key_pair(device, "corp-device")
    db.add_certificate(ca.cert, "Example Device CA")
    result = collect_nssdb(str(db.directory), [])
    assert by_label(result, "corp-device").private_key.present is True
    assert by_label(result, "Example Device CA").private_key.present is False
    assert result.errors == []


def test_nssdb_key_of_other_cert(tmp_path: Path, ca: CertKey, device: CertKey) -> None:
    # Both certificates have the same subject and issuer, so only CKA_ID links a key to the right one.
    other = make_leaf(ca, "device-1", key_type="rsa")
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(other, "other-device")
    db.add_certificate(device.cert, "corp-device", trust=",,")
    result = collect_nssdb(str(db.directory), [])
    assert by_label(result, "other-device").private_key.present is True
    assert by_label(result, "corp-device").private_key.present is False


def test_nssdb_reads_without_writing(nssdb: NssDb) -> None:
    files = sorted(nssdb.directory.iterdir())

    def snapshot() -> dict[str, tuple[str, int]]:
        return {
            path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in nssdb.directory.iterdir()
        }

    before = snapshot()
    collect_nssdb(str(nssdb.directory), [])
    assert snapshot() == before
    assert sorted(nssdb.directory.iterdir()) == files


def test_nssdb_schema_as_read(nssdb: NssDb, device: CertKey) -> None:
    # Pins the storage facts the reader relies on, against a database written by certutil.
    with contextlib.closing(sqlite3.connect(nssdb.directory / "cert9.db")) as connection:
        rows = connection.execute(
            "SELECT a0, a3, a11, a102 FROM nssPublic WHERE a3 = ?", (b"corp-device",)
        ).fetchall()
    assert rows == [(b"\x00\x00\x00\x01", b"corp-device", device.cert_der(), rows[0][3])]
    with contextlib.closing(sqlite3.connect(nssdb.directory / "key4.db")) as connection:
        key_ids = connection.execute(
            "SELECT a102 FROM nssPrivate WHERE a0 = ?", (b"\x00\x00\x00\x03",)
        ).fetchall()
    assert key_ids == [(rows[0][3],)]


def test_nssdb_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = collect_nssdb(str(missing), [])
    assert result.certificates == []
    assert [(error.source, error.step, error.location) for error in result.errors] == [
        ("nssdb", "open", str(missing))
    ]
    assert "not found" in result.errors[0].message


def test_nssdb_missing_cert9(tmp_path: Path) -> None:
    result = collect_nssdb(str(tmp_path), [])
    assert [(error.step, error.location) for error in result.errors] == [("open", str(tmp_path))]
    assert "cert9.db" in result.errors[0].message


def test_nssdb_missing_key4(nssdb: NssDb) -> None:
    (nssdb.directory / "key4.db").unlink()
    result = collect_nssdb(str(nssdb.directory), [])
    cert = by_label(result, "corp-device")
    assert cert.private_key.present is False
    assert cert.private_key.status == "missing"
    assert cert.private_key.reason is not None
    assert "key4.db" in cert.private_key.reason
    assert len(result.certificates) == 2


def test_nssdb_corrupt_cert9(nssdb: NssDb) -> None:
    (nssdb.directory / "cert9.db").write_bytes(b"this is not an SQLite database" * 100)
    result = collect_nssdb(str(nssdb.directory), [])
    assert result.certificates == []
    assert [(error.step, error.location) for error in result.errors] == [("database", str(nssdb.directory))]
    assert "cert9.db" in result.errors[0].message


def test_nssdb_corrupt_key4(nssdb: NssDb) -> None:
    (nssdb.directory / "key4.db").write_bytes(b"\x00" * 4096)
    result = collect_nssdb(str(nssdb.directory), [])
    cert = by_label(result, "corp-device")
    assert cert.private_key.present is False
    assert cert.private_key.status == "unverified"
    assert [(error.step, error.location) for error in result.errors] == [("database", str(nssdb.directory))]
    assert "key4.db" in result.errors[0].message


def test_nssdb_bad_certificate_blob(nssdb: NssDb, ca: CertKey) -> None:
    with contextlib.closing(sqlite3.connect(nssdb.directory / "cert9.db")) as connection:
        connection.execute(
            "UPDATE nssPublic SET a11 = ? WHERE a3 = ?", (b"\x30\x03\x02\x01\x05", b"corp-device")
        )
        connection.commit()
    result = collect_nssdb(str(nssdb.directory), [])
    assert [cert.fingerprint_sha256 for cert in result.certificates] == [ca.fingerprint]
    assert [(error.step, error.location) for error in result.errors] == [("load", str(nssdb.directory))]
    assert "corp-device" in result.errors[0].message


def test_nssdb_not_nss_sqlite(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "cert9.db")) as connection:
        connection.execute("CREATE TABLE other (x)")
    result = collect_nssdb(str(tmp_path), [])
    assert [(error.step, error.location) for error in result.errors] == [("database", str(tmp_path))]


def test_nssdb_fake_legacy_only(tmp_path: Path) -> None:
    # The check looks at the file name only, so an empty cert8.db is enough to represent a legacy database.
    (tmp_path / "cert8.db").write_bytes(b"")
    (tmp_path / "key3.db").write_bytes(b"")
    result = collect_nssdb(str(tmp_path), [])
    assert result.certificates == []
    assert len(result.errors) == 1
    assert result.errors[0].step == "database"
    assert "legacy DBM format" in result.errors[0].message
    assert f"certutil --merge -d sql:{tmp_path} --source-dir dbm:{tmp_path}" in result.errors[0].message


def test_nssdb_legacy_fix_works(tmp_path: Path, device: CertKey) -> None:
    try:
        db = create_nssdb(tmp_path / "legacy", legacy=True)
    except RuntimeError as exc:
        pytest.skip(f"this NSS build cannot create DBM databases: {exc}")
    db.import_key_pair(device, "corp-device")
    assert not (db.directory / "cert9.db").exists()

    result = collect_nssdb(str(db.directory), [])
    assert result.certificates == []
    fix = re.search(r"`(certutil [^`]+)`", result.errors[0].message)
    assert fix is not None, result.errors[0].message
    subprocess.run(
        shlex.split(fix.group(1)), stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60
    )

    upgraded = collect_nssdb(str(db.directory), [])
    assert upgraded.errors == []
    assert by_label(upgraded, "corp-device").private_key.present is True


def test_nssdb_dbm_prefix_rejected(tmp_path: Path) -> None:
    result = collect_nssdb(f"dbm:{tmp_path}", [])
    assert [error.step for error in result.errors] == ["open"]
    assert "legacy DBM format" in result.errors[0].message
    assert f"certutil --merge -d sql:{tmp_path} --source-dir dbm:{tmp_path}" in result.errors[0].message


def test_database_directory_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_directory("sql:/etc/pki/nssdb") == "/etc/pki/nssdb"
    assert database_directory("/etc/pki/nssdb/") == "/etc/pki/nssdb"
    assert database_directory("sql:nssdb") == str(tmp_path / "nssdb")
    with pytest.raises(ValueError, match="dbm"):
        database_directory("dbm:/etc/pki/nssdb")


def test_nssdb_two_databases_independent(tmp_path: Path, device: CertKey) -> None:
    ca2 = make_ca("Second CA")
    first = create_nssdb(tmp_path / "first")
    first.import_key_pair(device, "corp-device")
    second = create_nssdb(tmp_path / "second")
    second.add_certificate(device.cert, "corp-device", trust=",,")
    second.add_certificate(ca2.cert, "Second CA")
    assert by_label(collect_nssdb(str(first.directory), []), "corp-device").private_key.present is True
    assert by_label(collect_nssdb(str(second.directory), []), "corp-device").private_key.present is False


def test_nssdb_empty_value_marker(nssdb: NssDb) -> None:
    # certutil stores the empty CKA_LABEL of a public-key object as a5 00 5a, not as an empty blob.
    cert9 = nssdb.directory / "cert9.db"
    with contextlib.closing(sqlite3.connect(cert9)) as connection:
        labels = connection.execute(
            "SELECT a3 FROM nssPublic WHERE a0 = ?", (b"\x00\x00\x00\x02",)
        ).fetchall()
        assert labels == [(b"\xa5\x00\x5a",)]
        connection.execute("UPDATE nssPublic SET a3 = ? WHERE a3 = ?", (b"\xa5\x00\x5a", b"corp-device"))
        connection.commit()
    result = collect_nssdb(str(nssdb.directory), [])
    assert sorted(str(cert.source.label) for cert in result.certificates) == ["Example Device CA", "None"]
    assert result.errors == []


# Tests of private-key pairing. A key object with the certificate's CKA_ID counts only when its public
# key is the certificate's.

CKO_PRIVATE_KEY = b"\x00\x00\x00\x03"
MODULUS_DIFFERS = "its modulus differs from the certificate's"
POINT_DIFFERS = "its EC public point (CKA_NSS_DB) differs from the certificate's"


def rsa_modulus(cert_key: CertKey) -> bytes:
    public_key = cert_key.cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    modulus = public_key.public_numbers().n
    return modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")


def ec_point(cert_key: CertKey, point_format: serialization.PublicFormat) -> bytes:
    public_key = cert_key.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return public_key.public_bytes(serialization.Encoding.X962, point_format)


def certificate_ckaid(directory: Path, label: str) -> bytes:
    with contextlib.closing(sqlite3.connect(directory / "cert9.db")) as connection:
        (ckaid,) = connection.execute("SELECT a102 FROM nssPublic WHERE a3 = ?", (label.encode(),)).fetchone()
    assert isinstance(ckaid, bytes)
    return ckaid


def copy_ckaid(directory: Path, source_label: str, target_label: str) -> None:
    """Give the certificate ``target_label`` the CKA_ID of ``source_label`` by editing cert9.db with sqlite3."""
    ckaid = certificate_ckaid(directory, source_label)
    with contextlib.closing(sqlite3.connect(directory / "cert9.db")) as connection:
        connection.execute("UPDATE nssPublic SET a102 = ? WHERE a3 = ?", (ckaid, target_label.encode()))
        connection.commit()
    assert certificate_ckaid(directory, target_label) == ckaid


def update_private_keys(directory: Path, assignment: str, parameters: tuple[object, ...] = ()) -> None:
    with contextlib.closing(sqlite3.connect(directory / "key4.db")) as connection:
        changed = connection.execute(
            f"UPDATE nssPrivate SET {assignment} WHERE a0 = ?", (*parameters, CKO_PRIVATE_KEY)
        ).rowcount
        connection.commit()
    assert changed == 1


@pytest.fixture
def attack_setup(tmp_path: Path, ca: CertKey, request: pytest.FixtureRequest) -> tuple[NssDb, CertKey]:
    """A database with a key pair ``corp-device`` and a key-less certificate ``foreign``.

    ``request.param`` is (key type of corp-device, key type of foreign, database password).
    """
    device_key_type, foreign_key_type, password = request.param
    device = make_leaf(ca, "device-1", key_type=device_key_type)
    foreign = make_leaf(ca, "device-1", key_type=foreign_key_type)
    db = create_nssdb(tmp_path / "nssdb", password=password)
    db.import_key_pair(device, "corp-device")
    db.add_certificate(foreign.cert, "foreign", trust=",,")
    return db, foreign


@pytest.mark.parametrize(
    ("attack_setup", "detail"),
    [
        pytest.param(("rsa", "rsa", None), MODULUS_DIFFERS, id="rsa"),
        pytest.param(("rsa", "rsa", "db-secret"), MODULUS_DIFFERS, id="rsa-password"),
        pytest.param(("ec", "ec", None), POINT_DIFFERS, id="ec"),
        pytest.param(("ec", "ec", "db-secret"), POINT_DIFFERS, id="ec-password"),
        pytest.param(
            ("rsa", "ec", None),
            "it is an RSA key, and the certificate's public key is not RSA",
            id="rsa-key-ec-cert",
        ),
        pytest.param(
            ("ec", "rsa", None),
            "it is an EC key, and the certificate's public key is not EC",
            id="ec-key-rsa-cert",
        ),
    ],
    indirect=["attack_setup"],
)
def test_nssdb_copied_ckaid_not_present(
    tmp_path: Path, attack_setup: tuple[NssDb, CertKey], detail: str
) -> None:
    db, foreign = attack_setup
    before = collect_nssdb(str(db.directory), [])
    assert by_label(before, "foreign").private_key.status == "missing"

    attacked = tmp_path / "attacked"
    shutil.copytree(db.directory, attacked)
    copy_ckaid(attacked, "corp-device", "foreign")
    result = collect_nssdb(str(attacked), [])

    cert = by_label(result, "foreign")
    assert cert.fingerprint_sha256 == foreign.fingerprint
    assert cert.private_key.present is False
    assert cert.private_key.status == "missing"
    assert cert.private_key.reason is not None
    assert "belongs to a different public key" in cert.private_key.reason
    assert detail in cert.private_key.reason
    assert certificate_ckaid(attacked, "corp-device").hex() in cert.private_key.reason
    assert by_label(result, "corp-device").private_key.status == "present"
    assert result.errors == []


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
@pytest.mark.parametrize("password", [None, "db-secret"])
def test_nssdb_imported_key_present(
    tmp_path: Path, ca: CertKey, key_type: KeyType, password: str | None
) -> None:
    leaf = make_leaf(ca, "device-1", key_type=key_type)
    db = create_nssdb(tmp_path / "nssdb", password=password)
    db.import_key_pair(leaf, "corp-device")
    result = collect_nssdb(str(db.directory), [])
    cert = by_label(result, "corp-device")
    assert cert.public_key.algorithm == key_type
    assert cert.private_key.present is True
    assert cert.private_key.status == "present"
    assert cert.private_key.location == str(db.directory)
    assert result.errors == []


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
@pytest.mark.parametrize("password", [None, "db-secret"])
def test_nssdb_generated_key_present(
    tmp_path: Path, key_type: Literal["rsa", "ec"], password: str | None
) -> None:
    db = create_nssdb(tmp_path / "nssdb", password=password)
    db.generate_self_signed("self-signed", key_type)
    result = collect_nssdb(str(db.directory), [])
    cert = by_label(result, "self-signed")
    assert cert.public_key.algorithm == key_type
    assert cert.private_key.present is True
    assert cert.private_key.status == "present"
    assert result.errors == []


@pytest.mark.parametrize("password", [None, "db-secret"])
def test_nssdb_rsa_key_attributes_as_read(tmp_path: Path, ca: CertKey, password: str | None) -> None:
    # Pins the public attributes of an RSA private key that the pairing relies on, as pk12util writes them.
    leaf = make_leaf(ca, "device-1", key_type="rsa")
    db = create_nssdb(tmp_path / "nssdb", password=password)
    db.import_key_pair(leaf, "corp-device")
    with contextlib.closing(sqlite3.connect(db.directory / "key4.db")) as connection:
        rows = connection.execute(
            "SELECT a100, a102, a120, ad5a0db00 FROM nssPrivate WHERE a0 = ?", (CKO_PRIVATE_KEY,)
        ).fetchall()
    modulus = rsa_modulus(leaf)
    assert rows == [(b"\x00\x00\x00\x00", hashlib.sha1(modulus).digest(), modulus, modulus)]
    assert certificate_ckaid(db.directory, "corp-device") == hashlib.sha1(modulus).digest()


@pytest.mark.parametrize("password", [None, "db-secret"])
def test_nssdb_ec_key_attributes_as_read(tmp_path: Path, ca: CertKey, password: str | None) -> None:
    # Pins the public attributes of an EC private key that the pairing relies on, as pk12util writes them.
    leaf = make_leaf(ca, "device-1", key_type="ec")
    db = create_nssdb(tmp_path / "nssdb", password=password)
    db.import_key_pair(leaf, "corp-device")
    with contextlib.closing(sqlite3.connect(db.directory / "key4.db")) as connection:
        rows = connection.execute(
            "SELECT a100, a102, a120, a180, a181, ad5a0db00 FROM nssPrivate WHERE a0 = ?", (CKO_PRIVATE_KEY,)
        ).fetchall()
    point = ec_point(leaf, serialization.PublicFormat.UncompressedPoint)
    p256_oid = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
    assert rows == [(b"\x00\x00\x00\x03", hashlib.sha1(point).digest(), None, p256_oid, None, point)]
    assert certificate_ckaid(db.directory, "corp-device") == hashlib.sha1(point).digest()


def test_nssdb_rsa_modulus_from_nss_db(tmp_path: Path, ca: CertKey, device: CertKey) -> None:
    # Without CKA_MODULUS, the RSA modulus is read from CKA_NSS_DB, which NSS sets to the same value.
    other = make_leaf(ca, "device-1", key_type="rsa")
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(device, "corp-device")
    db.add_certificate(other.cert, "foreign", trust=",,")
    update_private_keys(db.directory, "a120 = NULL")
    assert by_label(collect_nssdb(str(db.directory), []), "corp-device").private_key.status == "present"

    copy_ckaid(db.directory, "corp-device", "foreign")
    cert = by_label(collect_nssdb(str(db.directory), []), "foreign")
    assert cert.private_key.status == "missing"
    assert cert.private_key.reason is not None
    assert MODULUS_DIFFERS in cert.private_key.reason


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_nssdb_derived_ckaid_without_public_value(tmp_path: Path, ca: CertKey, key_type: KeyType) -> None:
    # A key object without CKA_MODULUS and CKA_NSS_DB is paired through the CKA_ID NSS derives from the public key.
    device = make_leaf(ca, "device-1", key_type=key_type)
    other = make_leaf(ca, "device-1", key_type=key_type)
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(device, "corp-device")
    db.add_certificate(other.cert, "foreign", trust=",,")
    update_private_keys(db.directory, "a120 = NULL, ad5a0db00 = NULL")
    assert by_label(collect_nssdb(str(db.directory), []), "corp-device").private_key.status == "present"

    copy_ckaid(db.directory, "corp-device", "foreign")
    result = collect_nssdb(str(db.directory), [])
    cert = by_label(result, "foreign")
    assert cert.private_key.present is False
    assert cert.private_key.status == "missing"
    assert cert.private_key.reason is not None
    assert "belongs to a different public key" in cert.private_key.reason
    assert "its CKA_ID is not the SHA-1 that NSS derives" in cert.private_key.reason
    assert by_label(result, "corp-device").private_key.status == "present"


@pytest.mark.parametrize("encoding", ["compressed", "der"])
def test_nssdb_ec_point_other_encodings(tmp_path: Path, ca: CertKey, encoding: str) -> None:
    leaf = make_leaf(ca, "device-1", key_type="ec")
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(leaf, "corp-device")
    if encoding == "compressed":
        stored = ec_point(leaf, serialization.PublicFormat.CompressedPoint)
    else:
        point = ec_point(leaf, serialization.PublicFormat.UncompressedPoint)
        stored = bytes([0x04, len(point)]) + point
    update_private_keys(db.directory, "ad5a0db00 = ?", (stored,))
    cert = by_label(collect_nssdb(str(db.directory), []), "corp-device")
    assert cert.private_key.status == "present"


def test_nssdb_dsa_key_unverified(tmp_path: Path) -> None:
    db = create_nssdb(tmp_path / "nssdb")
    db.generate_self_signed("dsa-device", "dsa")
    result = collect_nssdb(str(db.directory), [])
    cert = by_label(result, "dsa-device")
    assert cert.public_key.algorithm == "dsa"
    assert cert.private_key.present is False
    assert cert.private_key.status == "unverified"
    assert cert.private_key.location == str(db.directory)
    assert cert.private_key.reason is not None
    assert "CKA_KEY_TYPE 0x1 is neither RSA nor EC" in cert.private_key.reason
    assert result.errors == []


def test_nssdb_unsupported_public_key_unverified(nssdb: NssDb, device: CertKey) -> None:
    # Turns rsaEncryption (1.2.840.113549.1.1.1) in the SubjectPublicKeyInfo into 1.2.840.113549.1.1.99,
    # an algorithm cryptography does not support.
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    der = device.cert_der()
    assert der.count(rsa_encryption) == 1
    patched = der.replace(rsa_encryption, bytes.fromhex("06092a864886f70d010163"))
    with contextlib.closing(sqlite3.connect(nssdb.directory / "cert9.db")) as connection:
        connection.execute("UPDATE nssPublic SET a11 = ? WHERE a3 = ?", (patched, b"corp-device"))
        connection.commit()
    cert = by_label(collect_nssdb(str(nssdb.directory), []), "corp-device")
    assert cert.public_key.algorithm == "unknown"
    assert cert.private_key.present is False
    assert cert.private_key.status == "unverified"
    assert cert.private_key.reason is not None
    assert "could not be compared" in cert.private_key.reason


def test_non_utf8_text_row_hides_nothing(nssdb: NssDb, ca: CertKey, device: CertKey) -> None:
    # A TEXT value that is not UTF-8 in one certificate row used to make the whole database unreadable.
    with contextlib.closing(sqlite3.connect(nssdb.directory / "cert9.db")) as connection:
        connection.execute(
            "UPDATE nssPublic SET a3 = CAST(x'80ff' AS TEXT) WHERE a3 = ?", (b"Example Device CA",)
        )
        connection.commit()

    result = collect_nssdb(str(nssdb.directory), [])

    assert by_label(result, "corp-device").fingerprint_sha256 == device.fingerprint
    assert {cert.fingerprint_sha256 for cert in result.certificates} == {device.fingerprint, ca.fingerprint}


def test_non_utf8_schema_is_error(nssdb: NssDb) -> None:
    with contextlib.closing(sqlite3.connect(nssdb.directory / "cert9.db")) as connection:
        connection.execute("PRAGMA writable_schema=ON")
        connection.execute(
            "UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'nssPublic'",
            (b"CREATE \xc5 TABLE nssPublic (id)",),
        )
        connection.commit()

    result = collect_nssdb(str(nssdb.directory), [])

    assert result.certificates == []
    (error,) = result.errors
    assert error.step == "database"
    assert error.message.startswith(f"cannot read NSS certificate database {nssdb.directory}/cert9.db: ")


@pytest.mark.parametrize("name", ["cert9.db", "cert9.db-journal", "key4.db", "key4.db-journal"])
def test_fifo_in_database_folder_not_opened(tmp_path: Path, ca: CertKey, device: CertKey, name: str) -> None:
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(device, "corp-device")
    target = db.directory / name
    target.unlink(missing_ok=True)
    os.mkfifo(target)

    # A blocking open of the FIFO would hang here; the guard thread turns that into a failure.
    outcome: list[SourceResult] = []
    worker = threading.Thread(
        target=lambda: outcome.append(collect_nssdb(str(db.directory), [])), daemon=True
    )
    worker.start()
    worker.join(60)

    assert outcome, f"collect_nssdb blocked on the FIFO {target}"
    messages = [error.message for error in outcome[0].errors]
    assert any(f"{target} is not a regular file, so it was not opened" in message for message in messages)
