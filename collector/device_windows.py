"""Windows device identity: firmware serial number, Windows version and the account the collector runs as.

One PowerShell call reads all three, so the collector starts PowerShell
once. Each query catches its own failure, so a failing Win32_BIOS query
still leaves the Windows version and the account readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from collector.commands import CommandError, Runner, run_command
from collector.device import is_placeholder_serial
from collector.facts import CollectionError, CollectionNote, OperatingSystem
from collector.sources.windows import TRUST_STORES
from collector.sources.windows_powershell import decode_powershell_json, json_type, powershell_argv

SOURCE = "device"

# The well-known SID of the LocalSystem account.
SYSTEM_SID: Final = "S-1-5-18"

BIOS_LOCATION: Final = "Win32_BIOS"
OS_LOCATION: Final = "Win32_OperatingSystem"
ACCOUNT_LOCATION: Final = "WindowsIdentity"
POWERSHELL_LOCATION: Final = "powershell"

# Each try block stores its failure in an *Error field instead of stopping the script.
IDENTITY_STATEMENTS: Final = (
    "$identity = [ordered]@{ SerialNumber = $null; BiosError = $null; Caption = $null; Version = $null; "
    "OperatingSystemError = $null; UserSid = $null; UserSidError = $null }",
    "try { $identity.SerialNumber = (Get-CimInstance -ClassName Win32_BIOS).SerialNumber } "
    "catch { $identity.BiosError = $_.Exception.Message }",
    "try { $os = Get-CimInstance -ClassName Win32_OperatingSystem; $identity.Caption = $os.Caption; "
    "$identity.Version = $os.Version } catch { $identity.OperatingSystemError = $_.Exception.Message }",
    "try { $identity.UserSid = [Security.Principal.WindowsIdentity]::GetCurrent().User.Value } "
    "catch { $identity.UserSidError = $_.Exception.Message }",
    "[pscustomobject]$identity | ConvertTo-Json -Compress",
)


@dataclass(frozen=True)
class WindowsIdentity:
    """Device identity as Windows reports it.

    A value that could not be read is None, with an entry in ``errors``.
    """

    serial_number: str | None
    os: OperatingSystem
    running_as_system: bool | None
    errors: list[CollectionError]


def _error(location: str, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=location, step=step, message=message)


def read_windows_identity(run: Runner = run_command) -> WindowsIdentity:
    """Read the serial number, Windows version and account SID with one PowerShell call."""
    try:
        output = run(powershell_argv(*IDENTITY_STATEMENTS))
    except CommandError as exc:
        message = (
            f"the device identity (serial number, Windows version, account) could not be read: {exc.message}"
        )
        return _unknown_identity(_error(POWERSHELL_LOCATION, "command", message))
    try:
        document = decode_powershell_json(output)
    except ValueError as exc:
        return _unknown_identity(
            _error(POWERSHELL_LOCATION, "parse", f"the identity output is invalid: {exc}")
        )
    if not isinstance(document, dict):
        found = "nothing" if document is None else f"a JSON {json_type(document)}"
        message = f"the identity output is invalid: expected a JSON object, found {found}"
        return _unknown_identity(_error(POWERSHELL_LOCATION, "parse", message))

    errors: list[CollectionError] = []
    serial_number = _serial_number(document, errors)
    operating_system = _operating_system(document, errors)
    running_as_system = _running_as_system(document, errors)
    return WindowsIdentity(serial_number, operating_system, running_as_system, errors)


def _unknown_identity(error: CollectionError) -> WindowsIdentity:
    return WindowsIdentity(
        serial_number=None,
        os=OperatingSystem(family="windows", name="Windows", version="unknown"),
        running_as_system=None,
        errors=[error],
    )


def _text(value: object) -> str | None:
    """Return a stripped string field, the first item of a list (one per CIM instance), or None."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _serial_number(document: dict[str, object], errors: list[CollectionError]) -> str | None:
    fix = "Pass --serial-number with the device's serial number."
    failure = _text(document.get("BiosError"))
    if failure is not None:
        errors.append(_error(BIOS_LOCATION, "identity", f"the Win32_BIOS query failed: {failure}. {fix}"))
        return None
    raw = document.get("SerialNumber")
    if isinstance(raw, list) and len({item.strip() for item in raw if isinstance(item, str)}) > 1:
        # One serial number per Win32_BIOS instance; with differing ones there is no telling which is the device's.
        message = f"Win32_BIOS reports several serial numbers {raw!r}. {fix}"
        errors.append(_error(BIOS_LOCATION, "identity", message))
        return None
    value = _text(raw)
    if value is None:
        message = f"Win32_BIOS reports no SerialNumber. {fix}"
        errors.append(_error(BIOS_LOCATION, "identity", message))
        return None
    if is_placeholder_serial(value):
        message = f"Win32_BIOS SerialNumber {value!r} is a firmware placeholder, not a serial number. {fix}"
        errors.append(_error(BIOS_LOCATION, "identity", message))
        return None
    return value


def _operating_system(document: dict[str, object], errors: list[CollectionError]) -> OperatingSystem:
    # Caption is the product name, such as "Microsoft Windows 11 Pro", and Version
    # the build, such as "10.0.22631".
    name = _text(document.get("Caption"))
    version = _text(document.get("Version"))
    failure = _text(document.get("OperatingSystemError"))
    if failure is not None:
        errors.append(_error(OS_LOCATION, "identity", f"the Win32_OperatingSystem query failed: {failure}"))
    elif name is None or version is None:
        missing = " and ".join(
            field for field, value in (("Caption", name), ("Version", version)) if value is None
        )
        errors.append(_error(OS_LOCATION, "identity", f"Win32_OperatingSystem reports no {missing}"))
    return OperatingSystem(family="windows", name=name or "Windows", version=version or "unknown")


def _running_as_system(document: dict[str, object], errors: list[CollectionError]) -> bool | None:
    failure = _text(document.get("UserSidError"))
    sid = _text(document.get("UserSid"))
    if failure is not None or sid is None:
        detail = f": {failure}" if failure is not None else ""
        message = f"the SID of the account running the collector could not be read{detail}"
        errors.append(_error(ACCOUNT_LOCATION, "identity", message))
        return None
    return sid == SYSTEM_SID


def system_account_note() -> CollectionNote:
    """Explain that the ``user`` trust store of the SYSTEM account is not the signed-in user's store."""
    user_store = TRUST_STORES["user"]
    message = (
        f"the collector runs as SYSTEM ({SYSTEM_SID}), so the user trust store {user_store.path} is "
        "SYSTEM's own store, not the store of the user signed in to the device. Run the collector as "
        "that user to check the user's certificates."
    )
    return CollectionNote(source="windows", location=user_store.name, message=message)
