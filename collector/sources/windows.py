"""Windows certificate stores: ``system`` is ``Cert:\\LocalMachine\\My``, ``user`` is ``Cert:\\CurrentUser\\My``.

Two backends read a store through the same ``StoreBackend`` interface:

- ``CryptoApiBackend`` calls CryptoAPI (crypt32, ncrypt, advapi32) through
  ctypes. For each certificate that the store links to a private key, it
  opens the key with ``CryptAcquireCertificatePrivateKey`` and
  ``CRYPT_ACQUIRE_COMPARE_KEY_FLAG``, which fails with NTE_BAD_PUBLIC_KEY
  unless the key's public half equals the certificate's public key. Only a
  key opened and compared this way is ``present``.
- ``PowerShellBackend`` runs ``powershell.exe`` where ctypes cannot reach
  CryptoAPI. PowerShell's ``HasPrivateKey`` only shows that the store
  records a link to a key, so such keys are ``unverified``, never
  ``present``.

Constants are the values of the Windows SDK headers wincrypt.h and
winerror.h, checked against public copies of those headers (Wine and others).
The behaviour relied on is the one documented on learn.microsoft.com for
each function named here.

NOTE: both backends have run only against the fakes in the tests (a
CryptoAPI written in Python, and output generated in the format of
ConvertTo-Json), never on Windows.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import enum
import hashlib
import logging
from collections.abc import Callable, Sequence
from ctypes import wintypes
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import orjson

from collector.commands import CommandError, Runner, run_command
from collector.facts import CertificateSource, CollectionError, CollectionNote, PrivateKey, PrivateKeyStatus
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import CertificateError, certificate_facts, load_certificate

if TYPE_CHECKING:
    from typing import TypeAlias

logger = logging.getLogger(__name__)

SOURCE = "windows"

# CertOpenStore arguments (wincrypt.h).
CERT_STORE_PROV_SYSTEM_W: Final = 10
CERT_SYSTEM_STORE_CURRENT_USER: Final = 0x0001_0000
CERT_SYSTEM_STORE_LOCAL_MACHINE: Final = 0x0002_0000
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

# Win32 error codes and HRESULTs (winerror.h), as unsigned 32-bit values.
ERROR_FILE_NOT_FOUND: Final = 0x0000_0002
ERROR_ACCESS_DENIED: Final = 0x0000_0005
ERROR_NO_MORE_FILES: Final = 0x0000_0012
ERROR_MORE_DATA: Final = 0x0000_00EA
E_ACCESSDENIED: Final = 0x8007_0005
HRESULT_FILE_NOT_FOUND: Final = 0x8007_0002  # HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)
NTE_BAD_KEY_STATE: Final = 0x8009_000B
NTE_NO_KEY: Final = 0x8009_000D
NTE_PERM: Final = 0x8009_0010
NTE_NOT_FOUND: Final = 0x8009_0011
NTE_BAD_PUBLIC_KEY: Final = 0x8009_0015
NTE_BAD_KEYSET: Final = 0x8009_0016
NTE_PROV_TYPE_NOT_DEF: Final = 0x8009_0017
NTE_KEYSET_NOT_DEF: Final = 0x8009_0019
NTE_PROV_DLL_NOT_FOUND: Final = 0x8009_001E
NTE_SILENT_CONTEXT: Final = 0x8009_0022
NTE_INVALID_HANDLE: Final = 0x8009_0026
CRYPT_E_NOT_FOUND: Final = 0x8009_2004
CRYPT_E_NO_KEY_PROPERTY: Final = 0x8009_200B
SCARD_E_NO_SMARTCARD: Final = 0x8010_000C
SCARD_W_REMOVED_CARD: Final = 0x8010_0069

ERROR_NAMES: Final[dict[int, str]] = {
    ERROR_FILE_NOT_FOUND: "ERROR_FILE_NOT_FOUND",
    ERROR_ACCESS_DENIED: "ERROR_ACCESS_DENIED",
    ERROR_NO_MORE_FILES: "ERROR_NO_MORE_FILES",
    ERROR_MORE_DATA: "ERROR_MORE_DATA",
    E_ACCESSDENIED: "E_ACCESSDENIED",
    HRESULT_FILE_NOT_FOUND: "HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)",
    NTE_BAD_KEY_STATE: "NTE_BAD_KEY_STATE",
    NTE_NO_KEY: "NTE_NO_KEY",
    NTE_PERM: "NTE_PERM",
    NTE_NOT_FOUND: "NTE_NOT_FOUND",
    NTE_BAD_PUBLIC_KEY: "NTE_BAD_PUBLIC_KEY",
    NTE_BAD_KEYSET: "NTE_BAD_KEYSET",
    NTE_PROV_TYPE_NOT_DEF: "NTE_PROV_TYPE_NOT_DEF",
    NTE_KEYSET_NOT_DEF: "NTE_KEYSET_NOT_DEF",
    NTE_PROV_DLL_NOT_FOUND: "NTE_PROV_DLL_NOT_FOUND",
    NTE_SILENT_CONTEXT: "NTE_SILENT_CONTEXT",
    NTE_INVALID_HANDLE: "NTE_INVALID_HANDLE",
    CRYPT_E_NOT_FOUND: "CRYPT_E_NOT_FOUND",
    CRYPT_E_NO_KEY_PROPERTY: "CRYPT_E_NO_KEY_PROPERTY",
    SCARD_E_NO_SMARTCARD: "SCARD_E_NO_SMARTCARD",
    SCARD_W_REMOVED_CARD: "SCARD_W_REMOVED_CARD",
}

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


def describe_error_code(code: int) -> str:
    """Format an error code as its winerror.h name, where known, and its hex value."""
    name = ERROR_NAMES.get(code)
    return f"{name} (0x{code:08X})" if name else f"error 0x{code:08X}"


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


# --- the store interface ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustStore:
    """A trust store a rule can name, and the system store location it stands for."""

    name: str
    location: str
    location_flag: int

    @property
    def path(self) -> str:
        """The PowerShell path of the store, as in ``Cert:\\LocalMachine\\My``."""
        return f"Cert:\\{self.location}\\My"


TRUST_STORES: Final[dict[str, TrustStore]] = {
    "system": TrustStore("system", "LocalMachine", CERT_SYSTEM_STORE_LOCAL_MACHINE),
    "user": TrustStore("user", "CurrentUser", CERT_SYSTEM_STORE_CURRENT_USER),
}


class KeyState(enum.Enum):
    """Evidence a backend found about a certificate's private key."""

    # Acquired with CRYPT_ACQUIRE_COMPARE_KEY_FLAG, so its public key equals the certificate's.
    PRESENT = "present"
    # The store links no key to the certificate (no CERT_KEY_PROV_INFO_PROP_ID, or HasPrivateKey=False).
    NOT_RECORDED = "not_recorded"
    # The store links a key, but its key container was not found.
    MISSING = "missing"
    # The key exists, but this account may not open it.
    ACCESS_DENIED = "access_denied"
    # The linked key's public key differs from the certificate's (NTE_BAD_PUBLIC_KEY).
    MISMATCH = "mismatch"
    # PowerShell reports HasPrivateKey=True, but the key was neither opened nor compared.
    RECORDED_ONLY = "recorded_only"
    # CryptoAPI returned a cached key handle, which it does not compare with the certificate.
    NOT_COMPARED = "not_compared"
    # Any other failure. StoreEntry.error_code contains the code.
    FAILED = "failed"


@dataclass(frozen=True)
class StoreEntry:
    """One certificate of a trust store. ``error_code`` is the CryptoAPI code behind ``key_state``, if any."""

    der: bytes
    friendly_name: str | None
    key_state: KeyState
    error_code: int | None = None


@dataclass
class StoreListing:
    """The certificates read from one trust store, with the problems and notes of that read."""

    entries: list[StoreEntry] = field(default_factory=list)
    errors: list[CollectionError] = field(default_factory=list)
    notes: list[CollectionNote] = field(default_factory=list)


class StoreBackend(Protocol):
    """Reader of one trust store. Failures become errors in the listing, not exceptions."""

    def read_store(self, store: TrustStore) -> StoreListing: ...


def _error(store: TrustStore, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=store.name, step=step, message=message)


def thumbprint(der: bytes) -> str:
    """Return the Windows thumbprint of encoded certificate bytes: their SHA-1 as upper-case hex."""
    return hashlib.sha1(der).hexdigest().upper()


# --- collecting facts ---------------------------------------------------------------------------


def collect_windows(
    trust_stores: Sequence[str], signers: Sequence[Signer], *, backend: StoreBackend | None = None
) -> SourceResult:
    """Collect the certificates of the named trust stores and whether the device has each private key.

    ``backend`` defaults to ``default_backend()``, which is built only when
    some name is a known trust store. An unknown name is an error entry.
    """
    result = SourceResult()
    stores: list[TrustStore] = []
    for name in dict.fromkeys(trust_stores):
        store = TRUST_STORES.get(name)
        if store is None:
            valid = ", ".join(TRUST_STORES)
            message = f"unknown Windows trust store {name!r}; valid trust stores: {valid}"
            result.errors.append(CollectionError(source=SOURCE, location=name, step="open", message=message))
        else:
            stores.append(store)
    if not stores:
        return result

    store_backend = backend if backend is not None else default_backend()
    for store in stores:
        listing = store_backend.read_store(store)
        result.errors.extend(listing.errors)
        result.notes.extend(listing.notes)
        for entry in listing.entries:
            _add_certificate(result, store, entry, signers)
    return result


def _add_certificate(
    result: SourceResult, store: TrustStore, entry: StoreEntry, signers: Sequence[Signer]
) -> None:
    where = f"certificate with thumbprint {thumbprint(entry.der)} in {store.path}"
    source = CertificateSource(type="windows", location=store.name, label=entry.friendly_name)
    try:
        cert = load_certificate(entry.der, "der")
        facts = certificate_facts(cert, source, private_key_facts(store, entry), signers)
    except CertificateError as exc:
        result.errors.append(_error(store, exc.step, f"{where}: {exc.message}"))
        return
    result.certificates.append(facts)


_KEY_STATUSES: Final[dict[KeyState, PrivateKeyStatus]] = {
    KeyState.PRESENT: "present",
    KeyState.NOT_RECORDED: "missing",
    KeyState.MISSING: "missing",
    KeyState.ACCESS_DENIED: "unverified",
    KeyState.MISMATCH: "unverified",
    KeyState.RECORDED_ONLY: "unverified",
    KeyState.NOT_COMPARED: "unverified",
    KeyState.FAILED: "unverified",
}


def private_key_facts(store: TrustStore, entry: StoreEntry) -> PrivateKey:
    """Turn a key state into private-key facts. Only a key opened and compared is ``present``."""
    status = _KEY_STATUSES[entry.key_state]
    if status == "present":
        return PrivateKey(present=True, status="present", location=store.name)
    return PrivateKey(present=False, status=status, location=store.name, reason=_key_reason(store, entry))


def _key_reason(store: TrustStore, entry: StoreEntry) -> str:
    """Say what the backend saw and how to fix it, for every state but ``PRESENT``."""
    state = entry.key_state
    code = describe_error_code(entry.error_code) if entry.error_code is not None else "no error code"
    recorded_key = f"the private key recorded for this certificate in {store.path}"

    if state is KeyState.NOT_RECORDED:
        return (
            f"{store.path} records no private key for this certificate. Import the certificate together "
            "with its private key, for example from a PFX file with Import-PfxCertificate."
        )
    if state is KeyState.MISSING:
        return (
            f"{store.path} records a private key for this certificate, but the key was not found ({code}). "
            "Import the certificate again together with its private key."
        )
    if state is KeyState.ACCESS_DENIED:
        return f"{recorded_key} could not be opened: access denied ({code}). {_access_fix(store)}"
    if state is KeyState.MISMATCH:
        return (
            f"{recorded_key} belongs to a different public key ({code}). Import the certificate again "
            "together with its own private key."
        )
    if state is KeyState.RECORDED_ONLY:
        return (
            f"PowerShell reports HasPrivateKey=True for this certificate in {store.path}: the store records "
            "a link to a private key, but the key was not opened or compared with the certificate's public "
            "key, so it does not count as present. Run the collector with a Windows build of Python, which "
            "opens the key through CryptoAPI."
        )
    if state is KeyState.NOT_COMPARED:
        return (
            f"CryptoAPI returned a cached handle for {recorded_key}, and it does not compare a cached key "
            "with the certificate's public key."
        )

    if entry.error_code == NTE_SILENT_CONTEXT:
        return (
            f"{recorded_key} cannot be opened without user interaction ({code}), for example a smart card "
            "PIN or strong key protection. The collector opens keys silently, so the key was not compared "
            "with the certificate."
        )
    return (
        f"{recorded_key} could not be checked ({code}). Check that the key's provider is installed and "
        "that its smart card or token is present."
    )


def _access_fix(store: TrustStore) -> str:
    if store.location_flag == CERT_SYSTEM_STORE_LOCAL_MACHINE:
        return (
            "Run the collector as an administrator or as SYSTEM, or give its account read permission "
            "on the key (certlm.msc, All Tasks, Manage Private Keys)."
        )
    return f"Run the collector as the user who owns {store.path}."


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
            listing.errors.append(_error(store, "open", _open_failure_message(store, exc.code)))
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
                        listing.errors.append(_error(store, "read", message))
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
        return f"{failure}: access denied. {_access_fix(store)}"
    return failure


# --- PowerShell backend -------------------------------------------------------------------------

POWERSHELL = "powershell.exe"

# Windows PowerShell encodes its output in the console code page unless [Console]::OutputEncoding
# is set. A UTF8Encoding built with $false writes no byte order mark, but the parser accepts one.
_POWERSHELL_PREAMBLE: Final = (
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false",
)

_UTF8_BOM: Final = "\ufeff"


def powershell_argv(*statements: str) -> list[str]:
    """Build a ``powershell.exe`` command line that runs the statements after setting UTF-8 output.

    The statements contain no double quotes, which ``powershell.exe
    -Command`` would strip from its command line.
    """
    script = "; ".join((*_POWERSHELL_PREAMBLE, *statements))
    return [POWERSHELL, "-NoProfile", "-NonInteractive", "-Command", script]


def certificate_listing_script(store: TrustStore) -> str:
    """Return the PowerShell statement that prints the store's certificates as compressed JSON."""
    return (
        f"Get-ChildItem -Path '{store.path}' | ForEach-Object {{ "
        "[pscustomobject]@{ RawData = [Convert]::ToBase64String($_.RawData); Thumbprint = $_.Thumbprint; "
        "HasPrivateKey = $_.HasPrivateKey; FriendlyName = $_.FriendlyName } } | ConvertTo-Json -Compress"
    )


def decode_powershell_json(output: bytes) -> object | None:
    """Parse what ``ConvertTo-Json`` printed, or return None for empty output.

    Raises ValueError when the output is not UTF-8 or not JSON. A leading
    UTF-8 byte order mark is skipped.
    """
    try:
        text = output.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the output is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    text = text.removeprefix(_UTF8_BOM).strip()
    if not text:
        return None
    try:
        document: object = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the output is not valid JSON ({exc})") from None
    return document


def json_type(value: object) -> str:
    """Name the JSON type of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class PowerShellBackend:
    """Reads a trust store with ``Get-ChildItem Cert:\\...\\My``, leaving every private key unverified.

    ``fallback_reason``, the reason CryptoAPI was not used, goes into the
    note added to every listing.
    """

    def __init__(self, run: Runner = run_command, fallback_reason: str | None = None) -> None:
        self._run = run
        self._fallback_reason = fallback_reason

    def read_store(self, store: TrustStore) -> StoreListing:
        listing = StoreListing(notes=[self._note(store)])
        try:
            output = self._run(powershell_argv(certificate_listing_script(store)))
        except CommandError as exc:
            listing.errors.append(_error(store, "command", f"listing {store.path} failed: {exc.message}"))
            return listing
        entries, errors = parse_certificate_listing(output, store)
        listing.entries.extend(entries)
        listing.errors.extend(errors)
        return listing

    def _note(self, store: TrustStore) -> CollectionNote:
        because = f" because {self._fallback_reason}" if self._fallback_reason else ""
        message = (
            f"{store.path} was read with PowerShell{because}. PowerShell's HasPrivateKey only shows that "
            "the store records a link to a private key. The key is not opened or compared with the "
            "certificate, so such keys are reported unverified, never present."
        )
        return CollectionNote(source=SOURCE, location=store.name, message=message)


def parse_certificate_listing(
    output: bytes, store: TrustStore
) -> tuple[list[StoreEntry], list[CollectionError]]:
    """Parse the JSON of ``certificate_listing_script``: nothing, one object, or a list of objects.

    ``ConvertTo-Json`` prints nothing for an empty store and a single
    object, not a list, for a store with one certificate. A certificate
    that cannot be read is an error entry, and the others are still returned.
    """
    try:
        document = decode_powershell_json(output)
    except ValueError as exc:
        message = f"the PowerShell listing of {store.path} could not be read: {exc}"
        return [], [_error(store, "parse", message)]
    if document is None:
        return [], []
    if isinstance(document, dict):
        items: list[object] = [document]
    elif isinstance(document, list):
        items = document
    else:
        message = (
            f"the PowerShell listing of {store.path} is a JSON {json_type(document)}, "
            "not an object or a list of objects"
        )
        return [], [_error(store, "parse", message)]

    entries: list[StoreEntry] = []
    errors: list[CollectionError] = []
    for index, item in enumerate(items, start=1):
        try:
            entries.append(_parse_listed_certificate(item))
        except ValueError as exc:
            message = f"certificate {index} of {len(items)} in the PowerShell listing of {store.path}: {exc}"
            errors.append(_error(store, "parse", message))
    return entries, errors


def _parse_listed_certificate(item: object) -> StoreEntry:
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, found a JSON {json_type(item)}")
    der = _raw_data(item.get("RawData"))

    listed_thumbprint = item.get("Thumbprint")
    if not isinstance(listed_thumbprint, str):
        raise ValueError("Thumbprint is missing or not a string")
    actual = thumbprint(der)
    if listed_thumbprint.upper() != actual:
        raise ValueError(
            f"Thumbprint {listed_thumbprint} does not match the SHA-1 of RawData ({actual}); "
            "the output may be truncated or corrupted"
        )

    has_private_key = item.get("HasPrivateKey")
    if not isinstance(has_private_key, bool):
        raise ValueError(f"certificate {actual}: HasPrivateKey is missing or not true or false")

    friendly_name = item.get("FriendlyName")
    if friendly_name is not None and not isinstance(friendly_name, str):
        raise ValueError(f"certificate {actual}: FriendlyName is not a string")

    key_state = KeyState.RECORDED_ONLY if has_private_key else KeyState.NOT_RECORDED
    return StoreEntry(der=der, friendly_name=friendly_name or None, key_state=key_state)


def _raw_data(value: object) -> bytes:
    """Decode RawData: base64 text, or the list of byte values ``ConvertTo-Json`` makes of a byte array."""
    if isinstance(value, str):
        try:
            der = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"RawData is not valid base64 ({exc})") from None
    elif isinstance(value, list):
        if not all(type(number) is int and 0 <= number <= 255 for number in value):
            raise ValueError("RawData is a list, but not of byte values 0-255")
        der = bytes(value)
    else:
        raise ValueError("RawData is missing or neither base64 text nor a list of byte values")
    if not der:
        raise ValueError("RawData is empty")
    return der


# --- backend choice -----------------------------------------------------------------------------


def default_backend(run: Runner = run_command) -> StoreBackend:
    """Pick the CryptoAPI backend where ctypes can load it, else the PowerShell backend."""
    if not hasattr(ctypes, "windll"):
        reason = "this Python has no ctypes.windll, so it cannot call CryptoAPI"
        logger.debug("reading Windows certificate stores with PowerShell: %s", reason)
        return PowerShellBackend(run, fallback_reason=reason)
    try:
        api = load_crypto_api()
    except (OSError, AttributeError) as exc:
        reason = f"CryptoAPI could not be loaded ({exc})"
        logger.warning("reading Windows certificate stores with PowerShell: %s", reason)
        return PowerShellBackend(run, fallback_reason=reason)
    return CryptoApiBackend(api)
