"""Platform detection and the refusal to collect where no client certificate check exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.collect import Locations, collect
from collector.platforms import UnsupportedPlatformError, detect_platform, require_supported


def _no_markers(tmp_path: Path) -> tuple[str, str]:
    return (str(tmp_path / "lsb-release"), str(tmp_path / ".cros_milestone"))


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Linux", "linux"),
        ("Darwin", "mac"),
        ("Windows", "windows"),
        ("iOS", "ios"),
        ("iPadOS", "ios"),
        ("Android", "android"),
        ("FreeBSD", "unknown"),
    ],
)
def test_detect_by_system(tmp_path: Path, system: str, expected: str) -> None:
    assert detect_platform(system, android=False, chromeos_markers=_no_markers(tmp_path)) == expected


def test_detect_android_build_of_python(tmp_path: Path) -> None:
    # Termux and other Android builds report "Linux" from platform.system().
    assert detect_platform("Linux", android=True, chromeos_markers=_no_markers(tmp_path)) == "android"


def test_detect_chromeos_lsb_release(tmp_path: Path) -> None:
    lsb_release, milestone = _no_markers(tmp_path)
    Path(lsb_release).write_text("CHROMEOS_RELEASE_NAME=Chrome OS\nCHROMEOS_RELEASE_VERSION=15917.0.0\n")

    assert detect_platform("Linux", android=False, chromeos_markers=(lsb_release, milestone)) == "chromeos"


def test_detect_chromeos_linux_container(tmp_path: Path) -> None:
    lsb_release, milestone = _no_markers(tmp_path)
    Path(milestone).write_text("120\n")

    assert detect_platform("Linux", android=False, chromeos_markers=(lsb_release, milestone)) == "chromeos"


def test_detect_linux_with_other_lsb_release(tmp_path: Path) -> None:
    lsb_release, milestone = _no_markers(tmp_path)
    Path(lsb_release).write_text("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\n")

    assert detect_platform("Linux", android=False, chromeos_markers=(lsb_release, milestone)) == "linux"


def test_unknown_platform_named_by_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.system", lambda: "FreeBSD")

    with pytest.raises(UnsupportedPlatformError) as raised:
        require_supported("unknown")

    assert str(raised.value).startswith("client certificate checks are not supported on FreeBSD; ")


@pytest.mark.parametrize("family", ["ios", "android", "chromeos"])
def test_require_supported_rejects(family: str) -> None:
    with pytest.raises(UnsupportedPlatformError) as raised:
        require_supported(family)

    assert str(raised.value) == (
        f"client certificate checks are not supported on {family}; supported operating systems: linux, mac, windows"
    )


@pytest.mark.parametrize("family", ["linux", "mac", "windows"])
def test_require_supported_accepts(family: str) -> None:
    require_supported(family)


@pytest.mark.parametrize("family", ["ios", "android", "chromeos"])
def test_collect_refuses_unsupported_platform(family: str) -> None:
    with pytest.raises(UnsupportedPlatformError, match=f"not supported on {family}"):
        collect(Locations(), [], hostname="h", serial_number="s", platform=family)


def test_collect_rejects_trust_store_on_linux() -> None:
    with pytest.raises(ValueError, match="trust store 'system' cannot be read on linux"):
        collect(Locations(trust_stores=("system",)), [], hostname="h", serial_number="s", platform="linux")


def test_collect_rejects_user_store_on_mac() -> None:
    with pytest.raises(ValueError, match="trust store 'user' does not exist on mac; use system"):
        collect(Locations(trust_stores=("user",)), [], hostname="h", serial_number="s", platform="mac")


def test_collect_rejects_unknown_store_on_windows() -> None:
    with pytest.raises(ValueError, match="trust store 'login' does not exist on windows; use system, user"):
        collect(Locations(trust_stores=("login",)), [], hostname="h", serial_number="s", platform="windows")
