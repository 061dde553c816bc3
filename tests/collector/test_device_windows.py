"""Windows device identity, parsed from the output of the identity PowerShell script."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.device_windows import (
    SYSTEM_SID,
    WindowsIdentity,
    read_windows_identity,
    system_account_note,
)
from collector.facts import CollectionError
from tests.collector.windows_fakes import (
    FakeRunner,
    identity_output,
    install_fake_powershell,
    path_with,
    powershell_output,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="the fake powershell.exe is a #! script")


def identity_from(output: bytes) -> WindowsIdentity:
    return read_windows_identity(FakeRunner(output))


def errors_at(identity: WindowsIdentity, location: str) -> list[CollectionError]:
    return [error for error in identity.errors if error.location == location]


def test_identity_fields() -> None:
    identity = identity_from(identity_output())
    assert identity.serial_number == "PF2ABC12"
    assert identity.os.family == "windows"
    assert identity.os.name == "Microsoft Windows 11 Pro"
    assert identity.os.version == "10.0.22631"
    assert identity.running_as_system is False
    assert identity.errors == []


def test_identity_as_system() -> None:
    identity = identity_from(identity_output(user_sid=SYSTEM_SID))
    assert identity.running_as_system is True
    assert identity.errors == []


def test_local_service_is_not_system() -> None:
    assert identity_from(identity_output(user_sid="S-1-5-19")).running_as_system is False


def test_identity_command_line() -> None:
    runner = FakeRunner(identity_output())
    read_windows_identity(runner)
    [argv] = runner.calls
    assert argv[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
    script = argv[4]
    assert "(Get-CimInstance -ClassName Win32_BIOS).SerialNumber" in script
    assert "Get-CimInstance -ClassName Win32_OperatingSystem" in script
    assert "$os.Caption" in script
    assert "$os.Version" in script
    assert "[Security.Principal.WindowsIdentity]::GetCurrent().User.Value" in script
    assert "ConvertTo-Json -Compress" in script
    assert "UTF8Encoding" in script
    assert '"' not in script


@pytest.mark.parametrize(
    "placeholder",
    ["To be filled by O.E.M.", "Default string", "0", "  ", "XXXXXXXX", "Not Defined", "0123456789ABCDEF"],
)
def test_placeholder_serial_rejected(placeholder: str) -> None:
    identity = identity_from(identity_output(serial_number=placeholder))
    assert identity.serial_number is None
    [error] = identity.errors
    assert error.source == "device"
    assert error.location == "Win32_BIOS"
    assert error.step == "identity"
    assert "--serial-number" in error.message


def test_several_serial_numbers_rejected() -> None:
    identity = identity_from(identity_output(serial_number=["PF2ABC12", "OTHER999"]))

    assert identity.serial_number is None
    [error] = identity.errors
    assert error.location == "Win32_BIOS"
    assert "several serial numbers ['PF2ABC12', 'OTHER999']" in error.message


def test_repeated_serial_number_accepted() -> None:
    assert identity_from(identity_output(serial_number=["PF2ABC12", "PF2ABC12"])).serial_number == "PF2ABC12"


def test_placeholder_named_in_message() -> None:
    [error] = identity_from(identity_output(serial_number="Default string")).errors
    assert "'Default string' is a firmware placeholder" in error.message


def test_missing_serial_is_error() -> None:
    identity = identity_from(identity_output(serial_number=None))
    assert identity.serial_number is None
    [error] = errors_at(identity, "Win32_BIOS")
    assert "no SerialNumber" in error.message
    assert "--serial-number" in error.message


def test_serial_whitespace_stripped() -> None:
    assert identity_from(identity_output(serial_number="  PF2ABC12 ")).serial_number == "PF2ABC12"


def test_bios_query_failure() -> None:
    identity = identity_from(identity_output(serial_number=None, bios_error="Access denied"))
    assert identity.serial_number is None
    [error] = identity.errors
    assert error.location == "Win32_BIOS"
    assert "Win32_BIOS query failed: Access denied" in error.message
    assert identity.os.name == "Microsoft Windows 11 Pro"
    assert identity.running_as_system is False


def test_caption_trailing_space_stripped() -> None:
    identity = identity_from(identity_output(caption="Microsoft Windows 7 Professional "))
    assert identity.os.name == "Microsoft Windows 7 Professional"


def test_operating_system_query_failure() -> None:
    identity = identity_from(
        identity_output(caption=None, version=None, operating_system_error="Invalid class")
    )
    assert identity.os.family == "windows"
    assert identity.os.name == "Windows"
    assert identity.os.version == "unknown"
    [error] = errors_at(identity, "Win32_OperatingSystem")
    assert error.step == "identity"
    assert "Invalid class" in error.message
    assert identity.serial_number == "PF2ABC12"


def test_missing_version_is_error() -> None:
    identity = identity_from(identity_output(version=None))
    assert identity.os.name == "Microsoft Windows 11 Pro"
    assert identity.os.version == "unknown"
    [error] = errors_at(identity, "Win32_OperatingSystem")
    assert "no Version" in error.message


@pytest.mark.parametrize(("sid", "failure"), [(None, None), (None, "Token unavailable"), ("", None)])
def test_unreadable_sid(sid: str | None, failure: str | None) -> None:
    identity = identity_from(identity_output(user_sid=sid, user_sid_error=failure))
    assert identity.running_as_system is None
    [error] = errors_at(identity, "WindowsIdentity")
    assert error.step == "identity"
    if failure is not None:
        assert failure in error.message
    assert identity.serial_number == "PF2ABC12"


def test_byte_order_mark_accepted() -> None:
    identity = identity_from(identity_output(bom=True))
    assert identity.serial_number == "PF2ABC12"
    assert identity.errors == []


def test_command_failure() -> None:
    identity = read_windows_identity(FakeRunner(error="powershell.exe was not found on PATH"))
    assert identity.serial_number is None
    assert identity.running_as_system is None
    assert identity.os.family == "windows"
    assert identity.os.version == "unknown"
    [error] = identity.errors
    assert error.source == "device"
    assert error.location == "powershell"
    assert error.step == "command"
    assert "powershell.exe was not found on PATH" in error.message


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        (b"{broken", "not valid JSON"),
        (b"", "found nothing"),
        (powershell_output([["PF2ABC12"], ["x"]]), "found a JSON array"),
    ],
)
def test_unreadable_output(output: bytes, fragment: str) -> None:
    identity = identity_from(output)
    assert identity.serial_number is None
    [error] = identity.errors
    assert error.location == "powershell"
    assert error.step == "parse"
    assert fragment in error.message


def test_system_account_note() -> None:
    note = system_account_note()
    assert note.source == "windows"
    assert note.location == "user"
    assert "SYSTEM" in note.message
    assert "Cert:\\CurrentUser\\My" in note.message
    assert "signed in" in note.message


@posix_only
def test_fake_powershell_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_powershell(tmp_path / "bin", stdout=identity_output(user_sid=SYSTEM_SID, bom=True))
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    identity = read_windows_identity()
    assert identity.serial_number == "PF2ABC12"
    assert identity.running_as_system is True
    assert identity.errors == []


@posix_only
def test_powershell_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    [error] = read_windows_identity().errors
    assert error.step == "command"
    assert "was not found on PATH" in error.message
