from __future__ import annotations

import socket
from pathlib import Path

import pytest

from collector.device import (
    identify_device,
    identify_operating_system,
    is_placeholder_serial,
    parse_os_release,
)
from collector.facts import CollectionError, Device

OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
)


class FakeSystem:
    """A fake /sys, /proc and os-release under one temporary directory."""

    def __init__(self, root: Path) -> None:
        self.sysfs = root / "sys"
        self.proc = root / "proc"
        self.os_release = root / "os-release"
        self.sysfs.mkdir()
        self.proc.mkdir()
        self.os_release.write_text(OS_RELEASE)

    def write(self, base: Path, relative: str, content: bytes) -> None:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def identify(
        self, hostname: str | None = None, serial_number: str | None = None
    ) -> tuple[Device, list[CollectionError]]:
        return identify_device(
            hostname,
            serial_number,
            sysfs_root=str(self.sysfs),
            proc_root=str(self.proc),
            os_release_paths=[str(self.os_release)],
            system="Linux",
        )


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystem:
    return FakeSystem(tmp_path)


def test_serial_from_dmi(fake: FakeSystem) -> None:
    fake.write(fake.sysfs, "class/dmi/id/product_serial", b"PF2ABC12\n")
    device, errors = fake.identify()
    assert device.serial_number == "PF2ABC12"
    assert errors == []


def test_serial_from_devicetree(fake: FakeSystem) -> None:
    fake.write(fake.sysfs, "firmware/devicetree/base/serial-number", b"10000000abcdef01\x00")
    device, errors = fake.identify()
    assert device.serial_number == "10000000abcdef01"
    assert errors == []


def test_serial_from_proc_devicetree(fake: FakeSystem) -> None:
    fake.write(fake.proc, "device-tree/serial-number", b"00000000f00dcafe\x00")
    device, errors = fake.identify()
    assert device.serial_number == "00000000f00dcafe"
    assert errors == []


def test_serial_dmi_placeholder_falls_back(fake: FakeSystem) -> None:
    fake.write(fake.sysfs, "class/dmi/id/product_serial", b"To Be Filled By O.E.M.\n")
    fake.write(fake.sysfs, "firmware/devicetree/base/serial-number", b"RPI-0042\x00")
    device, _ = fake.identify()
    assert device.serial_number == "RPI-0042"


def test_serial_board_not_used(fake: FakeSystem) -> None:
    fake.write(fake.sysfs, "class/dmi/id/board_serial", b"BOARD-1234\n")
    device, errors = fake.identify()
    assert device.serial_number is None
    assert len(errors) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"To Be Filled By O.E.M.\n",
        b"Default string\n",
        b"0\n",
        b"None\n",
        b"System Serial Number\n",
        b"\n",
        b"",
        b"00000000\n",
        b"Not Specified\n",
        b"XXXXXXXXXX\n",
    ],
)
def test_serial_placeholder_is_error(fake: FakeSystem, value: bytes) -> None:
    fake.write(fake.sysfs, "class/dmi/id/product_serial", value)
    device, errors = fake.identify()
    assert device.serial_number is None
    assert len(errors) == 1
    error = errors[0]
    assert (error.source, error.step) == ("device", "identity")
    assert "placeholder" in error.message
    assert "--serial-number" in error.message


def test_serial_unreadable_names_paths_and_fix(fake: FakeSystem) -> None:
    device, errors = fake.identify()
    assert device.serial_number is None
    assert len(errors) == 1
    message = errors[0].message
    assert str(fake.sysfs / "class/dmi/id/product_serial") in message
    assert str(fake.sysfs / "firmware/devicetree/base/serial-number") in message
    assert str(fake.proc / "device-tree/serial-number") in message
    assert "--serial-number" in message


def test_serial_permission_denied_says_root(fake: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    # Running as root, chmod cannot deny the read, so open() is made to raise as it does for a user.
    fake.write(fake.sysfs, "class/dmi/id/product_serial", b"PF2ABC12\n")
    protected = str(fake.sysfs / "class/dmi/id/product_serial")
    real_open = open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if path == protected:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)
    device, errors = fake.identify()
    assert device.serial_number is None
    assert "permission denied" in errors[0].message
    assert "run the collector as root" in errors[0].message


def test_serial_override_wins(fake: FakeSystem) -> None:
    fake.write(fake.sysfs, "class/dmi/id/product_serial", b"PF2ABC12\n")
    device, errors = fake.identify(serial_number="OVERRIDE-1")
    assert device.serial_number == "OVERRIDE-1"
    assert errors == []


def test_serial_override_skips_unreadable(fake: FakeSystem) -> None:
    device, errors = fake.identify(serial_number="OVERRIDE-1")
    assert device.serial_number == "OVERRIDE-1"
    assert errors == []


def test_serial_override_empty_rejected(fake: FakeSystem) -> None:
    with pytest.raises(ValueError, match="serial number"):
        fake.identify(serial_number="  ")


def test_hostname_from_system(fake: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pf2abc12")
    device, _ = fake.identify()
    assert device.hostname == "pf2abc12"


def test_hostname_override_wins(fake: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "pf2abc12")
    device, _ = fake.identify(hostname="laptop-7")
    assert device.hostname == "laptop-7"


def test_hostname_empty_is_error(fake: FakeSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    device, errors = fake.identify(serial_number="S1")
    assert device.hostname is None
    assert [error.step for error in errors] == ["identity"]


def test_os_from_os_release(fake: FakeSystem) -> None:
    device, _ = fake.identify(serial_number="S1")
    assert device.os.model_dump() == {"family": "linux", "name": "Debian GNU/Linux", "version": "12"}


def test_os_release_missing_falls_back(tmp_path: Path) -> None:
    operating_system = identify_operating_system("Linux", [str(tmp_path / "absent")])
    assert operating_system.family == "linux"
    assert operating_system.name == "Linux"
    assert operating_system.version


@pytest.mark.parametrize(
    ("system", "family"),
    [("Linux", "linux"), ("Darwin", "mac"), ("Windows", "windows"), ("SunOS", "unknown")],
)
def test_os_family_mapping(tmp_path: Path, system: str, family: str) -> None:
    assert identify_operating_system(system, [str(tmp_path / "absent")]).family == family


def test_parse_os_release_quotes() -> None:
    fields = parse_os_release(
        '# comment\nNAME="Fedora Linux"\nVERSION_ID=40\nVARIANT=\'Work station\'\nQUOTED="say \\"hi\\" \\$HOME"\n'
    )
    assert fields["NAME"] == "Fedora Linux"
    assert fields["VERSION_ID"] == "40"
    assert fields["VARIANT"] == "Work station"
    assert fields["QUOTED"] == 'say "hi" $HOME'
    assert "# comment" not in fields


@pytest.mark.parametrize("value", ["PF2ABC12", "VMware-56 4d 2a 1b", "C02XK0ABJG5J", "10000000abcdef01"])
def test_real_serials_not_placeholders(value: str) -> None:
    assert is_placeholder_serial(value) is False
