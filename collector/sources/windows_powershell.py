"""The PowerShell backend for Windows certificate stores, used where ctypes cannot reach CryptoAPI.

``PowerShellBackend`` lists a store with ``powershell.exe``. PowerShell's
``HasPrivateKey`` only shows that the store records a link to a key, so
such keys are ``unverified``, never ``present``.

NOTE: this backend has run only against output generated in the format of
ConvertTo-Json for the tests, never on Windows.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import orjson

from collector.commands import CommandError, Runner, run_command
from collector.facts import CollectionError, CollectionNote
from collector.sources.windows import (
    SOURCE,
    KeyState,
    StoreEntry,
    StoreListing,
    TrustStore,
    store_error,
    thumbprint,
)

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
            message = f"listing {store.path} failed: {exc.message}"
            listing.errors.append(store_error(store, "command", message))
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
        return [], [store_error(store, "parse", message)]
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
        return [], [store_error(store, "parse", message)]

    entries: list[StoreEntry] = []
    errors: list[CollectionError] = []
    for index, item in enumerate(items, start=1):
        try:
            entries.append(_parse_listed_certificate(item))
        except ValueError as exc:
            message = f"certificate {index} of {len(items)} in the PowerShell listing of {store.path}: {exc}"
            errors.append(store_error(store, "parse", message))
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
