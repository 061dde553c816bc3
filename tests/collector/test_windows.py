"""Windows store facts and the backend choice, tested with a fake store backend, CryptoAPI and PowerShell."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from collector.facts import CollectionError, CollectionNote
from collector.signers import Signer
from collector.sources import SourceResult, windows, windows_cryptoapi
from collector.sources.windows import (
    E_ACCESSDENIED,
    NTE_BAD_KEYSET,
    NTE_BAD_PUBLIC_KEY,
    NTE_PERM,
    NTE_SILENT_CONTEXT,
    SCARD_E_NO_SMARTCARD,
    KeyState,
    StoreEntry,
    StoreListing,
    TrustStore,
    collect_windows,
    default_backend,
)
from collector.sources.windows_cryptoapi import CryptoApiBackend
from collector.sources.windows_powershell import PowerShellBackend
from tests.certgen import CertKey
from tests.collector.windows_fakes import (
    SYSTEM,
    USER,
    FakeCryptoApi,
    FakeRunner,
    FakeStoreBackend,
    ListedCertificate,
    certificate_listing_output,
    install_fake_powershell,
    only,
    path_with,
    posix_only,
)


def collect_entries(
    *entries: StoreEntry, store: str = "system", signers: list[Signer] | None = None
) -> SourceResult:
    backend = FakeStoreBackend({store: StoreListing(entries=list(entries))})
    return collect_windows([store], signers or [], backend=backend)


# --- facts from store entries -------------------------------------------------------------------


def test_present_key_counts_as_present(leaf: CertKey) -> None:
    result = collect_entries(StoreEntry(leaf.cert_der(), "corp-device", KeyState.PRESENT))
    cert = only(result, leaf)
    assert cert.private_key.present is True
    assert cert.private_key.status == "present"
    assert cert.private_key.location == "system"
    assert cert.private_key.reason is None
    assert result.errors == []


def test_certificate_source_fields(leaf: CertKey) -> None:
    result = collect_entries(StoreEntry(leaf.cert_der(), "corp-device", KeyState.PRESENT), store="user")
    source = only(result, leaf).source
    assert source.type == "windows"
    assert source.location == "user"
    assert source.label == "corp-device"


def test_no_friendly_name_is_no_label(leaf: CertKey) -> None:
    result = collect_entries(StoreEntry(leaf.cert_der(), None, KeyState.PRESENT))
    assert only(result, leaf).source.label is None


@pytest.mark.parametrize(
    ("state", "code", "status", "fragments"),
    [
        (KeyState.NOT_RECORDED, None, "missing", ["records no private key", "Import-PfxCertificate"]),
        (KeyState.MISSING, NTE_BAD_KEYSET, "missing", ["was not found", "NTE_BAD_KEYSET (0x80090016)"]),
        (KeyState.ACCESS_DENIED, NTE_PERM, "unverified", ["access denied", "NTE_PERM", "administrator"]),
        (KeyState.MISMATCH, NTE_BAD_PUBLIC_KEY, "unverified", ["different public key", "NTE_BAD_PUBLIC_KEY"]),
        (KeyState.RECORDED_ONLY, None, "unverified", ["HasPrivateKey=True", "not opened or compared"]),
        (KeyState.NOT_COMPARED, None, "unverified", ["cached handle", "does not compare"]),
        (KeyState.FAILED, NTE_SILENT_CONTEXT, "unverified", ["user interaction", "NTE_SILENT_CONTEXT"]),
        (KeyState.FAILED, SCARD_E_NO_SMARTCARD, "unverified", ["could not be checked", "0x8010000C"]),
        (KeyState.FAILED, 0x8009_0020, "unverified", ["could not be checked", "error 0x80090020"]),
    ],
)
def test_key_state_maps_to_private_key_facts(
    leaf: CertKey, state: KeyState, code: int | None, status: str, fragments: list[str]
) -> None:
    result = collect_entries(StoreEntry(leaf.cert_der(), None, state, code))
    private_key = only(result, leaf).private_key
    assert private_key.status == status
    assert private_key.present is False
    assert private_key.location == "system"
    assert private_key.reason is not None
    for fragment in fragments:
        assert fragment in private_key.reason


def test_access_denied_in_user_store_names_owner(leaf: CertKey) -> None:
    result = collect_entries(
        StoreEntry(leaf.cert_der(), None, KeyState.ACCESS_DENIED, E_ACCESSDENIED), store="user"
    )
    reason = only(result, leaf).private_key.reason
    assert reason is not None
    assert "user who owns Cert:\\CurrentUser\\My" in reason
    assert "administrator" not in reason


def test_recorded_only_never_present(leaf: CertKey) -> None:
    result = collect_entries(StoreEntry(leaf.cert_der(), None, KeyState.RECORDED_ONLY))
    assert only(result, leaf).private_key.present is False


def test_invalid_certificate_does_not_hide_others(leaf: CertKey, other_leaf: CertKey) -> None:
    garbage = b"\x30\x03\x02\x01\x01"
    result = collect_entries(
        StoreEntry(leaf.cert_der(), None, KeyState.PRESENT),
        StoreEntry(garbage, None, KeyState.PRESENT),
        StoreEntry(other_leaf.cert_der(), None, KeyState.NOT_RECORDED),
    )
    assert len(result.certificates) == 2
    only(result, leaf)
    only(result, other_leaf)
    [error] = result.errors
    assert error.source == "windows"
    assert error.location == "system"
    assert error.step == "load"
    assert windows.thumbprint(garbage) in error.message
    assert "Cert:\\LocalMachine\\My" in error.message


def test_signed_by_names_issuer(ca: CertKey, leaf: CertKey) -> None:
    result = collect_entries(
        StoreEntry(leaf.cert_der(), None, KeyState.PRESENT), signers=[Signer("device-ca", ca.cert)]
    )
    assert only(result, leaf).signed_by == ["device-ca"]


def test_unknown_trust_store_is_error() -> None:
    backend = FakeStoreBackend({})
    result = collect_windows(["system", "machine"], [], backend=backend)
    assert backend.read == ["system"]
    [error] = result.errors
    assert error.source == "windows"
    assert error.location == "machine"
    assert error.step == "open"
    assert "system, user" in error.message


def test_only_unknown_stores_build_no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise AssertionError("no backend should be built")

    monkeypatch.setattr(windows, "default_backend", fail)
    result = collect_windows(["machine"], [])
    assert [error.location for error in result.errors] == ["machine"]


def test_repeated_store_read_once(leaf: CertKey) -> None:
    backend = FakeStoreBackend(
        {"user": StoreListing(entries=[StoreEntry(leaf.cert_der(), None, KeyState.PRESENT)])}
    )
    result = collect_windows(["user", "system", "user"], [], backend=backend)
    assert backend.read == ["user", "system"]
    assert len(result.certificates) == 1


def test_listing_errors_and_notes_kept(leaf: CertKey) -> None:
    error = CollectionError(source="windows", location="user", step="command", message="boom")
    note = CollectionNote(source="windows", location="user", message="read with PowerShell")
    listing = StoreListing(
        entries=[StoreEntry(leaf.cert_der(), None, KeyState.PRESENT)], errors=[error], notes=[note]
    )
    result = collect_windows(["user"], [], backend=FakeStoreBackend({"user": listing}))
    assert result.errors == [error]
    assert result.notes == [note]
    assert len(result.certificates) == 1


class _FaultingBackend:
    """Raises in one store as a ctypes call that faults would, and lists the other normally."""

    def __init__(self, failing: str, listing: StoreListing) -> None:
        self.failing = failing
        self.listing = listing

    def read_store(self, store: TrustStore) -> StoreListing:
        if store.name == self.failing:
            raise OSError("exception: access violation reading 0x0000000000000000")
        return self.listing


def test_faulting_store_does_not_stop_others(leaf: CertKey) -> None:
    listing = StoreListing(entries=[StoreEntry(leaf.cert_der(), None, KeyState.PRESENT)])

    result = collect_windows(["system", "user"], [], backend=_FaultingBackend("system", listing))

    assert [cert.source.location for cert in result.certificates] == ["user"]
    (error,) = result.errors
    assert (error.source, error.location, error.step) == ("windows", "system", "read")
    assert "OSError: exception: access violation" in error.message


# --- backend choice -----------------------------------------------------------------------------


def test_default_backend_without_windll(monkeypatch: pytest.MonkeyPatch, leaf: CertKey) -> None:
    monkeypatch.delattr(ctypes, "windll", raising=False)
    runner = FakeRunner(
        certificate_listing_output([ListedCertificate(leaf.cert_der(), has_private_key=True)])
    )
    backend = default_backend(runner)
    assert isinstance(backend, PowerShellBackend)
    listing = backend.read_store(USER)
    [note] = listing.notes
    assert note.location == "user"
    assert "no ctypes.windll" in note.message
    assert "never present" in note.message


def test_default_backend_with_windll(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_api = FakeCryptoApi({})
    monkeypatch.setattr(ctypes, "windll", object(), raising=False)
    monkeypatch.setattr(windows_cryptoapi, "load_crypto_api", lambda: fake_api)
    backend = default_backend()
    assert isinstance(backend, CryptoApiBackend)
    backend.read_store(SYSTEM)
    assert len(fake_api.open_calls) == 1


def test_default_backend_load_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise OSError("[WinError 126] The specified module could not be found")

    monkeypatch.setattr(ctypes, "windll", object(), raising=False)
    monkeypatch.setattr(windows_cryptoapi, "load_crypto_api", fail)
    backend = default_backend(FakeRunner(b""))
    assert isinstance(backend, PowerShellBackend)
    [note] = backend.read_store(SYSTEM).notes
    assert "WinError 126" in note.message


@posix_only
def test_collect_without_backend_uses_powershell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaf: CertKey
) -> None:
    monkeypatch.delattr(ctypes, "windll", raising=False)
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), has_private_key=True)])
    install_fake_powershell(tmp_path / "bin", stdout=output)
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = collect_windows(["system"], [])
    assert only(result, leaf).private_key.status == "unverified"
    assert [note.location for note in result.notes] == ["system"]
