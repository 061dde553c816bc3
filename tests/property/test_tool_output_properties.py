"""Parsers of macOS and Windows tool output on damaged output: errors, never exceptions, no forged keys.

The outputs start as what the real tools print, built by the generators in
tests/collector/macos_tools.py and windows_fakes.py from real certificates,
and Hypothesis then damages them. The collectors get the output through an
injected Runner, so no tool runs.

The key invariant for the macOS keychain: a certificate's private key is
``present`` only when ``security find-identity`` honestly listed the
certificate's SHA-1. Labels are the part of that output an attacker
controls, so one test gives identities labels that imitate identity lines,
count lines and headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.commands import CommandError, command_text
from collector.device_mac import IOREG_COMMAND, SW_VERS_COMMAND, read_mac_os, read_mac_serial_number
from collector.device_windows import (
    ACCOUNT_LOCATION,
    BIOS_LOCATION,
    POWERSHELL_LOCATION,
    SYSTEM_SID,
    read_windows_identity,
)
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.keychain import (
    SYSTEM_KEYCHAIN,
    collect_keychain,
    find_certificate_command,
    find_identity_command,
)
from collector.sources.windows import collect_windows
from collector.sources.windows_powershell import PowerShellBackend
from tests.certgen import CertKey, make_leaf
from tests.collector.macos_tools import (
    EXPIRED,
    NOT_TRUSTED,
    certificate_der,
    find_certificate_entry,
    find_certificate_output,
    find_identity_output,
    identity_line,
    ioreg_output,
    pem_block,
    sw_vers_output,
)
from tests.collector.windows_fakes import (
    ListedCertificate,
    certificate_listing_output,
    identity_output,
    powershell_output,
)
from tests.property import property_settings
from tests.property.checks import (
    assert_error_well_formed,
    assert_well_formed,
    assume_no_key_header,
    fingerprint_counts,
)
from tests.property.mutations import damaged_der, json_values, mutated_bytes, mutated_output

# Damaged DER often has a negative or zero serial number. cryptography loads such a certificate
# with a deprecation warning, which the CLI sends to the log and which here would fill the report.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive:cryptography.utils.CryptographyDeprecationWarning"
)

DEVICE_COUNT = 3
NO_DIGEST = "!----- unable to get SHA-1 digest -----!"


@dataclass(frozen=True)
class ToolMaterial:
    devices: list[CertKey]
    signers: list[Signer]

    def sha1(self, index: int) -> str:
        return hashlib.sha1(self.devices[index].cert_der()).hexdigest()


@pytest.fixture(scope="module")
def material(ca: CertKey, signers: list[Signer]) -> ToolMaterial:
    devices = [make_leaf(ca, f"mac-device-{index}") for index in range(DEVICE_COUNT)]
    return ToolMaterial(devices, signers)


class RecordedRunner:
    """A Runner that returns recorded output per command line, and fails for a command recorded as None."""

    def __init__(self, outputs: Mapping[tuple[str, ...], bytes | None]) -> None:
        self._outputs = dict(outputs)

    def __call__(self, argv: Sequence[str]) -> bytes:
        output = self._outputs.get(tuple(argv))
        if output is None:
            raise CommandError(command_text(argv), f"{command_text(argv)} exited with status 1")
        return output


# macOS keychain


def keychain_lines(material: ToolMaterial) -> st.SearchStrategy[bytes]:
    """Single lines of the kinds that both ``security`` outputs contain, true or false, and arbitrary text."""
    devices = st.sampled_from(material.devices)
    hex_digits = "0123456789ABCDEFabcdef"
    statuses = st.sampled_from([None, EXPIRED, NOT_TRUSTED])
    labels = st.text(max_size=12)
    text_lines = st.one_of(
        devices.map(lambda device: find_certificate_entry(device.cert_der()).decode().split("\n")[0]),
        devices.map(lambda device: find_certificate_entry(device.cert_der()).decode().split("\n")[1]),
        st.text(alphabet=hex_digits, min_size=40, max_size=64).map(lambda digits: f"SHA-1 hash: {digits}"),
        st.sampled_from(
            [
                "-----BEGIN CERTIFICATE-----",
                "-----END CERTIFICATE-----",
                "Policy: SSL (client)",
                "  Matching identities",
                "  Valid identities only",
                "",
            ]
        ),
        st.tuples(st.integers(0, 4), st.sampled_from(["identities found", "valid identities found"])).map(
            lambda count: f"     {count[0]} {count[1]}"
        ),
        st.tuples(st.integers(0, 4), devices, labels, statuses).map(
            lambda parts: identity_line(parts[0], parts[1].cert, parts[2], parts[3]).rstrip("\n")
        ),
        st.tuples(st.integers(0, 4), labels).map(lambda parts: f'{parts[0]:3d}) {NO_DIGEST} "{parts[1]}"'),
        devices.map(lambda device: pem_block(device.cert_der()).decode().split("\n")[1]),
        st.text(max_size=40),
    )
    return st.one_of(text_lines.map(str.encode), st.binary(max_size=40))


def keychain_runner(certificates: bytes | None, identities: bytes | None) -> RecordedRunner:
    return RecordedRunner(
        {
            tuple(find_certificate_command(SYSTEM_KEYCHAIN)): certificates,
            tuple(find_identity_command(SYSTEM_KEYCHAIN)): identities,
        }
    )


def identities_for(material: ToolMaterial, indexes: Sequence[int], labels: Sequence[str]) -> bytes:
    identities = [
        (material.devices[index].cert, label, None) for index, label in zip(indexes, labels, strict=True)
    ]
    return find_identity_output(identities)


def collect_system_keychain(material: ToolMaterial, certificates: bytes, identities: bytes) -> SourceResult:
    assume_no_key_header(certificates, identities)
    result = collect_keychain(["system"], material.signers, run=keychain_runner(certificates, identities))
    assert_well_formed(result, "keychain")
    return result


def present_sha1s(result: SourceResult, material: ToolMaterial) -> set[str]:
    """Return the SHA-1s of the device certificates whose private key the result reports present."""
    present = set()
    for index, device in enumerate(material.devices):
        for cert in result.certificates:
            if cert.fingerprint_sha256 == device.fingerprint and cert.private_key.status == "present":
                present.add(material.sha1(index))
    return present


def honest_sha1s(material: ToolMaterial, indexes: Sequence[int]) -> set[str]:
    return {material.sha1(index) for index in indexes}


@given(data=st.data(), listed=st.lists(st.integers(0, DEVICE_COUNT - 1), unique=True))
@property_settings(max_examples=200)
def test_keychain_mutated_certificate_listing(
    material: ToolMaterial, data: st.DataObject, listed: list[int]
) -> None:
    certificates = find_certificate_output([device.cert for device in material.devices])
    damaged = data.draw(mutated_output(certificates, keychain_lines(material)), label="certificates")
    identities = identities_for(material, listed, [f"device {index}" for index in listed])
    result = collect_system_keychain(material, damaged, identities)
    assert present_sha1s(result, material) <= honest_sha1s(material, listed)


@given(data=st.data(), listed=st.lists(st.integers(0, DEVICE_COUNT - 1), unique=True))
@property_settings(max_examples=200)
def test_keychain_mutated_identity_listing(
    material: ToolMaterial, data: st.DataObject, listed: list[int]
) -> None:
    certificates = find_certificate_output([device.cert for device in material.devices])
    identities = identities_for(material, listed, [f"device {index}" for index in listed])
    damaged = data.draw(mutated_output(identities, keychain_lines(material)), label="identities")
    result = collect_system_keychain(material, certificates, damaged)

    # The certificate listing is intact, so damage to the identity listing hides no certificate.
    counts = fingerprint_counts(result)
    for device in material.devices:
        assert counts[device.fingerprint] == 1, f"{device.cert.subject} lost: {result.errors}"
    # A damaged listing can still parse and list SHA-1s, but only SHA-1s that its text contains.
    damaged_text = damaged.decode("utf-8", "replace").lower()
    for sha1 in present_sha1s(result, material):
        assert sha1 in damaged_text, f"key of {sha1} present, but the identity listing does not contain it"
    if damaged == identities:
        assert present_sha1s(result, material) == honest_sha1s(material, listed)


def injected_labels(material: ToolMaterial) -> st.SearchStrategy[str]:
    """Labels that try to add identity lines: line breaks, quotes, identity and count lines, headers."""
    fragments = st.one_of(
        st.text(max_size=8),
        st.sampled_from(['"', "\n", "\r", "\r\n", " (", ")", "\n\n", "  Valid identities only\n"]),
        keychain_lines(material).map(lambda line: line.decode("utf-8", "replace")),
    )
    return st.lists(fragments, max_size=6).map("".join)


@given(
    data=st.data(),
    listed=st.lists(st.integers(0, DEVICE_COUNT - 1), unique=True, max_size=DEVICE_COUNT - 1),
    statuses=st.lists(
        st.sampled_from([None, EXPIRED, NOT_TRUSTED]), min_size=DEVICE_COUNT, max_size=DEVICE_COUNT
    ),
)
@property_settings(max_examples=250)
def test_keychain_injected_labels(
    material: ToolMaterial, data: st.DataObject, listed: list[int], statuses: list[str | None]
) -> None:
    labels = [data.draw(injected_labels(material), label=f"label {index}") for index in listed]
    identities = [
        (material.devices[index].cert, label, statuses[index])
        for index, label in zip(listed, labels, strict=True)
    ]
    certificates = find_certificate_output([device.cert for device in material.devices])
    result = collect_system_keychain(material, certificates, find_identity_output(identities))

    present = present_sha1s(result, material)
    assert present <= honest_sha1s(material, listed), "a label made an unlisted certificate's key present"
    if not any("\n" in label for label in labels):
        assert present == honest_sha1s(material, listed), result.errors


@given(data=st.data())
@property_settings(max_examples=200)
def test_keychain_garbage_between_entries(material: ToolMaterial, data: st.DataObject) -> None:
    lines = keychain_lines(material).map(lambda line: line + b"\n")
    # A whole entry, hash lines included, of a damaged certificate reaches the certificate parser.
    damaged_entries = st.sampled_from(material.devices).flatmap(
        lambda device: damaged_der(device.cert_der()).map(find_certificate_entry)
    )
    garbage = st.lists(st.one_of(lines, damaged_entries), max_size=4).map(b"".join)
    parts = [data.draw(garbage, label="before")]
    for device in material.devices:
        parts.append(find_certificate_entry(certificate_der(device.cert)))
        parts.append(data.draw(garbage, label=f"after {device.cert.subject.rfc4514_string()}"))
    identities = identities_for(material, [0], ["device 0"])
    result = collect_system_keychain(material, b"".join(parts), identities)

    counts = fingerprint_counts(result)
    for device in material.devices:
        assert counts[device.fingerprint] >= 1, f"garbage hid {device.cert.subject}: {result.errors}"
    assert present_sha1s(result, material) == {material.sha1(0)}


# macOS device identity


@given(data=st.data(), fails=st.booleans())
@property_settings(max_examples=150)
def test_mac_serial_number_mutated_ioreg(material: ToolMaterial, data: st.DataObject, fails: bool) -> None:
    serial_line = st.text(max_size=16).map(
        lambda value: f'      "IOPlatformSerialNumber" = "{value}"'.encode()
    )
    lines = st.one_of(serial_line, keychain_lines(material))
    output = None if fails else data.draw(mutated_output(ioreg_output(), lines), label="ioreg")
    assume_no_key_header(output or b"")
    serial_number, error = read_mac_serial_number(RecordedRunner({IOREG_COMMAND: output}))
    assert (serial_number is None) != (error is None), (serial_number, error)
    if error is not None:
        assert_error_well_formed(error, "device")
    else:
        assert serial_number, repr(serial_number)
        assert serial_number == serial_number.strip(), repr(serial_number)


@given(data=st.data(), fails=st.booleans())
@property_settings(max_examples=150)
def test_mac_os_mutated_sw_vers(material: ToolMaterial, data: st.DataObject, fails: bool) -> None:
    key_line = st.tuples(
        st.sampled_from(["ProductName", "ProductVersion", "BuildVersion", "ProductVersionExtra", ""]),
        st.text(max_size=12),
    ).map(lambda parts: f"{parts[0]}:\t\t{parts[1]}".encode())
    output = None if fails else data.draw(mutated_output(sw_vers_output(), key_line), label="sw_vers")
    assume_no_key_header(output or b"")
    operating_system, error = read_mac_os(RecordedRunner({SW_VERS_COMMAND: output}))
    assert operating_system.family == "mac"
    assert operating_system.version, operating_system
    if error is not None:
        assert_error_well_formed(error, "device")


# Windows: the PowerShell backend


class FixedRunner:
    """A Runner that prints ``output`` for every command line, or fails when ``output`` is None."""

    def __init__(self, output: bytes | None) -> None:
        self._output = output

    def __call__(self, argv: Sequence[str]) -> bytes:
        if self._output is None:
            raise CommandError(command_text(argv), f"{command_text(argv)} exited with status 1")
        return self._output


def assert_no_key_present(result: SourceResult) -> None:
    # PowerShell's HasPrivateKey is only a recorded link, so no key read this way can be present.
    for cert in result.certificates:
        assert cert.private_key.status in {"unverified", "missing"}, cert.private_key


@given(data=st.data(), has_keys=st.lists(st.booleans(), min_size=DEVICE_COUNT, max_size=DEVICE_COUNT))
@property_settings(max_examples=250)
def test_powershell_mutated_listing(
    material: ToolMaterial, data: st.DataObject, has_keys: list[bool]
) -> None:
    listed = [
        ListedCertificate(device.cert_der(), has_private_key=has_key, friendly_name=f"device {index}")
        for index, (device, has_key) in enumerate(zip(material.devices, has_keys, strict=True))
    ]
    output = data.draw(mutated_bytes(certificate_listing_output(listed, bom=data.draw(st.booleans()))))
    assume_no_key_header(output)
    backend = PowerShellBackend(FixedRunner(output), fallback_reason="ctypes has no windll")
    result = collect_windows(["system", "user"], material.signers, backend=backend)
    assert_well_formed(result, "windows")
    assert_no_key_present(result)


@st.composite
def damaged_listed_certificates(draw: st.DrawFn, material: ToolMaterial) -> object:
    """An item of the PowerShell listing that is not a good certificate: any JSON value or a damaged field."""
    device = draw(st.sampled_from(material.devices))
    good = ListedCertificate(device.cert_der(), has_private_key=draw(st.booleans())).to_json_object()
    field = draw(st.sampled_from([*good, "Extra"]))
    kind = draw(st.sampled_from(["any value", "damaged field", "damaged DER"]))
    if kind == "any value":
        return draw(json_values(max_leaves=6))
    if kind == "damaged DER":
        der = draw(damaged_der(device.cert_der()))
        return ListedCertificate(der, has_private_key=draw(st.booleans())).to_json_object()
    return {**good, field: draw(json_values(max_leaves=4))}


@given(data=st.data(), has_keys=st.lists(st.booleans(), min_size=DEVICE_COUNT, max_size=DEVICE_COUNT))
@property_settings(max_examples=150)
def test_powershell_garbage_items(material: ToolMaterial, data: st.DataObject, has_keys: list[bool]) -> None:
    good_items: list[object] = [
        ListedCertificate(
            device.cert_der(), has_private_key=has_key, friendly_name=f"device {index}"
        ).to_json_object()
        for index, (device, has_key) in enumerate(zip(material.devices, has_keys, strict=True))
    ]
    garbage = data.draw(st.lists(damaged_listed_certificates(material), max_size=4), label="garbage")
    items = data.draw(st.permutations(good_items + garbage), label="items")
    output = powershell_output(items)
    assume_no_key_header(output)
    backend = PowerShellBackend(FixedRunner(output))
    result = collect_windows(["system"], material.signers, backend=backend)
    assert_well_formed(result, "windows")
    assert_no_key_present(result)

    for device, has_key in zip(material.devices, has_keys, strict=True):
        expected = "unverified" if has_key else "missing"
        statuses = [
            cert.private_key.status
            for cert in result.certificates
            if cert.fingerprint_sha256 == device.fingerprint
        ]
        assert expected in statuses, (
            f"garbage hid {device.cert.subject} or changed its key status: {statuses}"
        )


# Windows device identity


def identity_documents() -> st.SearchStrategy[bytes]:
    """The identity script's output with each field either as Windows prints it or any JSON value."""
    any_value = json_values(max_leaves=4)
    messages = st.one_of(st.none(), st.text(max_size=20))
    return st.builds(
        identity_output,
        serial_number=st.one_of(st.just("PF2ABC12"), any_value),
        caption=st.one_of(st.just("Microsoft Windows 11 Pro"), any_value),
        version=st.one_of(st.just("10.0.22631"), any_value),
        user_sid=st.one_of(st.just(SYSTEM_SID), any_value),
        bios_error=messages,
        operating_system_error=messages,
        user_sid_error=messages,
        bom=st.booleans(),
    )


@given(data=st.data(), fails=st.booleans())
@property_settings(max_examples=150)
def test_windows_identity_mutated(data: st.DataObject, fails: bool) -> None:
    outputs = st.one_of(
        identity_documents(), mutated_bytes(identity_output()), identity_documents().flatmap(mutated_bytes)
    )
    output = None if fails else data.draw(outputs, label="identity")
    assume_no_key_header(output or b"")
    identity = read_windows_identity(FixedRunner(output))

    for error in identity.errors:
        assert_error_well_formed(error, "device")
    locations = {error.location for error in identity.errors}
    assert identity.os.family == "windows"
    assert identity.os.name, identity.os
    assert identity.os.version, identity.os
    if identity.serial_number is None:
        assert locations & {BIOS_LOCATION, POWERSHELL_LOCATION}, identity.errors
    else:
        assert identity.serial_number, identity
        assert identity.serial_number == identity.serial_number.strip(), identity
    if identity.running_as_system is None:
        assert locations & {ACCOUNT_LOCATION, POWERSHELL_LOCATION}, identity.errors
