"""Device identity: hostname, serial number and operating system.

The serial number is what rules substitute for ``${serial_number}``, so it
is never guessed: when no source gives a real value, it is None and an error
entry names the files tried and the fix.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
from collections.abc import Sequence
from typing import Literal

from collector.facts import CollectionError, Device, OperatingSystem

logger = logging.getLogger(__name__)

SOURCE = "device"

OsFamily = Literal["linux", "mac", "windows", "ios", "android", "chromeos", "unknown"]

_FAMILIES: dict[str, OsFamily] = {"Linux": "linux", "Darwin": "mac", "Windows": "windows"}

# Files tried in order, relative to the sysfs root. DMI's product_serial is the
# system serial number that `dmidecode -s system-serial-number` prints and that
# asset inventories record. board_serial and chassis_serial are left out on
# purpose: they are the serial numbers of other parts, and a certificate issued
# for the system serial would never match them. The device tree contains the
# serial number on ARM boards without DMI (Raspberry Pi and others).
SERIAL_NUMBER_FILES = (
    "class/dmi/id/product_serial",
    "firmware/devicetree/base/serial-number",
)
# /proc/device-tree is a link to the sysfs device tree on current kernels, and
# the only path on some older ones.
PROC_DEVICE_TREE_SERIAL = "device-tree/serial-number"

DEFAULT_OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")

# Values that firmware vendors leave in the serial number field instead of a serial number.
_PLACEHOLDER_SERIALS = frozenset(
    {
        "",
        "0",
        "none",
        "null",
        "n/a",
        "na",
        "not applicable",
        "not specified",
        "not available",
        "unknown",
        "default string",
        "system serial number",
        "chassis serial number",
        "serial number",
        "to be filled by o.e.m.",
        "to be filled by oem",
        "o.e.m.",
        "oem",
        "123456789",
        "0123456789",
        "1234567890",
        "invalid",
        "not defined",
        "0123456789abcdef",
    }
)


def is_placeholder_serial(value: str) -> bool:
    """Return True when a firmware serial number is a vendor placeholder rather than a serial number.

    Besides the known placeholder strings, a value made of one repeated
    character (``00000000``, ``XXXXXXXX``), ignoring spaces, dots and dashes,
    is a placeholder.
    """
    normalized = value.strip().lower()
    if normalized in _PLACEHOLDER_SERIALS:
        return True
    significant = re.sub(r"[\s.\-]", "", normalized)
    return len(set(significant)) <= 1


def _read_serial_file(path: str) -> tuple[str | None, str]:
    """Return the serial number in one file, or None and what was wrong with the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4096)
    except FileNotFoundError:
        return None, "not found"
    except PermissionError:
        return None, "permission denied"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    # Device-tree strings end with a NUL byte, and DMI values end with a newline.
    value = raw.replace(b"\x00", b"").decode("utf-8", "replace").strip()
    if is_placeholder_serial(value):
        return None, f"placeholder value {value!r}"
    return value, "ok"


def read_serial_number(sysfs_root: str = "/sys", proc_root: str = "/proc") -> tuple[str | None, list[str]]:
    """Read the device serial number from DMI or the device tree.

    Returns the serial number, or None, and one line per file tried saying
    what was wrong with it.
    """
    paths = [os.path.join(sysfs_root, name) for name in SERIAL_NUMBER_FILES]
    paths.append(os.path.join(proc_root, PROC_DEVICE_TREE_SERIAL))
    problems: list[str] = []
    for path in paths:
        value, problem = _read_serial_file(path)
        if value is not None:
            logger.debug("serial number read from %s", path)
            return value, problems
        problems.append(f"{path}: {problem}")
    return None, problems


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text: ``KEY=value`` lines with optional shell-style quotes."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote = value[0]
            value = value[1:-1]
            if quote == '"':
                value = re.sub(r'\\([\\$"`])', r"\1", value)
        fields[key.strip()] = value
    return fields


def _read_os_release(paths: Sequence[str]) -> dict[str, str] | None:
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return parse_os_release(handle.read())
        except OSError as exc:
            logger.debug("cannot read %s: %s", path, exc)
    return None


def identify_operating_system(
    system: str | None = None, os_release_paths: Sequence[str] = DEFAULT_OS_RELEASE_PATHS
) -> OperatingSystem:
    """Describe the operating system; on Linux the name and version come from os-release."""
    system = platform.system() if system is None else system
    family = _FAMILIES.get(system, "unknown")
    if family == "linux":
        release = _read_os_release(os_release_paths)
        if release is not None:
            name = release.get("NAME") or "Linux"
            version = release.get("VERSION_ID") or release.get("VERSION") or platform.release()
            return OperatingSystem(family=family, name=name, version=version)
        return OperatingSystem(family=family, name="Linux", version=platform.release())
    if family == "mac":
        return OperatingSystem(
            family=family, name="macOS", version=platform.mac_ver()[0] or platform.release()
        )
    if family == "windows":
        return OperatingSystem(family=family, name="Windows", version=platform.version())
    return OperatingSystem(family=family, name=system or "unknown", version=platform.release())


def identify_device(
    hostname: str | None = None,
    serial_number: str | None = None,
    *,
    sysfs_root: str = "/sys",
    proc_root: str = "/proc",
    os_release_paths: Sequence[str] = DEFAULT_OS_RELEASE_PATHS,
    system: str | None = None,
) -> tuple[Device, list[CollectionError]]:
    """Identify the device; ``hostname`` and ``serial_number`` override what the system reports.

    Raises ValueError when an override is empty or only whitespace.
    """
    device_hostname, errors = resolve_hostname(hostname)

    if serial_number is not None:
        device_serial: str | None = checked_serial_override(serial_number)
    else:
        device_serial, problems = read_serial_number(sysfs_root, proc_root)
        if device_serial is None:
            errors.append(_serial_number_error(sysfs_root, problems))

    operating_system = identify_operating_system(system, os_release_paths)
    return Device(hostname=device_hostname, serial_number=device_serial, os=operating_system), errors


def resolve_hostname(override: str | None) -> tuple[str | None, list[CollectionError]]:
    """Return the override, stripped, or the system's hostname; raise ValueError for an empty override."""
    if override is not None:
        if not override.strip():
            raise ValueError("hostname override is empty; give the device's hostname")
        return override.strip(), []
    hostname = socket.gethostname() or None
    if hostname is None:
        return None, [
            CollectionError(
                source=SOURCE,
                location="hostname",
                step="identity",
                message="the system returned an empty hostname; pass --hostname",
            )
        ]
    return hostname, []


def checked_serial_override(override: str) -> str:
    """Return a serial number override, stripped; raise ValueError when it is empty."""
    if not override.strip():
        raise ValueError("serial number override is empty; give the device's serial number")
    return override.strip()


def _serial_number_error(sysfs_root: str, problems: Sequence[str]) -> CollectionError:
    if any(problem.endswith("permission denied") for problem in problems):
        fix = "The DMI serial number is readable by root only: run the collector as root, or pass --serial-number."
    else:
        fix = "The firmware provides no serial number: pass --serial-number with the device's serial number."
    return CollectionError(
        source=SOURCE,
        location=os.path.join(sysfs_root, SERIAL_NUMBER_FILES[0]),
        step="identity",
        message=f"device serial number could not be read ({'; '.join(problems)}). {fix}",
    )
