"""Windows certificate stores, tested through a fake store backend, a fake CryptoAPI and fake PowerShell output."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collector.facts import Certificate, CollectionError, CollectionNote
from collector.signers import Signer
from collector.sources import SourceResult, windows
from collector.sources.windows import (
    ACQUIRE_FLAGS,
    AT_KEYEXCHANGE,
    CERT_NCRYPT_KEY_SPEC,
    CERT_STORE_OPEN_EXISTING_FLAG,
    CERT_STORE_PROV_SYSTEM_W,
    CERT_STORE_READONLY_FLAG,
    CERT_SYSTEM_STORE_CURRENT_USER,
    CERT_SYSTEM_STORE_LOCAL_MACHINE,
    CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG,
    CRYPT_ACQUIRE_CACHE_FLAG,
    CRYPT_ACQUIRE_COMPARE_KEY_FLAG,
    CRYPT_ACQUIRE_SILENT_FLAG,
    CRYPT_E_NO_KEY_PROPERTY,
    E_ACCESSDENIED,
    ERROR_ACCESS_DENIED,
    ERROR_FILE_NOT_FOUND,
    NTE_BAD_KEYSET,
    NTE_BAD_PUBLIC_KEY,
    NTE_INVALID_HANDLE,
    NTE_KEYSET_NOT_DEF,
    NTE_NO_KEY,
    NTE_PERM,
    NTE_SILENT_CONTEXT,
    SCARD_E_NO_SMARTCARD,
    TRUST_STORES,
    CryptoApiBackend,
    CryptoApiError,
    KeyState,
    PowerShellBackend,
    StoreEntry,
    StoreListing,
    check_security_status,
    check_win32_result,
    collect_windows,
    default_backend,
    load_crypto_api,
)
from tests.certgen import CertKey, make_leaf
from tests.collector.windows_fakes import (
    NO_KEY,
    FakeCertificate,
    FakeCryptoApi,
    FakeKey,
    FakeRunner,
    FakeStore,
    FakeStoreBackend,
    InjectedFailure,
    ListedCertificate,
    certificate_listing_output,
    install_fake_powershell,
    path_with,
    powershell_output,
)

SYSTEM = TRUST_STORES["system"]
USER = TRUST_STORES["user"]

posix_only = pytest.mark.skipif(os.name != "posix", reason="the fake powershell.exe is a #! script")


def only(result: SourceResult, cert_key: CertKey) -> Certificate:
    matches = [cert for cert in result.certificates if cert.fingerprint_sha256 == cert_key.fingerprint]
    assert len(matches) == 1, f"expected the certificate once, found {len(matches)}: {result}"
    return matches[0]


def collect_entries(
    *entries: StoreEntry, store: str = "system", signers: list[Signer] | None = None
) -> SourceResult:
    backend = FakeStoreBackend({store: StoreListing(entries=list(entries))})
    return collect_windows([store], signers or [], backend=backend)


@pytest.fixture(scope="module")
def leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, "pf2abc12_mycompany")


@pytest.fixture(scope="module")
def other_leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, "second-device")


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


# --- CryptoAPI backend --------------------------------------------------------------------------


def crypto_backend(
    certificates: list[FakeCertificate],
    *,
    location: int = CERT_SYSTEM_STORE_LOCAL_MACHINE,
    **store_options: Any,
) -> tuple[FakeCryptoApi, CryptoApiBackend]:
    api = FakeCryptoApi({location: FakeStore(certificates, **store_options)})
    return api, CryptoApiBackend(api)


def test_open_uses_system_store_read_only() -> None:
    api = FakeCryptoApi(
        {CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(), CERT_SYSTEM_STORE_CURRENT_USER: FakeStore()}
    )
    backend = CryptoApiBackend(api)
    backend.read_store(SYSTEM)
    backend.read_store(USER)
    expected_flags = CERT_STORE_READONLY_FLAG | CERT_STORE_OPEN_EXISTING_FLAG
    assert api.open_calls == [
        (CERT_STORE_PROV_SYSTEM_W, 0, None, CERT_SYSTEM_STORE_LOCAL_MACHINE | expected_flags, "My"),
        (CERT_STORE_PROV_SYSTEM_W, 0, None, CERT_SYSTEM_STORE_CURRENT_USER | expected_flags, "My"),
    ]
    assert api.leaks() == []


def test_entries_copy_der_and_friendly_name(leaf: CertKey, other_leaf: CertKey) -> None:
    api, backend = crypto_backend(
        [FakeCertificate(leaf.cert_der(), "Corp device – 2026"), FakeCertificate(other_leaf.cert_der())]
    )
    listing = backend.read_store(SYSTEM)
    assert [entry.der for entry in listing.entries] == [leaf.cert_der(), other_leaf.cert_der()]
    assert [entry.friendly_name for entry in listing.entries] == ["Corp device – 2026", None]
    assert listing.errors == []
    assert api.leaks() == []


def test_empty_friendly_name_is_none(leaf: CertKey) -> None:
    _, backend = crypto_backend([FakeCertificate(leaf.cert_der(), "")])
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.friendly_name is None


def test_acquire_flags_compare_silently(leaf: CertKey) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der())])
    backend.read_store(SYSTEM)
    assert api.acquire_flags == [ACQUIRE_FLAGS]
    assert ACQUIRE_FLAGS & CRYPT_ACQUIRE_COMPARE_KEY_FLAG
    assert ACQUIRE_FLAGS & CRYPT_ACQUIRE_SILENT_FLAG
    assert ACQUIRE_FLAGS & CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG
    assert not ACQUIRE_FLAGS & CRYPT_ACQUIRE_CACHE_FLAG


def test_cng_key_present_and_freed(leaf: CertKey) -> None:
    api, backend = crypto_backend(
        [FakeCertificate(leaf.cert_der(), key=FakeKey(key_spec=CERT_NCRYPT_KEY_SPEC))]
    )
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.PRESENT
    assert entry.error_code is None
    assert len(api.ncrypt_freed) == 1
    assert api.capi_released == []
    assert api.leaks() == []


def test_capi_key_present_and_released(leaf: CertKey) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der(), key=FakeKey(key_spec=AT_KEYEXCHANGE))])
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.PRESENT
    assert len(api.capi_released) == 1
    assert api.ncrypt_freed == []
    assert api.leaks() == []


def test_no_key_property_skips_acquire(leaf: CertKey) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der(), key=NO_KEY)])
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.NOT_RECORDED
    assert api.acquire_flags == []


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (CRYPT_E_NO_KEY_PROPERTY, KeyState.NOT_RECORDED),
        (NTE_BAD_KEYSET, KeyState.MISSING),
        (NTE_NO_KEY, KeyState.MISSING),
        (NTE_KEYSET_NOT_DEF, KeyState.MISSING),
        (NTE_BAD_PUBLIC_KEY, KeyState.MISMATCH),
        (E_ACCESSDENIED, KeyState.ACCESS_DENIED),
        (ERROR_ACCESS_DENIED, KeyState.ACCESS_DENIED),
        (NTE_PERM, KeyState.ACCESS_DENIED),
        (NTE_SILENT_CONTEXT, KeyState.FAILED),
        (SCARD_E_NO_SMARTCARD, KeyState.FAILED),
    ],
)
def test_acquire_error_maps_to_key_state(leaf: CertKey, code: int, state: KeyState) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der(), key=FakeKey(acquire_error=code))])
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is state
    assert entry.error_code == code
    assert api.keys_acquired == 0
    assert api.leaks() == []


def test_cached_handle_not_compared_nor_freed(leaf: CertKey) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der(), key=FakeKey(caller_free=False))])
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.NOT_COMPARED
    assert api.keys_acquired == 1
    assert api.ncrypt_freed == []
    assert api.capi_released == []
    assert api.leaks() == []


def test_key_property_error_is_failed(leaf: CertKey) -> None:
    api, backend = crypto_backend(
        [FakeCertificate(leaf.cert_der(), key=FakeKey(property_error=NTE_INVALID_HANDLE))]
    )
    [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.FAILED
    assert entry.error_code == NTE_INVALID_HANDLE
    assert api.acquire_flags == []


def test_each_certificate_gets_own_state(leaf: CertKey, other_leaf: CertKey, ca: CertKey) -> None:
    api, backend = crypto_backend(
        [
            FakeCertificate(leaf.cert_der(), key=FakeKey()),
            FakeCertificate(ca.cert_der(), key=NO_KEY),
            FakeCertificate(other_leaf.cert_der(), key=FakeKey(acquire_error=NTE_BAD_PUBLIC_KEY)),
        ]
    )
    states = [entry.key_state for entry in backend.read_store(SYSTEM).entries]
    assert states == [KeyState.PRESENT, KeyState.NOT_RECORDED, KeyState.MISMATCH]
    assert api.contexts_created == 3
    assert api.leaks() == []


@pytest.mark.parametrize(
    ("code", "fragments"),
    [
        (ERROR_FILE_NOT_FOUND, ["ERROR_FILE_NOT_FOUND (0x00000002)", "does not exist"]),
        (ERROR_ACCESS_DENIED, ["ERROR_ACCESS_DENIED", "access denied", "administrator"]),
        (E_ACCESSDENIED, ["E_ACCESSDENIED", "access denied"]),
        (0x8009_0020, ["error 0x80090020"]),
    ],
)
def test_open_failure_is_store_error(leaf: CertKey, code: int, fragments: list[str]) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der())], open_error=code)
    listing = backend.read_store(SYSTEM)
    assert listing.entries == []
    [error] = listing.errors
    assert error.source == "windows"
    assert error.location == "system"
    assert error.step == "open"
    assert "Cert:\\LocalMachine\\My" in error.message
    for fragment in fragments:
        assert fragment in error.message
    assert api.closed_stores == []
    assert api.leaks() == []


def test_open_failure_in_collect_keeps_other_store(leaf: CertKey) -> None:
    api = FakeCryptoApi(
        {
            CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(
                [FakeCertificate(leaf.cert_der())], open_error=ERROR_ACCESS_DENIED
            ),
            CERT_SYSTEM_STORE_CURRENT_USER: FakeStore([FakeCertificate(leaf.cert_der())]),
        }
    )
    result = collect_windows(["system", "user"], [], backend=CryptoApiBackend(api))
    assert [(error.location, error.step) for error in result.errors] == [("system", "open")]
    assert only(result, leaf).source.location == "user"
    assert only(result, leaf).private_key.status == "present"


def test_enumeration_error_keeps_earlier_entries(leaf: CertKey, other_leaf: CertKey) -> None:
    api, backend = crypto_backend(
        [FakeCertificate(leaf.cert_der()), FakeCertificate(other_leaf.cert_der())],
        enumeration_error=(1, E_ACCESSDENIED),
    )
    listing = backend.read_store(SYSTEM)
    assert [entry.der for entry in listing.entries] == [leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "read"
    assert "E_ACCESSDENIED" in error.message
    assert "read before the failure (1)" in error.message
    assert api.leaks() == []


@pytest.mark.parametrize(
    ("function", "index"),
    [
        ("CertGetCertificateContextProperty", 0),
        ("CertGetCertificateContextProperty", 2),
        ("CryptAcquireCertificatePrivateKey", 1),
        ("CertEnumCertificatesInStore", 2),
    ],
)
def test_exception_mid_enumeration_releases_handles(
    leaf: CertKey, other_leaf: CertKey, ca: CertKey, function: str, index: int
) -> None:
    certificates = [FakeCertificate(cert.cert_der()) for cert in (leaf, other_leaf, ca)]
    api = FakeCryptoApi(
        {CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(certificates)}, raise_at=(function, index)
    )
    with pytest.raises(InjectedFailure):
        CryptoApiBackend(api).read_store(SYSTEM)
    assert len(api.closed_stores) == 1
    assert api.contexts_created >= 1
    assert api.leaks() == []


def test_exception_after_key_acquired_frees_it(leaf: CertKey, other_leaf: CertKey) -> None:
    certificates = [FakeCertificate(leaf.cert_der()), FakeCertificate(other_leaf.cert_der())]
    api = FakeCryptoApi(
        {CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(certificates)},
        raise_at=("CertGetCertificateContextProperty", 1),
    )
    with pytest.raises(InjectedFailure):
        CryptoApiBackend(api).read_store(SYSTEM)
    assert api.keys_acquired == 1
    assert len(api.ncrypt_freed) == 1
    assert api.leaks() == []


def test_release_failure_is_logged(leaf: CertKey, caplog: pytest.LogCaptureFixture) -> None:
    api, backend = crypto_backend([FakeCertificate(leaf.cert_der())])
    api.fail_release_with = NTE_INVALID_HANDLE
    with caplog.at_level(logging.WARNING, logger="collector.sources.windows"):
        [entry] = backend.read_store(SYSTEM).entries
    assert entry.key_state is KeyState.PRESENT
    assert "NTE_INVALID_HANDLE" in caplog.text
    assert len(api.closed_stores) == 1


def test_crypto_backend_end_to_end(ca: CertKey, leaf: CertKey) -> None:
    api = FakeCryptoApi(
        {CERT_SYSTEM_STORE_CURRENT_USER: FakeStore([FakeCertificate(leaf.cert_der(), "corp-device")])}
    )
    result = collect_windows(["user"], [Signer("device-ca", ca.cert)], backend=CryptoApiBackend(api))
    cert = only(result, leaf)
    assert cert.source.label == "corp-device"
    assert cert.private_key.status == "present"
    assert cert.signed_by == ["device-ca"]
    assert result.errors == []
    assert result.notes == []
    assert api.leaks() == []


# --- ctypes loading and error hooks -------------------------------------------------------------


def test_win32_hook_raises_with_unsigned_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # ctypes returns GetLastError as a signed C int, so 0x80090016 arrives negative.
    monkeypatch.setattr(ctypes, "get_last_error", lambda: NTE_BAD_KEYSET - 2**32, raising=False)
    function = SimpleNamespace(__name__="CryptAcquireCertificatePrivateKey")
    with pytest.raises(CryptoApiError) as raised:
        check_win32_result(0, function, ())
    assert raised.value.code == NTE_BAD_KEYSET
    assert raised.value.function == "CryptAcquireCertificatePrivateKey"
    assert "NTE_BAD_KEYSET (0x80090016)" in str(raised.value)


def test_win32_hook_passes_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "get_last_error", lambda: ERROR_FILE_NOT_FOUND, raising=False)
    assert check_win32_result(0x1234, SimpleNamespace(__name__="CertOpenStore"), ()) == 0x1234


def test_win32_hook_treats_null_as_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "get_last_error", lambda: ERROR_FILE_NOT_FOUND, raising=False)
    with pytest.raises(CryptoApiError) as raised:
        check_win32_result(None, SimpleNamespace(__name__="CertOpenStore"), ())
    assert raised.value.code == ERROR_FILE_NOT_FOUND


def test_status_hook_raises_on_nonzero() -> None:
    function = SimpleNamespace(__name__="NCryptFreeObject")
    assert check_security_status(0, function, ()) == 0
    with pytest.raises(CryptoApiError) as raised:
        check_security_status(NTE_INVALID_HANDLE - 2**32, function, ())
    assert raised.value.code == NTE_INVALID_HANDLE


class _FakeLibrary:
    """A DLL whose attributes are plain objects, so prototypes can be set on them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.functions: dict[str, SimpleNamespace] = {}

    def __getattr__(self, function: str) -> SimpleNamespace:
        return self.functions.setdefault(function, SimpleNamespace(__name__=function))


def test_loader_sets_prototypes_and_hooks() -> None:
    libraries: dict[str, _FakeLibrary] = {}
    options: list[dict[str, Any]] = []

    def win_dll(name: str, **kwargs: Any) -> _FakeLibrary:
        options.append(kwargs)
        return libraries.setdefault(name, _FakeLibrary(name))

    api: Any = load_crypto_api(win_dll)
    assert sorted(libraries) == ["advapi32.dll", "crypt32.dll", "ncrypt.dll"]
    assert all(option == {"use_last_error": True} for option in options)
    assert api.CertOpenStore is libraries["crypt32.dll"].functions["CertOpenStore"]
    assert api.NCryptFreeObject is libraries["ncrypt.dll"].functions["NCryptFreeObject"]
    assert api.CryptReleaseContext is libraries["advapi32.dll"].functions["CryptReleaseContext"]
    assert api.NCryptFreeObject.errcheck is check_security_status
    assert api.CertEnumCertificatesInStore.errcheck is check_win32_result
    assert api.CertEnumCertificatesInStore.restype is windows.PCCERT_CONTEXT
    assert len(api.CryptAcquireCertificatePrivateKey.argtypes) == 6
    assert api.CertOpenStore.argtypes[4] is ctypes.c_wchar_p


def test_loader_without_windll_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ctypes, "WinDLL", raising=False)
    with pytest.raises(OSError, match="only on Windows"):
        load_crypto_api()


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
    monkeypatch.setattr(windows, "load_crypto_api", lambda: fake_api)
    backend = default_backend()
    assert isinstance(backend, CryptoApiBackend)
    backend.read_store(SYSTEM)
    assert len(fake_api.open_calls) == 1


def test_default_backend_load_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise OSError("[WinError 126] The specified module could not be found")

    monkeypatch.setattr(ctypes, "windll", object(), raising=False)
    monkeypatch.setattr(windows, "load_crypto_api", fail)
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


# --- PowerShell backend -------------------------------------------------------------------------


def read_powershell(output: bytes, store: str = "system") -> StoreListing:
    return PowerShellBackend(FakeRunner(output)).read_store(TRUST_STORES[store])


def test_powershell_command_line() -> None:
    runner = FakeRunner(b"")
    PowerShellBackend(runner).read_store(SYSTEM)
    [argv] = runner.calls
    assert argv[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
    script = argv[4]
    assert "Get-ChildItem -Path 'Cert:\\LocalMachine\\My'" in script
    assert "ConvertTo-Json -Compress" in script
    assert "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false" in script
    assert "[Convert]::ToBase64String($_.RawData)" in script
    for field in ("Thumbprint", "HasPrivateKey", "FriendlyName"):
        assert f"{field} = $_.{field}" in script
    assert '"' not in script


def test_powershell_user_store_path() -> None:
    runner = FakeRunner(b"")
    PowerShellBackend(runner).read_store(USER)
    assert "'Cert:\\CurrentUser\\My'" in runner.calls[0][4]


def test_powershell_single_object(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True, "corp-device")])
    assert output.startswith(b"{")
    listing = read_powershell(output)
    [entry] = listing.entries
    assert entry.der == leaf.cert_der()
    assert entry.friendly_name == "corp-device"
    assert entry.key_state is KeyState.RECORDED_ONLY
    assert listing.errors == []


def test_powershell_list(leaf: CertKey, other_leaf: CertKey, ca: CertKey) -> None:
    output = certificate_listing_output(
        [
            ListedCertificate(leaf.cert_der(), True, "corp-device"),
            ListedCertificate(other_leaf.cert_der(), False, ""),
            ListedCertificate(ca.cert_der(), False, None),
        ]
    )
    assert output.startswith(b"[")
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [leaf.cert_der(), other_leaf.cert_der(), ca.cert_der()]
    assert [entry.key_state for entry in listing.entries] == [
        KeyState.RECORDED_ONLY,
        KeyState.NOT_RECORDED,
        KeyState.NOT_RECORDED,
    ]
    assert [entry.friendly_name for entry in listing.entries] == ["corp-device", None, None]


def test_powershell_empty_store() -> None:
    listing = read_powershell(b"")
    assert listing.entries == []
    assert listing.errors == []
    assert len(listing.notes) == 1


def test_powershell_blank_lines_only() -> None:
    assert read_powershell(b"\r\n").errors == []


def test_powershell_byte_order_mark(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True)], bom=True)
    assert output.startswith(b"\xef\xbb\xbf")
    [entry] = read_powershell(output).entries
    assert entry.der == leaf.cert_der()


def test_powershell_escaped_friendly_name(leaf: CertKey) -> None:
    output = certificate_listing_output(
        [ListedCertificate(leaf.cert_der(), True, "Jane's <VPN> & Wi-Fi – é")]
    )
    assert b"\\u0027" in output
    [entry] = read_powershell(output).entries
    assert entry.friendly_name == "Jane's <VPN> & Wi-Fi – é"


def test_powershell_raw_data_byte_list(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), raw_data=list(leaf.cert_der()))])
    [entry] = read_powershell(output).entries
    assert entry.der == leaf.cert_der()


def test_powershell_bad_base64_skips_one(leaf: CertKey, other_leaf: CertKey) -> None:
    output = certificate_listing_output(
        [
            ListedCertificate(leaf.cert_der(), raw_data="MIIB$$$not base64"),
            ListedCertificate(other_leaf.cert_der()),
        ]
    )
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [other_leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert error.location == "system"
    assert "certificate 1 of 2" in error.message
    assert "not valid base64" in error.message


def test_powershell_thumbprint_mismatch(leaf: CertKey, other_leaf: CertKey) -> None:
    wrong = windows.thumbprint(other_leaf.cert_der())
    output = certificate_listing_output(
        [ListedCertificate(other_leaf.cert_der()), ListedCertificate(leaf.cert_der(), thumbprint=wrong)]
    )
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [other_leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert "certificate 2 of 2" in error.message
    assert f"Thumbprint {wrong} does not match" in error.message
    assert windows.thumbprint(leaf.cert_der()) in error.message


def test_powershell_lower_case_thumbprint_accepted(leaf: CertKey) -> None:
    lower = windows.thumbprint(leaf.cert_der()).lower()
    listing = read_powershell(
        certificate_listing_output([ListedCertificate(leaf.cert_der(), thumbprint=lower)])
    )
    assert len(listing.entries) == 1


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("a string", "expected a JSON object"),
        ({"Thumbprint": "00", "HasPrivateKey": True}, "RawData is missing"),
        ({"RawData": [1, 300], "Thumbprint": "00", "HasPrivateKey": True}, "byte values 0-255"),
        ({"RawData": "", "Thumbprint": "00", "HasPrivateKey": True}, "RawData is empty"),
    ],
)
def test_powershell_malformed_item(leaf: CertKey, item: object, fragment: str) -> None:
    valid = ListedCertificate(leaf.cert_der()).to_json_object()
    listing = read_powershell(powershell_output([item, valid]))
    assert [entry.der for entry in listing.entries] == [leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert "certificate 1 of 2" in error.message
    assert fragment in error.message


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("Thumbprint", None, "Thumbprint is missing"),
        ("HasPrivateKey", "True", "HasPrivateKey is missing or not true or false"),
        ("FriendlyName", 7, "FriendlyName is not a string"),
    ],
)
def test_powershell_wrong_field_type(leaf: CertKey, field: str, value: object, fragment: str) -> None:
    item = ListedCertificate(leaf.cert_der()).to_json_object()
    item[field] = value
    listing = read_powershell(powershell_output([item]))
    assert listing.entries == []
    [error] = listing.errors
    assert fragment in error.message


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'"just a string"', "is a JSON string, not an object or a list"),
    ],
)
def test_powershell_unreadable_output(output: bytes, fragment: str) -> None:
    listing = read_powershell(output)
    assert listing.entries == []
    [error] = listing.errors
    assert error.step == "parse"
    assert error.location == "system"
    assert fragment in error.message


def test_powershell_command_failure() -> None:
    runner = FakeRunner(error="powershell.exe exited with status 1: Cannot find path")
    listing = PowerShellBackend(runner).read_store(USER)
    [error] = listing.errors
    assert error.source == "windows"
    assert error.location == "user"
    assert error.step == "command"
    assert "Cannot find path" in error.message
    assert len(listing.notes) == 1


def test_powershell_facts_never_present(leaf: CertKey, other_leaf: CertKey) -> None:
    output = certificate_listing_output(
        [ListedCertificate(leaf.cert_der(), True), ListedCertificate(other_leaf.cert_der(), False)]
    )
    result = collect_windows(["system"], [], backend=PowerShellBackend(FakeRunner(output)))
    assert only(result, leaf).private_key.status == "unverified"
    assert only(result, other_leaf).private_key.status == "missing"
    assert all(cert.private_key.present is False for cert in result.certificates)
    [note] = result.notes
    assert note.source == "windows"
    assert note.location == "system"


@posix_only
def test_fake_powershell_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True, "corp-device")], bom=True)
    install_fake_powershell(tmp_path / "bin", stdout=output)
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = collect_windows(["user"], [], backend=PowerShellBackend())
    cert = only(result, leaf)
    assert cert.source.label == "corp-device"
    assert cert.private_key.status == "unverified"
    assert result.errors == []


@posix_only
def test_powershell_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = collect_windows(["system"], [], backend=PowerShellBackend())
    [error] = result.errors
    assert error.step == "command"
    assert "powershell.exe was not found on PATH" in error.message


@posix_only
def test_powershell_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_powershell(
        tmp_path / "bin", stderr=b"Get-ChildItem : Cannot find path 'Cert:\\CurrentUser\\My'\r\n", exit_code=1
    )
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = collect_windows(["user"], [], backend=PowerShellBackend())
    [error] = result.errors
    assert error.step == "command"
    assert "exited with status 1" in error.message
    assert "Cannot find path" in error.message
    assert result.certificates == []
