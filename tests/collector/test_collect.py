from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from collector import __version__, device_windows
from collector.collect import Locations, collect
from collector.device_windows import WindowsIdentity
from collector.facts import OperatingSystem, dump_facts, load_facts
from collector.signers import Signer
from collector.sources import windows
from collector.sources.windows import KeyState, StoreEntry, StoreListing
from tests.certgen import CertKey, create_nssdb, make_leaf, write_pem
from tests.collector.windows_fakes import FakeStoreBackend

NOW = dt.datetime(2026, 12, 4, 19, 0, tzinfo=dt.UTC)


def test_collect_merges_sources(tmp_path: Path, ca: CertKey) -> None:
    pem_leaf = make_leaf(ca, "pem-device")
    nss_leaf = make_leaf(ca, "nss-device", key_type="rsa")
    pem_path = write_pem(tmp_path / "client.pem", pem_leaf.cert_pem(), pem_leaf.key_pem())
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(nss_leaf, "corp-device")

    facts = collect(
        Locations(paths=(str(pem_path),), nssdbs=(f"sql:{db.directory}",)),
        [Signer("device-ca", ca.cert)],
        hostname="pf2abc12",
        serial_number="PF2ABC12",
        now=NOW,
    )
    assert [(cert.source.type, cert.fingerprint_sha256) for cert in facts.certificates] == [
        ("pem", pem_leaf.fingerprint),
        ("nssdb", nss_leaf.fingerprint),
    ]
    assert all(cert.private_key.present for cert in facts.certificates)
    assert all(cert.signed_by == ["device-ca"] for cert in facts.certificates)
    assert facts.errors == []
    assert facts.collected_at == NOW
    assert facts.collector.version == __version__
    assert facts.device.hostname == "pf2abc12"
    assert facts.device.serial_number == "PF2ABC12"


def test_collect_pairs_key_across_paths(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.pem")
    key_path = leaf.write_key(tmp_path / "client.key")
    facts = collect(Locations(paths=(str(cert_path), str(key_path))), [], serial_number="S1", now=NOW)
    assert [cert.private_key.location for cert in facts.certificates] == [str(key_path)]


def test_collect_same_location_once(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), leaf.cert_pem(), leaf.key_pem())
    facts = collect(Locations(paths=(str(path), str(tmp_path))), [], serial_number="S1", now=NOW)
    assert [cert.source.location for cert in facts.certificates] == [str(path)]


def test_collect_same_cert_two_locations(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", key_type="rsa")
    pem_path = leaf.write_cert(tmp_path / "client.pem")
    copy_path = leaf.write_cert(tmp_path / "copy.pem")
    db = create_nssdb(tmp_path / "nssdb")
    db.import_key_pair(leaf, "corp-device")
    facts = collect(
        Locations(paths=(str(pem_path), str(copy_path)), nssdbs=(str(db.directory), f"sql:{db.directory}")),
        [],
        serial_number="S1",
        now=NOW,
    )
    assert [cert.source.location for cert in facts.certificates] == [
        str(pem_path),
        str(copy_path),
        str(db.directory),
    ]
    assert {cert.fingerprint_sha256 for cert in facts.certificates} == {leaf.fingerprint}


def test_collect_errors_from_every_source(tmp_path: Path) -> None:
    facts = collect(
        Locations(paths=(str(tmp_path / "absent.pem"),), nssdbs=(str(tmp_path / "no-db"),)),
        [],
        serial_number="S1",
        now=NOW,
    )
    assert facts.certificates == []
    assert [(error.source, error.step) for error in facts.errors] == [("pem", "open"), ("nssdb", "open")]


def test_collect_empty_locations(tmp_path: Path) -> None:
    facts = collect(Locations(), [], serial_number="S1", now=NOW)
    assert facts.certificates == []
    assert facts.errors == []


def test_collect_default_now_is_utc(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    facts = collect(Locations(), [], serial_number="S1")
    assert facts.collected_at >= before
    assert facts.collected_at.utcoffset() == dt.timedelta(0)


def test_collect_naive_now_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        collect(Locations(), [], serial_number="S1", now=dt.datetime(2026, 12, 4, 19, 0))


def test_collect_dump_roundtrip_without_key(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1", key_type="rsa")
    key_pem = leaf.key_pem("traditional")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), key_pem)
    facts = collect(Locations(paths=(str(path),)), [], serial_number="S1", now=NOW)
    dump = dump_facts(facts)
    assert load_facts(dump) == facts
    text = dump.decode()
    key_der = leaf.key_der("traditional")
    assert base64.b64encode(key_der).decode() not in text
    # Short base64 lines could occur in the facts by chance; 16 characters cannot.
    for line in key_pem.decode().splitlines()[1:-1]:
        if len(line) >= 16:
            assert line not in text
    assert key_der.hex() not in text
    assert facts.certificates[0].private_key.present is True


@pytest.mark.parametrize("order", ["key first", "key last"])
def test_repeated_certificate_keeps_key_evidence(
    ca: CertKey, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    leaf = make_leaf(ca, "device")
    with_key = StoreEntry(leaf.cert_der(), "with key", KeyState.PRESENT)
    without_key = StoreEntry(leaf.cert_der(), "without key", KeyState.NOT_RECORDED)
    entries = [with_key, without_key] if order == "key first" else [without_key, with_key]
    backend = FakeStoreBackend({"system": StoreListing(entries=entries)})
    monkeypatch.setattr(windows, "default_backend", lambda: backend)
    identity = WindowsIdentity(
        "S1", OperatingSystem(family="windows", name="Windows", version="10"), False, []
    )
    monkeypatch.setattr(device_windows, "read_windows_identity", lambda: identity)

    facts = collect(Locations(trust_stores=("system",)), [], hostname="h", platform="windows", now=NOW)

    (certificate,) = facts.certificates
    assert certificate.private_key.status == "present"
    assert certificate.source.label == "with key"
