"""macOS and Windows end to end: collect through recorded tool output, evaluate against each OS's rules.

The platform is set by replacing ``detect_platform``. The tools that the
collectors run (``security``, ``ioreg``, ``sw_vers``, ``powershell.exe``) are
fakes on PATH, which replay output that each test generates in the real
formats from its own certificates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from certposture import posture
from collector.sources import windows, windows_cryptoapi
from tests.certgen import CLIENT_AUTH, CertKey, make_leaf
from tests.collector.macos_tools import FakeTools, find_certificate_output, find_identity_output, ioreg_output
from tests.collector.macos_tools import sw_vers_output as mac_sw_vers_output
from tests.collector.windows_fakes import (
    NO_KEY,
    FakeCertificate,
    FakeCryptoApi,
    FakeKey,
    FakeStore,
    ListedCertificate,
    certificate_listing_output,
    identity_output,
)
from tests.test_end_to_end import Cli, ca, cli

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

MAC_SERIAL = "C02XK1ABJGH5"
HOSTNAME = "corp-laptop-7"
SYSTEM_KEYCHAIN = "/Library/Keychains/System.keychain"

MAC_RULE: dict[str, Any] = {
    "cn": "${serial_number}_mycompany",
    "extended_key_usage": ["clientAuth"],
    "subject_alternative_names": ["${hostname}.corp.example"],
}


def results_by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {result["rule_name"]: result for result in results["results"]}


def check(cli: Cli, *collect_args: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Collect with the device's own identity (hostname given) to a file, evaluate it; return code, facts, results."""
    facts_path = cli.work / "facts.json"
    code, _, err = cli.run("collect", "--hostname", HOSTNAME, *collect_args, "-o", str(facts_path))
    assert code == 0, err
    code, out, err = cli.run("evaluate", str(facts_path))
    assert "Traceback" not in err
    return code, json.loads(facts_path.read_text()), json.loads(out)


def add_rules_for_each_os(cli: Cli, ca_id: str, rule: dict[str, Any], own_os: str) -> None:
    """Store the same conditions as a rule for ``own_os`` and as rules for the two other systems."""
    cli.add_rule(ca_id, own_os, name=f"{own_os} rule", **rule)
    for other_os in ("linux", "mac", "windows"):
        if other_os != own_os:
            cli.add_rule(ca_id, other_os, name=f"{other_os} rule", **rule)


# macOS


@pytest.fixture
def mac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    tools = FakeTools.install(tmp_path / "mac-tools")
    tools.record(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], ioreg_output(MAC_SERIAL))
    tools.record(["sw_vers"], mac_sw_vers_output("macOS", "14.5", "23F79"))
    monkeypatch.setenv("PATH", tools.path)
    monkeypatch.setattr(posture, "detect_platform", lambda: "mac")
    return tools


def mac_device_leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, f"{MAC_SERIAL}_mycompany", sans=[f"{HOSTNAME}.corp.example"], eku=[CLIENT_AUTH])


def record_keychain(tools: FakeTools, leaf: CertKey, ca: CertKey, *, with_identity: bool) -> None:
    tools.record(
        ["security", "find-certificate", "-a", "-Z", "-p", SYSTEM_KEYCHAIN],
        find_certificate_output([leaf.cert, ca.cert]),
    )
    identities = [(leaf.cert, "corp-device", None)] if with_identity else []
    tools.record(
        ["security", "find-identity", "-p", "ssl-client", SYSTEM_KEYCHAIN], find_identity_output(identities)
    )


def test_mac_rule_passes_on_mac(cli: Cli, ca: CertKey, mac: FakeTools) -> None:
    ca_id = cli.add_ca(ca)
    leaf = mac_device_leaf(ca)
    record_keychain(mac, leaf, ca, with_identity=True)
    add_rules_for_each_os(cli, ca_id, MAC_RULE, "mac")

    code, out, err = cli.run("check", "--hostname", HOSTNAME)

    assert code == 0, err
    results = results_by_name(json.loads(out))
    assert results["mac rule"]["status"] == "passed"
    assert results["mac rule"]["matched_certificates"] == [leaf.fingerprint]
    assert results["linux rule"]["status"] == "not_applicable"
    assert results["windows rule"]["status"] == "not_applicable"


def test_mac_facts_come_from_the_tools(cli: Cli, ca: CertKey, mac: FakeTools) -> None:
    ca_id = cli.add_ca(ca)
    leaf = mac_device_leaf(ca)
    record_keychain(mac, leaf, ca, with_identity=True)
    cli.add_rule(ca_id, "mac", **MAC_RULE)

    code, facts, results = check(cli)

    assert code == 0
    assert facts["device"]["serial_number"] == MAC_SERIAL
    assert facts["device"]["os"] == {"family": "mac", "name": "macOS", "version": "14.5"}
    assert facts["errors"] == []
    by_fingerprint = {cert["fingerprint_sha256"]: cert for cert in facts["certificates"]}
    assert by_fingerprint[leaf.fingerprint]["source"] == {
        "type": "keychain",
        "location": "system",
        "label": None,
    }
    assert by_fingerprint[leaf.fingerprint]["private_key"]["status"] == "present"
    assert by_fingerprint[leaf.fingerprint]["signed_by"] == [ca_id]
    assert ["security", "find-identity", "-p", "ssl-client", SYSTEM_KEYCHAIN] in mac.calls()
    assert results["results"][0]["status"] == "passed"


def test_mac_rule_fails_without_identity(cli: Cli, ca: CertKey, mac: FakeTools) -> None:
    ca_id = cli.add_ca(ca)
    leaf = mac_device_leaf(ca)
    record_keychain(mac, leaf, ca, with_identity=False)
    cli.add_rule(ca_id, "mac", **MAC_RULE)

    code, _, results = check(cli)

    assert code == 1
    (result,) = results["results"]
    assert result["status"] == "failed"
    codes = {reason["code"] for candidate in result["candidates"] for reason in candidate["reasons"]}
    assert "private_key_missing" in codes


def test_mac_keychain_failure_is_explained(cli: Cli, ca: CertKey, mac: FakeTools) -> None:
    ca_id = cli.add_ca(ca)
    mac.record(
        ["security", "find-certificate", "-a", "-Z", "-p", SYSTEM_KEYCHAIN],
        status=50,
        stderr="security: SecKeychainSearchCopyNext: The specified keychain could not be found.",
    )
    cli.add_rule(ca_id, "mac", **MAC_RULE)

    code, facts, results = check(cli)

    assert code == 1
    (error,) = facts["errors"]
    assert (error["source"], error["location"], error["step"]) == ("keychain", "system", "command")
    assert "exited with status 50" in error["message"]
    (result,) = results["results"]
    assert result["status"] == "failed"
    assert result["errors"] == [error]


# Windows

WINDOWS_SERIAL = "PF3WIN42"
WINDOWS_RULE: dict[str, Any] = {
    "cn": "${serial_number}_mycompany",
    "extended_key_usage": ["clientAuth"],
    "locations": {"trust_stores": ["system"]},
}
SYSTEM_SID = "S-1-5-18"

# Prints the output for any powershell.exe call: a certificate listing for scripts that
# read a store (by the store path in the script), the identity otherwise.
_FAKE_POWERSHELL = """#!{python}
import pathlib, sys
folder = pathlib.Path({folder!r})
script = sys.argv[-1]
if "Cert:\\\\LocalMachine\\\\My" in script:
    name = "system.json"
elif "Cert:\\\\CurrentUser\\\\My" in script:
    name = "user.json"
else:
    name = "identity.json"
path = folder / name
sys.stdout.buffer.write(path.read_bytes() if path.exists() else b"")
"""


def install_powershell(directory: Path, identity: bytes, listings: dict[str, bytes] | None = None) -> str:
    """Write a fake ``powershell.exe`` into ``directory`` and return the PATH that finds it."""
    directory.mkdir(parents=True)
    (directory / "identity.json").write_bytes(identity)
    for store, output in (listings or {}).items():
        (directory / f"{store}.json").write_bytes(output)
    script = directory / "powershell.exe"
    script.write_text(_FAKE_POWERSHELL.format(python=sys.executable, folder=str(directory)))
    script.chmod(0o755)
    return str(directory)


def windows_device_leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, f"{WINDOWS_SERIAL}_mycompany", eku=[CLIENT_AUTH])


@pytest.fixture
def windows_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(posture, "detect_platform", lambda: "windows")


def use_crypto_api(monkeypatch: pytest.MonkeyPatch, api: FakeCryptoApi) -> None:
    monkeypatch.setattr(windows, "default_backend", lambda: windows_cryptoapi.CryptoApiBackend(api))


def test_windows_rule_passes_on_windows(
    cli: Cli, ca: CertKey, windows_platform: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_id = cli.add_ca(ca)
    leaf = windows_device_leaf(ca)
    api = FakeCryptoApi(
        {
            windows.CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(
                [
                    FakeCertificate(leaf.cert_der(), "corp-device"),
                    FakeCertificate(ca.cert_der(), None, NO_KEY),
                ]
            )
        }
    )
    use_crypto_api(monkeypatch, api)
    monkeypatch.setenv(
        "PATH", install_powershell(tmp_path / "ps", identity_output(serial_number=WINDOWS_SERIAL))
    )
    add_rules_for_each_os(cli, ca_id, WINDOWS_RULE | {"locations": None}, "windows")

    code, facts, results = check(cli)

    assert code == 0
    by_name = results_by_name(results)
    assert by_name["windows rule"]["status"] == "passed"
    assert by_name["windows rule"]["matched_certificates"] == [leaf.fingerprint]
    assert by_name["linux rule"]["status"] == "not_applicable"
    assert by_name["mac rule"]["status"] == "not_applicable"
    assert facts["device"]["serial_number"] == WINDOWS_SERIAL
    assert facts["device"]["os"]["family"] == "windows"
    assert facts["notes"] == []
    (device_cert,) = [
        cert for cert in facts["certificates"] if cert["fingerprint_sha256"] == leaf.fingerprint
    ]
    assert device_cert["source"] == {"type": "windows", "location": "system", "label": "corp-device"}
    assert device_cert["private_key"]["status"] == "present"
    assert api.leaks() == []


def test_windows_user_store_key_access_denied(
    cli: Cli, ca: CertKey, windows_platform: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_id = cli.add_ca(ca)
    leaf = windows_device_leaf(ca)
    denied = FakeKey(acquire_error=windows.NTE_PERM)
    api = FakeCryptoApi(
        {
            windows.CERT_SYSTEM_STORE_LOCAL_MACHINE: FakeStore(),
            windows.CERT_SYSTEM_STORE_CURRENT_USER: FakeStore(
                [FakeCertificate(leaf.cert_der(), None, denied)]
            ),
        }
    )
    use_crypto_api(monkeypatch, api)
    monkeypatch.setenv(
        "PATH", install_powershell(tmp_path / "ps", identity_output(serial_number=WINDOWS_SERIAL))
    )
    cli.add_rule(ca_id, "windows", **(WINDOWS_RULE | {"locations": {"trust_stores": ["user"]}}))

    code, facts, results = check(cli)

    assert code == 1
    (result,) = results["results"]
    codes = {reason["code"] for candidate in result["candidates"] for reason in candidate["reasons"]}
    assert codes == {"private_key_unverified"}
    assert facts["certificates"][0]["private_key"]["status"] == "unverified"
    assert api.leaks() == []


def test_windows_powershell_fallback_as_system(
    cli: Cli, ca: CertKey, windows_platform: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ctypes.windll on this machine, so the collector falls back to PowerShell by itself.
    ca_id = cli.add_ca(ca)
    leaf = windows_device_leaf(ca)
    listing = certificate_listing_output([ListedCertificate(leaf.cert_der(), has_private_key=True)])
    monkeypatch.setenv(
        "PATH",
        install_powershell(
            tmp_path / "ps",
            identity_output(serial_number=WINDOWS_SERIAL, user_sid=SYSTEM_SID),
            {"system": listing},
        ),
    )
    cli.add_rule(ca_id, "windows", name="with key", **WINDOWS_RULE)
    cli.add_rule(ca_id, "windows", name="without key", check_private_key=False, **WINDOWS_RULE)

    facts_path = cli.work / "facts.json"
    code, _, err = cli.run("collect", "--hostname", HOSTNAME, "-o", str(facts_path))
    assert code == 0, err
    facts = json.loads(facts_path.read_text())
    code, out, _ = cli.run("evaluate", str(facts_path))

    by_name = results_by_name(json.loads(out))
    assert code == 1
    assert by_name["without key"]["status"] == "passed"
    assert by_name["with key"]["status"] == "failed"
    # HasPrivateKey only reports that the store records a key link, so it never counts as presence.
    assert facts["certificates"][0]["private_key"]["status"] == "unverified"
    note_locations = {(note["source"], note["location"]) for note in facts["notes"]}
    assert ("windows", "user") in note_locations
    assert any("PowerShell" in note["message"] for note in facts["notes"])
    assert "note: windows user:" in err


def test_windows_unexpected_failure_exits_3(
    cli: Cli, ca: CertKey, windows_platform: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_id = cli.add_ca(ca)
    leaf = windows_device_leaf(ca)
    store = FakeStore([FakeCertificate(leaf.cert_der(), "corp-device")])
    api = FakeCryptoApi(
        {windows.CERT_SYSTEM_STORE_LOCAL_MACHINE: store}, raise_at=("CertEnumCertificatesInStore", 0)
    )
    use_crypto_api(monkeypatch, api)
    monkeypatch.setenv(
        "PATH", install_powershell(tmp_path / "ps", identity_output(serial_number=WINDOWS_SERIAL))
    )
    cli.add_rule(ca_id, "windows", **WINDOWS_RULE)

    code, out, err = cli.run("check", "--hostname", HOSTNAME)

    # 1 would mean "a rule failed"; an error the collector did not expect must fail closed as 3.
    assert code == 3
    assert out == ""
    assert err.startswith(
        "error: unexpected InjectedFailure: injected failure in CertEnumCertificatesInStore"
    )
    assert "Traceback" not in err
    assert api.leaks() == []
