"""The PowerShell backend for Windows stores, tested through fake output and a fake powershell.exe."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.sources import windows
from collector.sources.windows import TRUST_STORES, KeyState, StoreListing, collect_windows
from collector.sources.windows_powershell import PowerShellBackend
from tests.certgen import CertKey
from tests.collector.windows_fakes import (
    SYSTEM,
    USER,
    FakeRunner,
    ListedCertificate,
    certificate_listing_output,
    install_fake_powershell,
    only,
    path_with,
    posix_only,
    powershell_output,
)

# --- PowerShell backend -------------------------------------------------------------------------


def read_powershell(output: bytes, store: str = "system") -> StoreListing:
    return PowerShellBackend(FakeRunner(output)).read_store(TRUST_STORES[store])


def test_powershell_command_line() -> None:
    runner = FakeRunner(b"")
    PowerShellBackend(runner).read_store(SYSTEM)
    [argv] = runner.calls
    assert argv[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
    script = argv[4]
    assert "Get-ChildItem -Path 'Cert:\\LocalMachine\\My'" in script
    assert "ConvertTo-Json -Compress" in script
    assert "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false" in script
    assert "[Convert]::ToBase64String($_.RawData)" in script
    for field in ("Thumbprint", "HasPrivateKey", "FriendlyName"):
        assert f"{field} = $_.{field}" in script
    assert '"' not in script


def test_powershell_user_store_path() -> None:
    runner = FakeRunner(b"")
    PowerShellBackend(runner).read_store(USER)
    assert "'Cert:\\CurrentUser\\My'" in runner.calls[0][4]


def test_powershell_single_object(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True, "corp-device")])
    assert output.startswith(b"{")
    listing = read_powershell(output)
    [entry] = listing.entries
    assert entry.der == leaf.cert_der()
    assert entry.friendly_name == "corp-device"
    assert entry.key_state is KeyState.RECORDED_ONLY
    assert listing.errors == []


def test_powershell_list(leaf: CertKey, other_leaf: CertKey, ca: CertKey) -> None:
    output = certificate_listing_output(
        [
            ListedCertificate(leaf.cert_der(), True, "corp-device"),
            ListedCertificate(other_leaf.cert_der(), False, ""),
            ListedCertificate(ca.cert_der(), False, None),
        ]
    )
    assert output.startswith(b"[")
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [leaf.cert_der(), other_leaf.cert_der(), ca.cert_der()]
    assert [entry.key_state for entry in listing.entries] == [
        KeyState.RECORDED_ONLY,
        KeyState.NOT_RECORDED,
        KeyState.NOT_RECORDED,
    ]
    assert [entry.friendly_name for entry in listing.entries] == ["corp-device", None, None]


def test_powershell_empty_store() -> None:
    listing = read_powershell(b"")
    assert listing.entries == []
    assert listing.errors == []
    assert len(listing.notes) == 1


def test_powershell_blank_lines_only() -> None:
    assert read_powershell(b"\r\n").errors == []


def test_powershell_byte_order_mark(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True)], bom=True)
    assert output.startswith(b"\xef\xbb\xbf")
    [entry] = read_powershell(output).entries
    assert entry.der == leaf.cert_der()


def test_powershell_escaped_friendly_name(leaf: CertKey) -> None:
    output = certificate_listing_output(
        [ListedCertificate(leaf.cert_der(), True, "Jane's <VPN> & Wi-Fi – é")]
    )
    assert b"\\u0027" in output
    [entry] = read_powershell(output).entries
    assert entry.friendly_name == "Jane's <VPN> & Wi-Fi – é"


def test_powershell_raw_data_byte_list(leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), raw_data=list(leaf.cert_der()))])
    [entry] = read_powershell(output).entries
    assert entry.der == leaf.cert_der()


def test_powershell_bad_base64_skips_one(leaf: CertKey, other_leaf: CertKey) -> None:
    output = certificate_listing_output(
        [
            ListedCertificate(leaf.cert_der(), raw_data="MIIB$$$not base64"),
            ListedCertificate(other_leaf.cert_der()),
        ]
    )
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [other_leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert error.location == "system"
    assert "certificate 1 of 2" in error.message
    assert "not valid base64" in error.message


def test_powershell_thumbprint_mismatch(leaf: CertKey, other_leaf: CertKey) -> None:
    wrong = windows.thumbprint(other_leaf.cert_der())
    output = certificate_listing_output(
        [ListedCertificate(other_leaf.cert_der()), ListedCertificate(leaf.cert_der(), thumbprint=wrong)]
    )
    listing = read_powershell(output)
    assert [entry.der for entry in listing.entries] == [other_leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert "certificate 2 of 2" in error.message
    assert f"Thumbprint {wrong} does not match" in error.message
    assert windows.thumbprint(leaf.cert_der()) in error.message


def test_powershell_lower_case_thumbprint_accepted(leaf: CertKey) -> None:
    lower = windows.thumbprint(leaf.cert_der()).lower()
    listing = read_powershell(
        certificate_listing_output([ListedCertificate(leaf.cert_der(), thumbprint=lower)])
    )
    assert len(listing.entries) == 1


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("a string", "expected a JSON object"),
        ({"Thumbprint": "00", "HasPrivateKey": True}, "RawData is missing"),
        ({"RawData": [1, 300], "Thumbprint": "00", "HasPrivateKey": True}, "byte values 0-255"),
        ({"RawData": "", "Thumbprint": "00", "HasPrivateKey": True}, "RawData is empty"),
    ],
)
def test_powershell_malformed_item(leaf: CertKey, item: object, fragment: str) -> None:
    valid = ListedCertificate(leaf.cert_der()).to_json_object()
    listing = read_powershell(powershell_output([item, valid]))
    assert [entry.der for entry in listing.entries] == [leaf.cert_der()]
    [error] = listing.errors
    assert error.step == "parse"
    assert "certificate 1 of 2" in error.message
    assert fragment in error.message


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("Thumbprint", None, "Thumbprint is missing"),
        ("HasPrivateKey", "True", "HasPrivateKey is missing or not true or false"),
        ("FriendlyName", 7, "FriendlyName is not a string"),
    ],
)
def test_powershell_wrong_field_type(leaf: CertKey, field: str, value: object, fragment: str) -> None:
    item = ListedCertificate(leaf.cert_der()).to_json_object()
    item[field] = value
    listing = read_powershell(powershell_output([item]))
    assert listing.entries == []
    [error] = listing.errors
    assert fragment in error.message


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'"just a string"', "is a JSON string, not an object or a list"),
    ],
)
def test_powershell_unreadable_output(output: bytes, fragment: str) -> None:
    listing = read_powershell(output)
    assert listing.entries == []
    [error] = listing.errors
    assert error.step == "parse"
    assert error.location == "system"
    assert fragment in error.message


def test_powershell_command_failure() -> None:
    runner = FakeRunner(error="powershell.exe exited with status 1: Cannot find path")
    listing = PowerShellBackend(runner).read_store(USER)
    [error] = listing.errors
    assert error.source == "windows"
    assert error.location == "user"
    assert error.step == "command"
    assert "Cannot find path" in error.message
    assert len(listing.notes) == 1


def test_powershell_facts_never_present(leaf: CertKey, other_leaf: CertKey) -> None:
    output = certificate_listing_output(
        [ListedCertificate(leaf.cert_der(), True), ListedCertificate(other_leaf.cert_der(), False)]
    )
    result = collect_windows(["system"], [], backend=PowerShellBackend(FakeRunner(output)))
    assert only(result, leaf).private_key.status == "unverified"
    assert only(result, other_leaf).private_key.status == "missing"
    assert all(cert.private_key.present is False for cert in result.certificates)
    [note] = result.notes
    assert note.source == "windows"
    assert note.location == "system"


@posix_only
def test_fake_powershell_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaf: CertKey) -> None:
    output = certificate_listing_output([ListedCertificate(leaf.cert_der(), True, "corp-device")], bom=True)
    install_fake_powershell(tmp_path / "bin", stdout=output)
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = collect_windows(["user"], [], backend=PowerShellBackend())
    cert = only(result, leaf)
    assert cert.source.label == "corp-device"
    assert cert.private_key.status == "unverified"
    assert result.errors == []


@posix_only
def test_powershell_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = collect_windows(["system"], [], backend=PowerShellBackend())
    [error] = result.errors
    assert error.step == "command"
    assert "powershell.exe was not found on PATH" in error.message


@posix_only
def test_powershell_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_powershell(
        tmp_path / "bin", stderr=b"Get-ChildItem : Cannot find path 'Cert:\\CurrentUser\\My'\r\n", exit_code=1
    )
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = collect_windows(["user"], [], backend=PowerShellBackend())
    [error] = result.errors
    assert error.step == "command"
    assert "exited with status 1" in error.message
    assert "Cannot find path" in error.message
    assert result.certificates == []
