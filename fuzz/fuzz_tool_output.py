"""Fuzz the parsers of macOS and Windows tool output with atheris.

Run from the repository root:
``python fuzz/fuzz_tool_output.py -dict=fuzz/tool_output.dict -atheris_runs=20000``.
Each input is fed, as it is and XORed into the real output, to every reader
of a tool's output: ``security find-certificate`` and ``find-identity`` for
the keychain, the PowerShell certificate listing, the Windows identity JSON,
``ioreg`` and ``sw_vers``. The real outputs come from the generators in
tests/collector, which print each tool's format.

A crash is an exception escaping a reader, or an AssertionError when a
keychain key is present although the identity listing does not contain the
certificate's SHA-1, or when a key read through PowerShell is present.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import atheris

# Run as a script, this file has fuzz/ on sys.path, not the repository root that tests/ is in.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from collector.commands import CommandError, command_text
    from collector.device_mac import read_mac_os, read_mac_serial_number
    from collector.device_windows import read_windows_identity
    from collector.signers import Signer
    from collector.sources.keychain import SYSTEM_KEYCHAIN, collect_keychain, find_identity_command
    from collector.sources.windows import collect_windows
    from collector.sources.windows_powershell import PowerShellBackend
    from tests.certgen import make_ca, make_leaf
    from tests.collector.macos_tools import (
        EXPIRED,
        find_certificate_output,
        find_identity_output,
        ioreg_output,
        sw_vers_output,
    )
    from tests.collector.windows_fakes import ListedCertificate, certificate_listing_output, identity_output

_ca = make_ca("Fuzz Device CA")
_devices = [make_leaf(_ca, f"device-{index}") for index in range(3)]
_signers = [Signer("fuzz-ca", _ca.cert)]

_CERTIFICATES = find_certificate_output([device.cert for device in _devices])
_IDENTITIES = find_identity_output(
    [(_devices[0].cert, "device 0", None), (_devices[1].cert, "device 1", EXPIRED)]
)
_POWERSHELL_LISTING = certificate_listing_output(
    [
        ListedCertificate(device.cert_der(), has_private_key=index != 1)
        for index, device in enumerate(_devices)
    ]
)
_WINDOWS_IDENTITY = identity_output()
_IOREG = ioreg_output()
_SW_VERS = sw_vers_output()


class KeychainRunner:
    """A Runner that prints ``identities`` for ``find-identity`` and ``certificates`` for any other command."""

    def __init__(self, certificates: bytes, identities: bytes) -> None:
        self._certificates = certificates
        self._identities = identities

    def __call__(self, argv: Sequence[str]) -> bytes:
        if list(argv) == find_identity_command(SYSTEM_KEYCHAIN):
            return self._identities
        return self._certificates


class FixedRunner:
    """A Runner that prints the same output for every command, or fails when it is empty."""

    def __init__(self, output: bytes) -> None:
        self._output = output

    def __call__(self, argv: Sequence[str]) -> bytes:
        if not self._output:
            raise CommandError(command_text(argv), f"{command_text(argv)} exited with status 1")
        return self._output


def patched(original: bytes, patch: bytes) -> bytes:
    """XOR ``patch`` into the start of ``original``, and append the part that runs past its end."""
    data = bytearray(original)
    for index, value in enumerate(patch):
        if index < len(data):
            data[index] ^= value
        else:
            data.append(value)
    return bytes(data)


def check_keychain(certificates: bytes, identities: bytes) -> None:
    result = collect_keychain(["system"], _signers, run=KeychainRunner(certificates, identities))
    listed = identities.decode("utf-8", "replace").lower()
    for cert in result.certificates:
        if cert.private_key.status != "present":
            continue
        sha1 = next(
            (
                hashlib.sha1(device.cert_der()).hexdigest()
                for device in _devices
                if device.fingerprint == cert.fingerprint_sha256
            ),
            None,
        )
        if sha1 is None or sha1 not in listed:
            raise AssertionError(f"key of {cert.fingerprint_sha256} present, but its SHA-1 is not listed")


def check_powershell(listing: bytes) -> None:
    backend = PowerShellBackend(FixedRunner(listing), fallback_reason="fuzzing")
    result = collect_windows(["system", "user"], _signers, backend=backend)
    for cert in result.certificates:
        if cert.private_key.status == "present":
            raise AssertionError("a key read through PowerShell is present")


def check_device_identity(windows_identity: bytes, ioreg: bytes, sw_vers: bytes) -> None:
    read_windows_identity(FixedRunner(windows_identity))
    serial_number, error = read_mac_serial_number(FixedRunner(ioreg))
    if (serial_number is None) == (error is None):
        raise AssertionError(f"serial number {serial_number!r} and error {error!r} disagree")
    read_mac_os(FixedRunner(sw_vers))


def test_one_input(data: bytes) -> None:
    check_keychain(data, _IDENTITIES)
    check_keychain(patched(_CERTIFICATES, data), _IDENTITIES)
    check_keychain(_CERTIFICATES, data)
    check_keychain(_CERTIFICATES, patched(_IDENTITIES, data))
    check_powershell(data)
    check_powershell(patched(_POWERSHELL_LISTING, data))
    check_device_identity(data, data, data)
    check_device_identity(patched(_WINDOWS_IDENTITY, data), patched(_IOREG, data), patched(_SW_VERS, data))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
