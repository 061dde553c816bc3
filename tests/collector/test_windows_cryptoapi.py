"""The CryptoAPI backend for Windows stores, tested through a fake CryptoAPI and fake DLLs."""

from __future__ import annotations

import ctypes
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from collector.signers import Signer
from collector.sources import windows_cryptoapi
from collector.sources.windows import (
    CERT_SYSTEM_STORE_CURRENT_USER,
    CERT_SYSTEM_STORE_LOCAL_MACHINE,
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
    KeyState,
    collect_windows,
)
from collector.sources.windows_cryptoapi import (
    ACQUIRE_FLAGS,
    AT_KEYEXCHANGE,
    CERT_NCRYPT_KEY_SPEC,
    CERT_STORE_OPEN_EXISTING_FLAG,
    CERT_STORE_PROV_SYSTEM_W,
    CERT_STORE_READONLY_FLAG,
    CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG,
    CRYPT_ACQUIRE_CACHE_FLAG,
    CRYPT_ACQUIRE_COMPARE_KEY_FLAG,
    CRYPT_ACQUIRE_SILENT_FLAG,
    CryptoApiBackend,
    CryptoApiError,
    check_security_status,
    check_win32_result,
    load_crypto_api,
)
from tests.certgen import CertKey
from tests.collector.windows_fakes import (
    NO_KEY,
    SYSTEM,
    USER,
    FakeCertificate,
    FakeCryptoApi,
    FakeKey,
    FakeStore,
    InjectedFailure,
    only,
)

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
    with caplog.at_level(logging.WARNING, logger="collector.sources.windows_cryptoapi"):
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
    assert api.CertEnumCertificatesInStore.restype is windows_cryptoapi.PCCERT_CONTEXT
    assert len(api.CryptAcquireCertificatePrivateKey.argtypes) == 6
    assert api.CertOpenStore.argtypes[4] is ctypes.c_wchar_p


def test_loader_without_windll_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ctypes, "WinDLL", raising=False)
    with pytest.raises(OSError, match="only on Windows"):
        load_crypto_api()
