"""The CryptoAPI backend for Windows certificate stores: crypt32, ncrypt and advapi32 called through ctypes.

For each certificate that the store links to a private key,
``CryptoApiBackend`` opens the key with ``CryptAcquireCertificatePrivateKey``
and ``CRYPT_ACQUIRE_COMPARE_KEY_FLAG``, which fails with NTE_BAD_PUBLIC_KEY
unless the key's public half equals the certificate's public key. Only a key
opened and compared this way is ``present``.

Constants are the values of the Windows SDK header wincrypt.h, checked
against public copies of that header (Wine and others). The store locations
and the winerror.h codes are in ``collector.sources.windows``. The behaviour
relied on is the one documented on learn.microsoft.com for each function
named here.

NOTE: this backend has run only against a CryptoAPI written in Python for
the tests, never on Windows.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from ctypes import wintypes
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from collector.sources.windows import (
    CRYPT_E_NO_KEY_PROPERTY,
    CRYPT_E_NOT_FOUND,
    E_ACCESSDENIED,
    ERROR_ACCESS_DENIED,
    ERROR_FILE_NOT_FOUND,
    ERROR_NO_MORE_FILES,
    HRESULT_FILE_NOT_FOUND,
    NTE_BAD_KEYSET,
    NTE_BAD_PUBLIC_KEY,
    NTE_KEYSET_NOT_DEF,
    NTE_NO_KEY,
    NTE_PERM,
    KeyState,
    StoreEntry,
    StoreListing,
    TrustStore,
    access_fix,
    describe_error_code,
    store_error,
)

if TYPE_CHECKING:
    from typing import TypeAlias

logger = logging.getLogger(__name__)

# CertOpenStore arguments (wincrypt.h).
CERT_STORE_PROV_SYSTEM_W: Final = 10
CERT_STORE_OPEN_EXISTING_FLAG: Final = 0x0000_4000
CERT_STORE_READONLY_FLAG: Final = 0x0000_8000

# Certificate context properties (wincrypt.h).
CERT_KEY_PROV_INFO_PROP_ID: Final = 2
CERT_FRIENDLY_NAME_PROP_ID: Final = 11

# CryptAcquireCertificatePrivateKey flags and the key spec of a CNG key (wincrypt.h).
CRYPT_ACQUIRE_CACHE_FLAG: Final = 0x0000_0001
CRYPT_ACQUIRE_COMPARE_KEY_FLAG: Final = 0x0000_0004
CRYPT_ACQUIRE_SILENT_FLAG: Final = 0x0000_0040
CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG: Final = 0x0001_0000
CERT_NCRYPT_KEY_SPEC: Final = 0xFFFF_FFFF
AT_KEYEXCHANGE: Final = 1
AT_SIGNATURE: Final = 2

# No CACHE flag: CryptAcquireCertificatePrivateKey skips the comparison for a cached handle.
ACQUIRE_FLAGS: Final = (
    CRYPT_ACQUIRE_SILENT_FLAG | CRYPT_ACQUIRE_COMPARE_KEY_FLAG | CRYPT_ACQUIRE_ALLOW_NCRYPT_KEY_FLAG
)

# CertEnumCertificatesInStore fails with one of these at the end of the store.
_END_OF_STORE: Final = frozenset({CRYPT_E_NOT_FOUND, ERROR_NO_MORE_FILES})
_ACCESS_DENIED_CODES: Final = frozenset({ERROR_ACCESS_DENIED, E_ACCESSDENIED})
_NOT_FOUND_CODES: Final = frozenset({ERROR_FILE_NOT_FOUND, HRESULT_FILE_NOT_FOUND})


# --- ctypes types and prototypes ---------------------------------------------------------------

HCERTSTORE = ctypes.c_void_p
# HCRYPTPROV, NCRYPT_KEY_HANDLE and HCRYPTPROV_OR_NCRYPT_KEY_HANDLE are all ULONG_PTR.
ULONG_PTR = ctypes.c_size_t
SECURITY_STATUS = wintypes.LONG


class CERT_CONTEXT(ctypes.Structure):
    _fields_ = (
        ("dwCertEncodingType", wintypes.DWORD),
        ("pbCertEncoded", ctypes.POINTER(ctypes.c_ubyte)),
        ("cbCertEncoded", wintypes.DWORD),
        ("pCertInfo", ctypes.c_void_p),
        ("hCertStore", HCERTSTORE),
    )


PCCERT_CONTEXT = ctypes.POINTER(CERT_CONTEXT)

if TYPE_CHECKING:
    ContextPointer: TypeAlias = ctypes._Pointer[CERT_CONTEXT]
    DwordPointer: TypeAlias = ctypes._Pointer[wintypes.DWORD]
    BoolPointer: TypeAlias = ctypes._Pointer[wintypes.BOOL]
    HandlePointer: TypeAlias = ctypes._Pointer[ctypes.c_size_t]


class CryptoApiError(Exception):
    """Failure of a CryptoAPI function. ``code`` is its Win32 error code or HRESULT, unsigned 32-bit."""

    def __init__(self, function: str, code: int) -> None:
        super().__init__(f"{function} failed with {describe_error_code(code)}")
        self.function = function
        self.code = code


def _last_error() -> int:
    # ctypes.get_last_error exists on Windows only. It returns the value as a C int,
    # so an HRESULT such as 0x80090016 arrives negative and is masked back.
    get_last_error: Callable[[], int] | None = getattr(ctypes, "get_last_error", None)
    if get_last_error is None:
        raise OSError("ctypes.get_last_error is not available: CryptoAPI exists only on Windows")
    return get_last_error() & 0xFFFF_FFFF


def check_win32_result(result: Any, function: Any, arguments: tuple[Any, ...]) -> Any:
    """Raise ``CryptoApiError`` with GetLastError's code when a function returns FALSE or NULL."""
    if not result:
        raise CryptoApiError(function.__name__, _last_error())
    return result


def check_security_status(result: int, function: Any, arguments: tuple[Any, ...]) -> int:
    """Raise ``CryptoApiError`` when an NCrypt function returns a SECURITY_STATUS other than 0."""
    if result != 0:
        raise CryptoApiError(function.__name__, result & 0xFFFF_FFFF)
    return result


@dataclass(frozen=True)
class _Prototype:
    library: str
    restype: Any
    argtypes: tuple[Any, ...]
    errcheck: Callable[..., Any]


_PROTOTYPES: Final[dict[str, _Prototype]] = {
    # CERT_STORE_PROV_SYSTEM_W is the integer 10 cast to LPCSTR, so the provider is declared c_void_p.
    "CertOpenStore": _Prototype(
        "crypt32",
        HCERTSTORE,
        (ctypes.c_void_p, wintypes.DWORD, ULONG_PTR, wintypes.DWORD, wintypes.LPCWSTR),
        check_win32_result,
    ),
    "CertCloseStore": _Prototype("crypt32", wintypes.BOOL, (HCERTSTORE, wintypes.DWORD), check_win32_result),
    "CertEnumCertificatesInStore": _Prototype(
        "crypt32", PCCERT_CONTEXT, (HCERTSTORE, PCCERT_CONTEXT), check_win32_result
    ),
    "CertFreeCertificateContext": _Prototype("crypt32", wintypes.BOOL, (PCCERT_CONTEXT,), check_win32_result),
    "CertGetCertificateContextProperty": _Prototype(
        "crypt32",
        wintypes.BOOL,
        (PCCERT_CONTEXT, wintypes.DWORD, ctypes.c_void_p, ctypes.POINTER(wintypes.DWORD)),
        check_win32_result,
    ),
    "CryptAcquireCertificatePrivateKey": _Prototype(
        "crypt32",
        wintypes.BOOL,
        (
            PCCERT_CONTEXT,
            wintypes.DWORD,
            ctypes.c_void_p,
            ctypes.POINTER(ULONG_PTR),
            ctypes.POINTER(wintypes.DWORD),
            ctypes.POINTER(wintypes.BOOL),
        ),
        check_win32_result,
    ),
    "NCryptFreeObject": _Prototype("ncrypt", SECURITY_STATUS, (ULONG_PTR,), check_security_status),
    "CryptReleaseContext": _Prototype(
        "advapi32", wintypes.BOOL, (ULONG_PTR, wintypes.DWORD), check_win32_result
    ),
}


class CryptoApi(Protocol):
    """The CryptoAPI functions the backend calls, with their Win32 names and argument order.

    Each function raises ``CryptoApiError`` where the Win32 function returns
    FALSE, NULL or a non-zero status, as the error hooks installed by
    ``load_crypto_api`` make the real functions do. Output parameters are
    ``ctypes.pointer`` objects, so a fake can write through them.
    """

    def CertOpenStore(
        self, provider: int, encoding_type: int, crypt_provider: int | None, flags: int, parameter: str, /
    ) -> int: ...

    def CertCloseStore(self, store: int, flags: int, /) -> object: ...

    def CertEnumCertificatesInStore(
        self, store: int, previous: ContextPointer | None, /
    ) -> ContextPointer: ...

    def CertFreeCertificateContext(self, context: ContextPointer, /) -> object: ...

    def CertGetCertificateContextProperty(
        self,
        context: ContextPointer,
        property_id: int,
        data: ctypes.Array[ctypes.c_char] | None,
        size: DwordPointer,
        /,
    ) -> object: ...

    def CryptAcquireCertificatePrivateKey(
        self,
        context: ContextPointer,
        flags: int,
        parameters: None,
        key: HandlePointer,
        key_spec: DwordPointer,
        caller_free: BoolPointer,
        /,
    ) -> object: ...

    def NCryptFreeObject(self, handle: int, /) -> object: ...

    def CryptReleaseContext(self, provider: int, flags: int, /) -> object: ...


def load_crypto_api(win_dll: Callable[..., Any] | None = None) -> CryptoApi:
    """Load the CryptoAPI functions from crypt32, ncrypt and advapi32 with their prototypes and error hooks.

    ``win_dll`` replaces ``ctypes.WinDLL``. Raises OSError when a library
    cannot be loaded, as on every platform but Windows, and AttributeError
    when a function is missing from its library.
    """
    loader = win_dll if win_dll is not None else getattr(ctypes, "WinDLL", None)
    if loader is None:
        raise OSError("ctypes.WinDLL is not available: CryptoAPI exists only on Windows")
    libraries = {
        name: loader(f"{name}.dll", use_last_error=True) for name in ("crypt32", "ncrypt", "advapi32")
    }
    functions: dict[str, Any] = {}
    for name, prototype in _PROTOTYPES.items():
        function = getattr(libraries[prototype.library], name)
        function.restype = prototype.restype
        function.argtypes = prototype.argtypes
        function.errcheck = prototype.errcheck
        functions[name] = function
    return cast("CryptoApi", SimpleNamespace(**functions))


# --- CryptoAPI backend --------------------------------------------------------------------------

_KEY_ERROR_STATES: Final[dict[int, KeyState]] = {
    CRYPT_E_NO_KEY_PROPERTY: KeyState.NOT_RECORDED,
    NTE_BAD_KEYSET: KeyState.MISSING,
    NTE_NO_KEY: KeyState.MISSING,
    NTE_KEYSET_NOT_DEF: KeyState.MISSING,
    NTE_BAD_PUBLIC_KEY: KeyState.MISMATCH,
    E_ACCESSDENIED: KeyState.ACCESS_DENIED,
    ERROR_ACCESS_DENIED: KeyState.ACCESS_DENIED,
    NTE_PERM: KeyState.ACCESS_DENIED,
}


def key_state_for_error(code: int) -> KeyState:
    """Map the code CryptAcquireCertificatePrivateKey failed with to a key state."""
    return _KEY_ERROR_STATES.get(code, KeyState.FAILED)


class CryptoApiBackend:
    """Reads a trust store through CryptoAPI and compares each linked private key with its certificate."""

    def __init__(self, api: CryptoApi) -> None:
        self._api = api

    def read_store(self, store: TrustStore) -> StoreListing:
        listing = StoreListing()
        flags = store.location_flag | CERT_STORE_READONLY_FLAG | CERT_STORE_OPEN_EXISTING_FLAG
        try:
            handle = self._api.CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, None, flags, "My")
        except CryptoApiError as exc:
            listing.errors.append(store_error(store, "open", _open_failure_message(store, exc.code)))
            return listing

        try:
            self._read_certificates(handle, store, listing)
        finally:
            self._close_store(handle, store)
        return listing

    def _read_certificates(self, handle: int, store: TrustStore, listing: StoreListing) -> None:
        context: ContextPointer | None = None
        try:
            while True:
                try:
                    context = self._api.CertEnumCertificatesInStore(handle, context)
                except CryptoApiError as exc:
                    # The call frees the previous context even when it fails.
                    context = None
                    if exc.code not in _END_OF_STORE:
                        message = (
                            f"reading {store.path} failed with {describe_error_code(exc.code)}; only the "
                            f"certificates read before the failure ({len(listing.entries)}) are reported"
                        )
                        listing.errors.append(store_error(store, "read", message))
                    return
                listing.entries.append(self._read_entry(context))
        finally:
            if context is not None:
                self._api.CertFreeCertificateContext(context)

    def _read_entry(self, context: ContextPointer) -> StoreEntry:
        certificate = context.contents
        size = int(certificate.cbCertEncoded)
        der = ctypes.string_at(certificate.pbCertEncoded, size) if size else b""
        friendly_name = self._friendly_name(context)
        key_state, error_code = self._key_state(context)
        return StoreEntry(der=der, friendly_name=friendly_name, key_state=key_state, error_code=error_code)

    def _property_size(self, context: ContextPointer, property_id: int) -> int:
        size = wintypes.DWORD(0)
        self._api.CertGetCertificateContextProperty(context, property_id, None, ctypes.pointer(size))
        return int(size.value)

    def _friendly_name(self, context: ContextPointer) -> str | None:
        try:
            size = self._property_size(context, CERT_FRIENDLY_NAME_PROP_ID)
            buffer = ctypes.create_string_buffer(size)
            written = wintypes.DWORD(size)
            self._api.CertGetCertificateContextProperty(
                context, CERT_FRIENDLY_NAME_PROP_ID, buffer, ctypes.pointer(written)
            )
        except CryptoApiError as exc:
            if exc.code != CRYPT_E_NOT_FOUND:
                logger.debug("friendly name not read, so the certificate has no label: %s", exc)
            return None
        # The property is a NUL-terminated UTF-16LE string.
        raw = buffer.raw[: min(int(written.value), size) // 2 * 2]
        name = raw.decode("utf-16-le", "replace").split("\x00", 1)[0]
        return name or None

    def _key_state(self, context: ContextPointer) -> tuple[KeyState, int | None]:
        try:
            self._property_size(context, CERT_KEY_PROV_INFO_PROP_ID)
        except CryptoApiError as exc:
            if exc.code == CRYPT_E_NOT_FOUND:
                return KeyState.NOT_RECORDED, None
            return KeyState.FAILED, exc.code
        return self._acquire_private_key(context)

    def _acquire_private_key(self, context: ContextPointer) -> tuple[KeyState, int | None]:
        key = ULONG_PTR(0)
        key_spec = wintypes.DWORD(0)
        caller_free = wintypes.BOOL(0)
        try:
            self._api.CryptAcquireCertificatePrivateKey(
                context,
                ACQUIRE_FLAGS,
                None,
                ctypes.pointer(key),
                ctypes.pointer(key_spec),
                ctypes.pointer(caller_free),
            )
        except CryptoApiError as exc:
            return key_state_for_error(exc.code), exc.code

        # The handle is not used: acquiring it with the compare flag is the whole check.
        if not caller_free.value:
            # A handle the caller must not free is the certificate context's cached one.
            return KeyState.NOT_COMPARED, None
        self._release_key(int(key.value), int(key_spec.value))
        return KeyState.PRESENT, None

    def _release_key(self, handle: int, key_spec: int) -> None:
        try:
            if key_spec == CERT_NCRYPT_KEY_SPEC:
                self._api.NCryptFreeObject(handle)
            else:
                self._api.CryptReleaseContext(handle, 0)
        except CryptoApiError as exc:
            logger.warning("releasing a private key handle failed: %s", exc)

    def _close_store(self, handle: int, store: TrustStore) -> None:
        try:
            self._api.CertCloseStore(handle, 0)
        except CryptoApiError as exc:
            logger.warning("closing %s failed: %s", store.path, exc)


def _open_failure_message(store: TrustStore, code: int) -> str:
    failure = f"opening {store.path} failed with {describe_error_code(code)}"
    if code in _NOT_FOUND_CODES:
        return (
            f"{failure}: the store does not exist for this account. Windows creates it when the "
            "first certificate is imported into it."
        )
    if code in _ACCESS_DENIED_CODES:
        return f"{failure}: access denied. {access_fix(store)}"
    return failure
