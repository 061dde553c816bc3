"""Stand-ins for Windows: a fake CryptoAPI, a fake store backend and PowerShell output.

``FakeCryptoApi`` implements the ``CryptoApi`` protocol in Python with real
ctypes structures: each certificate context is a ``CERT_CONTEXT`` whose
``pbCertEncoded`` points at the DER bytes, and output parameters are written
through the ``ctypes.pointer`` objects the backend passes. It follows the
documented behaviour the backend relies on (CertEnumCertificatesInStore frees
the previous context, even when it fails) and records every handle, so a test
can check that each one was released exactly once.

The PowerShell helpers print what ``ConvertTo-Json -Compress`` prints in
Windows PowerShell 5.1: nothing for no input, one object for one input, a
list for several, ``<``, ``>``, ``&`` and ``'`` escaped as ``\\u003c`` and
so on, and a CRLF line end.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import stat
import sys
from collections.abc import Sequence
from ctypes import wintypes
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collector.commands import CommandError, command_text
from collector.facts import Certificate
from collector.sources import SourceResult
from collector.sources.windows import (
    CRYPT_E_NO_KEY_PROPERTY,
    CRYPT_E_NOT_FOUND,
    ERROR_MORE_DATA,
    TRUST_STORES,
    StoreListing,
    TrustStore,
)
from collector.sources.windows_cryptoapi import (
    CERT_CONTEXT,
    CERT_FRIENDLY_NAME_PROP_ID,
    CERT_KEY_PROV_INFO_PROP_ID,
    CERT_NCRYPT_KEY_SPEC,
    CERT_STORE_PROV_SYSTEM_W,
    CryptoApiError,
)
from tests.certgen import CertKey

X509_ASN_ENCODING = 1

# Stands in for a serialized CRYPT_KEY_PROV_INFO. The backend reads only its size.
_KEY_PROV_INFO = bytes(48)


class InjectedFailure(RuntimeError):
    """The exception a ``FakeCryptoApi`` raises where a test requests one."""


@dataclass(frozen=True)
class FakeKey:
    """The fake CryptoAPI's behaviour for a certificate's private key.

    ``recorded`` False means no CERT_KEY_PROV_INFO_PROP_ID property.
    ``property_error`` makes reading that property fail with the code.
    ``acquire_error`` makes CryptAcquireCertificatePrivateKey fail with the code.
    ``key_spec`` and ``caller_free`` are what a successful acquisition returns.
    """

    recorded: bool = True
    property_error: int | None = None
    acquire_error: int | None = None
    key_spec: int = CERT_NCRYPT_KEY_SPEC
    caller_free: bool = True


NO_KEY = FakeKey(recorded=False)


@dataclass(frozen=True)
class FakeCertificate:
    der: bytes
    friendly_name: str | None = None
    key: FakeKey = FakeKey()


@dataclass
class FakeStore:
    """A system store's certificates, and failures the fake returns for it.

    ``open_error`` makes CertOpenStore fail. ``enumeration_error`` is
    ``(index, code)``: enumerating the certificate at that index fails.
    """

    certificates: list[FakeCertificate] = field(default_factory=list)
    open_error: int | None = None
    enumeration_error: tuple[int, int] | None = None


@dataclass
class _LiveContext:
    store: int
    index: int
    context: CERT_CONTEXT
    buffer: ctypes.Array[ctypes.c_ubyte]


class FakeCryptoApi:
    """CryptoAPI over in-memory stores keyed by system store location flag.

    ``raise_at`` is ``(function name, certificate index)``: that call raises
    ``InjectedFailure``, as an unexpected exception in the middle of an
    enumeration would.
    """

    def __init__(self, stores: dict[int, FakeStore], *, raise_at: tuple[str, int] | None = None) -> None:
        self.stores = stores
        self.raise_at = raise_at
        self.open_calls: list[tuple[int, int, int | None, int, str]] = []
        self.acquire_flags: list[int] = []
        self.open_stores: dict[int, FakeStore] = {}
        self.closed_stores: list[int] = []
        self.live_contexts: dict[int, _LiveContext] = {}
        self.contexts_created = 0
        self.live_keys: dict[int, int] = {}
        self.keys_acquired = 0
        self.ncrypt_freed: list[int] = []
        self.capi_released: list[int] = []
        self.fail_release_with: int | None = None
        self.problems: list[str] = []
        self._next_handle = 0x1000

    def leaks(self) -> list[str]:
        """Describe every store, context or key handle still open, and every misuse seen."""
        found = list(self.problems)
        found += [f"store handle {handle:#x} not closed" for handle in self.open_stores]
        found += [
            f"certificate context {live.index} of store {live.store:#x} not freed"
            for live in self.live_contexts.values()
        ]
        found += [f"key handle {handle:#x} not released" for handle in self.live_keys]
        return found

    def _handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    def _maybe_raise(self, function: str, index: int) -> None:
        if self.raise_at == (function, index):
            raise InjectedFailure(f"injected failure in {function} for certificate {index}")

    def _live(self, context: ctypes._Pointer[CERT_CONTEXT], function: str) -> _LiveContext:
        live = self.live_contexts.get(ctypes.addressof(context.contents))
        if live is None:
            self.problems.append(f"{function} was given a context that is not live")
            raise CryptoApiError(function, 0x80070057)  # E_INVALIDARG
        return live

    def CertOpenStore(
        self, provider: int, encoding_type: int, crypt_provider: int | None, flags: int, parameter: str, /
    ) -> int:
        self.open_calls.append((provider, encoding_type, crypt_provider, flags, parameter))
        if provider != CERT_STORE_PROV_SYSTEM_W or parameter != "My":
            self.problems.append(f"CertOpenStore called with provider {provider} and store {parameter!r}")
        store = self.stores.get(flags & 0x00FF_0000)
        if store is None:
            raise CryptoApiError("CertOpenStore", 0x2)  # ERROR_FILE_NOT_FOUND
        if store.open_error is not None:
            raise CryptoApiError("CertOpenStore", store.open_error)
        handle = self._handle()
        self.open_stores[handle] = store
        return handle

    def CertCloseStore(self, store: int, flags: int, /) -> int:
        if store not in self.open_stores:
            self.problems.append(f"store handle {store:#x} closed but not open")
        self.open_stores.pop(store, None)
        self.closed_stores.append(store)
        return 1

    def CertEnumCertificatesInStore(
        self, store: int, previous: ctypes._Pointer[CERT_CONTEXT] | None, /
    ) -> ctypes._Pointer[CERT_CONTEXT]:
        fake_store = self.open_stores.get(store)
        if fake_store is None:
            self.problems.append(f"enumerating store handle {store:#x}, which is not open")
            raise CryptoApiError("CertEnumCertificatesInStore", 0x80070057)
        index = 0
        if previous is not None:
            index = self._live(previous, "CertEnumCertificatesInStore").index + 1
        # Raised before the previous context is freed, as a failure before the native call would be.
        self._maybe_raise("CertEnumCertificatesInStore", index)
        if previous is not None:
            # Documented: the previous context is freed, even when this call fails.
            self.CertFreeCertificateContext(previous)
        if fake_store.enumeration_error is not None and fake_store.enumeration_error[0] == index:
            raise CryptoApiError("CertEnumCertificatesInStore", fake_store.enumeration_error[1])
        if index >= len(fake_store.certificates):
            raise CryptoApiError("CertEnumCertificatesInStore", CRYPT_E_NOT_FOUND)

        der = fake_store.certificates[index].der
        buffer = (ctypes.c_ubyte * len(der)).from_buffer_copy(der)
        context = CERT_CONTEXT(
            dwCertEncodingType=X509_ASN_ENCODING,
            pbCertEncoded=ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ubyte)),
            cbCertEncoded=len(der),
            pCertInfo=None,
            hCertStore=store,
        )
        self.live_contexts[ctypes.addressof(context)] = _LiveContext(store, index, context, buffer)
        self.contexts_created += 1
        return ctypes.pointer(context)

    def CertFreeCertificateContext(self, context: ctypes._Pointer[CERT_CONTEXT], /) -> int:
        address = ctypes.addressof(context.contents)
        if address not in self.live_contexts:
            self.problems.append("a certificate context was freed twice or was never returned")
        self.live_contexts.pop(address, None)
        return 1

    def CertGetCertificateContextProperty(
        self,
        context: ctypes._Pointer[CERT_CONTEXT],
        property_id: int,
        data: ctypes.Array[ctypes.c_char] | None,
        size: ctypes._Pointer[wintypes.DWORD],
        /,
    ) -> int:
        function = "CertGetCertificateContextProperty"
        live = self._live(context, function)
        self._maybe_raise(function, live.index)
        certificate = self.open_stores[live.store].certificates[live.index]
        value = self._property(certificate, property_id)
        if data is None:
            size.contents.value = len(value)
            return 1
        if size.contents.value < len(value):
            size.contents.value = len(value)
            raise CryptoApiError(function, ERROR_MORE_DATA)
        ctypes.memmove(data, value, len(value))
        size.contents.value = len(value)
        return 1

    def _property(self, certificate: FakeCertificate, property_id: int) -> bytes:
        function = "CertGetCertificateContextProperty"
        if property_id == CERT_KEY_PROV_INFO_PROP_ID:
            if certificate.key.property_error is not None:
                raise CryptoApiError(function, certificate.key.property_error)
            if not certificate.key.recorded:
                raise CryptoApiError(function, CRYPT_E_NOT_FOUND)
            return _KEY_PROV_INFO
        if property_id == CERT_FRIENDLY_NAME_PROP_ID:
            if certificate.friendly_name is None:
                raise CryptoApiError(function, CRYPT_E_NOT_FOUND)
            return (certificate.friendly_name + "\x00").encode("utf-16-le")
        raise CryptoApiError(function, CRYPT_E_NOT_FOUND)

    def CryptAcquireCertificatePrivateKey(
        self,
        context: ctypes._Pointer[CERT_CONTEXT],
        flags: int,
        parameters: None,
        key: ctypes._Pointer[ctypes.c_size_t],
        key_spec: ctypes._Pointer[wintypes.DWORD],
        caller_free: ctypes._Pointer[wintypes.BOOL],
        /,
    ) -> int:
        function = "CryptAcquireCertificatePrivateKey"
        live = self._live(context, function)
        self.acquire_flags.append(flags)
        self._maybe_raise(function, live.index)
        fake_key = self.open_stores[live.store].certificates[live.index].key
        if not fake_key.recorded:
            raise CryptoApiError(function, CRYPT_E_NO_KEY_PROPERTY)
        if fake_key.acquire_error is not None:
            raise CryptoApiError(function, fake_key.acquire_error)

        handle = self._handle()
        key.contents.value = handle
        key_spec.contents.value = fake_key.key_spec
        caller_free.contents.value = 1 if fake_key.caller_free else 0
        self.keys_acquired += 1
        if fake_key.caller_free:
            self.live_keys[handle] = fake_key.key_spec
        return 1

    def NCryptFreeObject(self, handle: int, /) -> int:
        self._release(handle, "NCryptFreeObject", ncrypt=True)
        self.ncrypt_freed.append(handle)
        return 0

    def CryptReleaseContext(self, provider: int, flags: int, /) -> int:
        self._release(provider, "CryptReleaseContext", ncrypt=False)
        self.capi_released.append(provider)
        return 1

    def _release(self, handle: int, function: str, *, ncrypt: bool) -> None:
        key_spec = self.live_keys.pop(handle, None)
        if key_spec is None:
            self.problems.append(f"{function} released key handle {handle:#x}, which is not live")
        elif (key_spec == CERT_NCRYPT_KEY_SPEC) != ncrypt:
            self.problems.append(f"{function} released a key handle of key spec {key_spec:#x}")
        if self.fail_release_with is not None:
            raise CryptoApiError(function, self.fail_release_with)


class FakeStoreBackend:
    """A ``StoreBackend`` that returns prepared listings and records which stores were read."""

    def __init__(self, listings: dict[str, StoreListing]) -> None:
        self.listings = listings
        self.read: list[str] = []

    def read_store(self, store: TrustStore) -> StoreListing:
        self.read.append(store.name)
        return self.listings.get(store.name, StoreListing())


@dataclass(frozen=True)
class ListedCertificate:
    """One certificate as the PowerShell listing script prints it.

    ``thumbprint`` replaces the real SHA-1. ``raw_data`` replaces the base64
    text, for example with a list of byte values or invalid base64.
    """

    der: bytes
    has_private_key: bool = False
    friendly_name: str | None = ""
    thumbprint: str | None = None
    raw_data: object = None

    def to_json_object(self) -> dict[str, object]:
        raw_data = self.raw_data if self.raw_data is not None else base64.b64encode(self.der).decode()
        actual = hashlib.sha1(self.der).hexdigest().upper()
        return {
            "RawData": raw_data,
            "Thumbprint": self.thumbprint if self.thumbprint is not None else actual,
            "HasPrivateKey": self.has_private_key,
            "FriendlyName": self.friendly_name,
        }


def convert_to_json_compress(value: object) -> str:
    """Serialize as Windows PowerShell 5.1 ``ConvertTo-Json -Compress`` does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(character, escape)
    return text


def powershell_output(objects: Sequence[object], *, bom: bool = False) -> bytes:
    """Print objects piped into ``ConvertTo-Json -Compress``: nothing, one object, or a list."""
    if not objects:
        return b""
    value = objects[0] if len(objects) == 1 else list(objects)
    prefix = b"\xef\xbb\xbf" if bom else b""
    return prefix + convert_to_json_compress(value).encode("utf-8") + b"\r\n"


def certificate_listing_output(certificates: Sequence[ListedCertificate], *, bom: bool = False) -> bytes:
    return powershell_output([certificate.to_json_object() for certificate in certificates], bom=bom)


def identity_output(
    *,
    serial_number: object = "PF2ABC12",
    caption: object = "Microsoft Windows 11 Pro",
    version: object = "10.0.22631",
    user_sid: object = "S-1-5-21-1004336348-1177238915-682003330-1001",
    bios_error: str | None = None,
    operating_system_error: str | None = None,
    user_sid_error: str | None = None,
    bom: bool = False,
) -> bytes:
    """Print what the identity script prints, with its fields in the script's order."""
    document = {
        "SerialNumber": serial_number,
        "BiosError": bios_error,
        "Caption": caption,
        "Version": version,
        "OperatingSystemError": operating_system_error,
        "UserSid": user_sid,
        "UserSidError": user_sid_error,
    }
    return powershell_output([document], bom=bom)


class FakeRunner:
    """A ``Runner`` that records each command line and returns one output or raises one error."""

    def __init__(self, output: bytes = b"", error: str | None = None) -> None:
        self.output = output
        self.error = error
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> bytes:
        self.calls.append(list(argv))
        if self.error is not None:
            raise CommandError(command_text(argv), self.error)
        return self.output


def install_fake_powershell(
    directory: Path, *, stdout: bytes = b"", stderr: bytes = b"", exit_code: int = 0
) -> Path:
    """Write an executable ``powershell.exe`` into ``directory`` that prints fixed output.

    The script runs on the test's own Python interpreter, so it needs a
    POSIX system that honours ``#!`` lines.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "stdout.bin").write_bytes(stdout)
    (directory / "stderr.bin").write_bytes(stderr)
    script = directory / "powershell.exe"
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"folder = pathlib.Path({str(directory)!r})\n"
        "sys.stdout.buffer.write((folder / 'stdout.bin').read_bytes())\n"
        "sys.stderr.buffer.write((folder / 'stderr.bin').read_bytes())\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def path_with(directory: Path) -> str:
    """Return PATH with ``directory`` first."""
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


SYSTEM = TRUST_STORES["system"]
USER = TRUST_STORES["user"]

posix_only = pytest.mark.skipif(os.name != "posix", reason="the fake powershell.exe is a #! script")


def only(result: SourceResult, cert_key: CertKey) -> Certificate:
    """Return the one certificate in ``result`` that is ``cert_key``'s, failing when there is not exactly one."""
    matches = [cert for cert in result.certificates if cert.fingerprint_sha256 == cert_key.fingerprint]
    assert len(matches) == 1, f"expected the certificate once, found {len(matches)}: {result}"
    return matches[0]
