"""Windows certificate stores: ``system`` is ``Cert:\\LocalMachine\\My``, ``user`` is ``Cert:\\CurrentUser\\My``.

This module turns the entries that a backend reads from a store into
certificate facts. Two backends read a store through the same
``StoreBackend`` interface:

- ``windows_cryptoapi.CryptoApiBackend`` calls CryptoAPI through ctypes and
  compares each linked private key with its certificate. Only a key opened
  and compared this way is ``present``.
- ``windows_powershell.PowerShellBackend`` runs ``powershell.exe`` where
  ctypes cannot reach CryptoAPI. Its keys are ``unverified``, never
  ``present``.

The store locations and error codes defined here are shared with the
CryptoAPI backend, because ``TrustStore`` and the key reasons use them.
Constants are the values of the Windows SDK headers wincrypt.h and
winerror.h, checked against public copies of those headers (Wine and others).

NOTE: both backends have run only against the fakes in the tests (a
CryptoAPI written in Python, and output generated in the format of
ConvertTo-Json), never on Windows.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from collector.commands import Runner, run_command
from collector.facts import CertificateSource, CollectionError, CollectionNote, PrivateKey, PrivateKeyStatus
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import CertificateError, certificate_facts, load_certificate

logger = logging.getLogger(__name__)

SOURCE = "windows"

# System store locations, the CertOpenStore flags of TrustStore.location_flag (wincrypt.h).
CERT_SYSTEM_STORE_CURRENT_USER: Final = 0x0001_0000
CERT_SYSTEM_STORE_LOCAL_MACHINE: Final = 0x0002_0000

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


def describe_error_code(code: int) -> str:
    """Format an error code as its winerror.h name, where known, and its hex value."""
    name = ERROR_NAMES.get(code)
    return f"{name} (0x{code:08X})" if name else f"error 0x{code:08X}"


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


def store_error(store: TrustStore, step: str, message: str) -> CollectionError:
    """Build the error entry for a step of reading ``store`` that failed."""
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
        try:
            listing = store_backend.read_store(store)
        except (OSError, ctypes.ArgumentError) as exc:
            # ctypes reports a fault inside a Windows API call (an access violation) as OSError.
            logger.warning("reading %s failed: %s", store.path, exc)
            message = (
                f"reading {store.path} failed: {type(exc).__name__}: {exc}; its certificates were not read"
            )
            result.errors.append(store_error(store, "read", message))
            continue
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
        result.errors.append(store_error(store, exc.step, f"{where}: {exc.message}"))
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
        return f"{recorded_key} could not be opened: access denied ({code}). {access_fix(store)}"
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


def access_fix(store: TrustStore) -> str:
    """Return the fix for an access-denied error in ``store``, as a sentence to end a message with."""
    if store.location_flag == CERT_SYSTEM_STORE_LOCAL_MACHINE:
        return (
            "Run the collector as an administrator or as SYSTEM, or give its account read permission "
            "on the key (certlm.msc, All Tasks, Manage Private Keys)."
        )
    return f"Run the collector as the user who owns {store.path}."


# --- backend choice -----------------------------------------------------------------------------


def default_backend(run: Runner = run_command) -> StoreBackend:
    """Pick the CryptoAPI backend where ctypes can load it, else the PowerShell backend."""
    # The backends import this module, so they are imported here and not at the top.
    from collector.sources.windows_cryptoapi import CryptoApiBackend, load_crypto_api
    from collector.sources.windows_powershell import PowerShellBackend

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
