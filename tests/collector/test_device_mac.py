from __future__ import annotations

import platform
from pathlib import Path

import pytest

from collector.device_mac import read_mac_os, read_mac_serial_number
from collector.facts import OperatingSystem
from tests.collector.macos_tools import GARBAGE, FakeTools, ioreg_output, sw_vers_output

# Written out rather than imported from the module under test, so that changed arguments fail here.
IOREG = ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]
SW_VERS = ["sw_vers"]


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools.install(tmp_path / "tools")
    monkeypatch.setenv("PATH", fake.path)
    return fake


@pytest.fixture
def python_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Python's platform module report macOS 14.5 on Darwin 23.5.0, whatever the host is."""
    monkeypatch.setattr(platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    monkeypatch.setattr(platform, "release", lambda: "23.5.0")


# Serial number


def test_serial_number_read(tools: FakeTools) -> None:
    tools.record(IOREG, ioreg_output("C02XK1ABJGH5"))
    serial_number, error = read_mac_serial_number()
    assert serial_number == "C02XK1ABJGH5"
    assert error is None
    assert tools.calls() == [IOREG]


def test_serial_number_tree_layout(tools: FakeTools) -> None:
    # ioreg without -r draws the tree with "|" in front of each property.
    output = ioreg_output("C02XK1ABJGH5").replace(b'      "IOPlatform', b'    |   "IOPlatform')
    tools.record(IOREG, output)
    assert read_mac_serial_number() == ("C02XK1ABJGH5", None)


@pytest.mark.parametrize("placeholder", ["", "Not Available", "0", "XXXXXXXXXXXX", "To Be Filled By O.E.M."])
def test_serial_number_placeholder(tools: FakeTools, placeholder: str) -> None:
    tools.record(IOREG, ioreg_output(placeholder))
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert (error.source, error.location, error.step) == ("device", "ioreg", "identity")
    assert f"placeholder serial number {placeholder!r}" in error.message
    assert "--serial-number" in error.message


def test_serial_number_line_missing(tools: FakeTools) -> None:
    # The "serial-number" data property stays in the output and must not be read instead.
    output = ioreg_output(None)
    assert b'"serial-number"' in output
    tools.record(IOREG, output)
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert (error.location, error.step) == ("ioreg", "identity")
    assert "no IOPlatformSerialNumber property" in error.message
    assert "--serial-number" in error.message


def test_serial_number_conflicting_values(tools: FakeTools) -> None:
    output = ioreg_output("C02XK1ABJGH5") + b'      "IOPlatformSerialNumber" = "FVFZ12ABCDEF"\n'
    tools.record(IOREG, output)
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert "several serial numbers" in error.message


def test_serial_number_garbage(tools: FakeTools) -> None:
    tools.record(IOREG, GARBAGE)
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert "no IOPlatformSerialNumber property" in error.message


def test_serial_number_ioreg_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = FakeTools.install(tmp_path / "tools", tools=["security", "sw_vers"])
    monkeypatch.setenv("PATH", tools.path)
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert (error.source, error.location, error.step) == ("device", "ioreg", "identity")
    assert "ioreg was not found on PATH" in error.message
    assert "--serial-number" in error.message


def test_serial_number_ioreg_fails(tools: FakeTools) -> None:
    tools.record(IOREG, status=1, stderr="ioreg: no such class")
    serial_number, error = read_mac_serial_number()
    assert serial_number is None
    assert error is not None
    assert "exited with status 1: ioreg: no such class" in error.message
    assert "--serial-number" in error.message


# Operating system


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            sw_vers_output("macOS", "14.5", "23F79"),
            OperatingSystem(family="mac", name="macOS", version="14.5"),
        ),
        (
            sw_vers_output("macOS", "13.4.1", "22F770820d", extra="(c)"),
            OperatingSystem(family="mac", name="macOS", version="13.4.1"),
        ),
        (
            sw_vers_output("macOS", "12.6.7", "21G651", tabs=1),
            OperatingSystem(family="mac", name="macOS", version="12.6.7"),
        ),
        (
            sw_vers_output("Mac OS X", "10.15.7", "19H2", tabs=1),
            OperatingSystem(family="mac", name="Mac OS X", version="10.15.7"),
        ),
    ],
    ids=["sonoma", "ventura-rapid-security-response", "monterey-one-tab", "catalina-mac-os-x"],
)
def test_os_from_sw_vers(tools: FakeTools, output: bytes, expected: OperatingSystem) -> None:
    tools.record(SW_VERS, output)
    assert read_mac_os() == (expected, None)
    assert tools.calls() == [SW_VERS]


def test_os_name_defaults_to_macos(tools: FakeTools) -> None:
    tools.record(SW_VERS, b"ProductVersion:\t\t14.5\nBuildVersion:\t\t23F79\n")
    assert read_mac_os() == (OperatingSystem(family="mac", name="macOS", version="14.5"), None)


@pytest.mark.usefixtures("python_platform")
def test_os_sw_vers_fails(tools: FakeTools) -> None:
    tools.record(SW_VERS, status=1, stderr="**** ERROR **** Unknown error loading system version plist")
    operating_system, error = read_mac_os()
    assert operating_system == OperatingSystem(family="mac", name="macOS", version="14.5")
    assert error is not None
    assert (error.source, error.location, error.step) == ("device", "sw_vers", "identity")
    assert "exited with status 1" in error.message
    assert "'14.5'" in error.message


@pytest.mark.usefixtures("python_platform")
def test_os_sw_vers_garbage(tools: FakeTools) -> None:
    tools.record(SW_VERS, GARBAGE)
    operating_system, error = read_mac_os()
    assert operating_system.version == "14.5"
    assert error is not None
    assert "no ProductVersion line" in error.message


def test_os_sw_vers_missing_uses_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_platform: None
) -> None:
    tools = FakeTools.install(tmp_path / "tools", tools=["security", "ioreg"])
    monkeypatch.setenv("PATH", tools.path)
    # platform.mac_ver() returns an empty version when it cannot read the system version.
    monkeypatch.setattr(platform, "mac_ver", lambda: ("", ("", "", ""), ""))
    operating_system, error = read_mac_os()
    assert operating_system == OperatingSystem(family="mac", name="macOS", version="23.5.0")
    assert error is not None
    assert "sw_vers was not found on PATH" in error.message
