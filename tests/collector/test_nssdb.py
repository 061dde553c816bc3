from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
import sqlite3
import subprocess
from pathlib import Path

import pytest

from collector.facts import Certificate
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.nssdb import DEFAULT_NSSDB, collect_nssdb, database_directory
from tests.certgen import CertKey, NssDb, create_nssdb, make_ca, make_leaf


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
