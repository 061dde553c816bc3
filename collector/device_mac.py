"""macOS device identity: the hardware serial number from ``ioreg`` and the system version from ``sw_vers``.

``ioreg -rd1 -c IOPlatformExpertDevice`` prints the platform device's
properties one per line, among them ``"IOPlatformSerialNumber" = "C02…"``.
``sw_vers`` prints ``ProductName:``, ``ProductVersion:`` and
``BuildVersion:`` lines. Published output shows one tab after each key up to
macOS 12 and two from macOS 13, which may add a ``ProductVersionExtra:``
line for a Rapid Security Response, so values are read after any whitespace.
"""

from __future__ import annotations

import logging
import platform
import re
from typing import Final

from collector.commands import CommandError, Runner, command_text, run_command
from collector.device import is_placeholder_serial
from collector.facts import CollectionError, OperatingSystem

logger = logging.getLogger(__name__)

SOURCE = "device"
IOREG_COMMAND: Final = ("ioreg", "-rd1", "-c", "IOPlatformExpertDevice")
SW_VERS_COMMAND: Final = ("sw_vers",)
DEFAULT_OS_NAME = "macOS"

# ioreg without -r draws the device tree with "|" in front of the properties.
_SERIAL_NUMBER_LINE = re.compile(r'[\s|]*"IOPlatformSerialNumber" = "(?P<value>.*)"\s*')


def read_mac_serial_number(run: Runner = run_command) -> tuple[str | None, CollectionError | None]:
    """Read the hardware serial number, or return None and an error entry that names the problem."""
    command = command_text(IOREG_COMMAND)
    try:
        output = run(IOREG_COMMAND)
    except CommandError as exc:
        return None, _serial_number_error(exc.message)

    values = [
        match["value"].strip()
        for line in output.decode("utf-8", "replace").split("\n")
        if (match := _SERIAL_NUMBER_LINE.fullmatch(line))
    ]
    if not values:
        return None, _serial_number_error(f"`{command}` printed no IOPlatformSerialNumber property")
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        listed = ", ".join(repr(value) for value in distinct)
        return None, _serial_number_error(f"`{command}` printed several serial numbers: {listed}")
    if is_placeholder_serial(distinct[0]):
        return None, _serial_number_error(
            f"`{command}` printed the placeholder serial number {distinct[0]!r}"
        )
    return distinct[0], None


def _serial_number_error(problem: str) -> CollectionError:
    return CollectionError(
        source=SOURCE,
        location="ioreg",
        step="identity",
        message=f"device serial number could not be read: {problem}. "
        "Pass --serial-number with the device's serial number.",
    )


def read_mac_os(run: Runner = run_command) -> tuple[OperatingSystem, CollectionError | None]:
    """Describe macOS from ``sw_vers``.

    When ``sw_vers`` fails or prints no ProductVersion, the version comes from
    Python's ``platform`` module instead, and the error entry gives the reason.
    """
    command = command_text(SW_VERS_COMMAND)
    try:
        output = run(SW_VERS_COMMAND)
    except CommandError as exc:
        return _fallback_os(exc.message)

    fields = _parse_sw_vers(output.decode("utf-8", "replace"))
    version = fields.get("ProductVersion")
    if not version:
        return _fallback_os(f"`{command}` printed no ProductVersion line")
    name = fields.get("ProductName") or DEFAULT_OS_NAME
    return OperatingSystem(family="mac", name=name, version=version), None


def _parse_sw_vers(text: str) -> dict[str, str]:
    """Parse ``Key:<tabs>value`` lines. The first line for a key wins."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, separator, value = line.partition(":")
        if separator and key.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def _fallback_os(problem: str) -> tuple[OperatingSystem, CollectionError]:
    # platform.mac_ver() reads /System/Library/CoreServices/SystemVersion.plist and
    # returns an empty version when that fails; release() is the Darwin kernel version.
    version = platform.mac_ver()[0] or platform.release() or "unknown"
    logger.debug(
        "sw_vers failed (%s), so the macOS version %s comes from the platform module", problem, version
    )
    error = CollectionError(
        source=SOURCE,
        location="sw_vers",
        step="identity",
        message=f"the macOS version could not be read: {problem}. The version {version!r} from "
        "Python's platform module is reported instead; check that /usr/bin/sw_vers runs.",
    )
    return OperatingSystem(family="mac", name=DEFAULT_OS_NAME, version=version), error
