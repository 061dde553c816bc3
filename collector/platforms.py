"""The operating system family of this device, decided in one place.

``collect`` and the device identity step call ``detect_platform`` once and
pick their sources from the result: Linux reads PEM files and NSS
databases, macOS the System keychain, Windows the certificate stores.
iOS, Android and ChromeOS have no client certificate check, so collection
there stops with ``UnsupportedPlatformError``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Sequence
from typing import Final, Literal

logger = logging.getLogger(__name__)

Platform = Literal["linux", "mac", "windows", "ios", "android", "chromeos", "unknown"]

SUPPORTED: Final = ("linux", "mac", "windows")
UNSUPPORTED: Final = ("ios", "android", "chromeos")

# Trust stores a rule can name, per platform. Linux rules name paths instead.
TRUST_STORES: Final[dict[str, tuple[str, ...]]] = {"mac": ("system",), "windows": ("system", "user")}

_SYSTEMS: Final[dict[str, Platform]] = {
    "Linux": "linux",
    "Darwin": "mac",
    "Windows": "windows",
    "iOS": "ios",
    "iPadOS": "ios",
    "Android": "android",
}

# ChromeOS itself has CHROMEOS_RELEASE_NAME in lsb-release; its Linux
# container (Crostini) runs Debian but has /dev/.cros_milestone.
CHROMEOS_MARKERS: Final = ("/etc/lsb-release", "/dev/.cros_milestone")


class UnsupportedPlatformError(Exception):
    """Collection was asked for on an operating system without a client certificate check."""

    def __init__(self, platform_name: str) -> None:
        # "unknown" would tell the user nothing, so name the system that Python reports.
        shown = platform_name if platform_name != "unknown" else (platform.system() or "this system")
        super().__init__(
            f"client certificate checks are not supported on {shown}; "
            f"supported operating systems: {', '.join(SUPPORTED)}"
        )
        self.platform = platform_name


def detect_platform(
    system: str | None = None,
    *,
    android: bool | None = None,
    chromeos_markers: Sequence[str] = CHROMEOS_MARKERS,
) -> Platform:
    """Return the platform family of this device.

    ``system`` is what ``platform.system()`` returns. ``android`` marks an
    Android build of Python, as opposed to Linux; by default it is read from
    ``sys.getandroidapilevel``, which exists only on Android (Termux too,
    where ``platform.system()`` returns ``Linux``).
    """
    system = platform.system() if system is None else system
    if android is None:
        android = hasattr(sys, "getandroidapilevel")
    if android:
        return "android"

    family = _SYSTEMS.get(system, "unknown")
    if family == "linux" and _is_chromeos(chromeos_markers):
        return "chromeos"
    return family


def require_supported(family: Platform) -> None:
    """Raise ``UnsupportedPlatformError`` unless ``family`` is linux, mac or windows."""
    if family not in SUPPORTED:
        raise UnsupportedPlatformError(family)


def _is_chromeos(markers: Sequence[str]) -> bool:
    for marker in markers:
        if marker.endswith("lsb-release"):
            if _lsb_release_is_chromeos(marker):
                return True
        elif os.path.exists(marker):
            logger.debug("ChromeOS marker %s exists", marker)
            return True
    return False


def _lsb_release_is_chromeos(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(65536)
    except OSError as exc:
        logger.debug("cannot read %s: %s", path, exc)
        return False
    return any(line.startswith("CHROMEOS_RELEASE_NAME=") for line in text.splitlines())
