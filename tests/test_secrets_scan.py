"""Tests of the secrets scan in tests/secrets_scan.py: what it finds, what it ignores, and how a leak fails a test."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certposture.cli import main
from certposture.errors import InputError
from collector.collect import Locations, collect
from tests.certgen import CertKey, KeyType, generate_key, make_ca, make_leaf
from tests.secrets_scan import (
    GRAM_LENGTH,
    GRAM_STEP,
    Finding,
    SecretsScanner,
    session_scanner,
)

REPOSITORY = Path(__file__).resolve().parent.parent
KEY_TYPES: list[KeyType] = ["rsa", "ec", "ed25519"]
DETECTED_LENGTH = GRAM_LENGTH + GRAM_STEP - 1


def scanner_for(target: CertKey, key_type: KeyType) -> SecretsScanner:
    """Return a scanner that contains ``target`` and two other keys of its type, as the session's would."""
    scanner = SecretsScanner()
    for _ in range(2):
        scanner.registry.register(generate_key(key_type), "an earlier test")
    scanner.registry.register(target.key, "the target")
    return scanner


def pem_body_lines(pem: bytes) -> list[str]:
    return [line for line in pem.decode().splitlines() if not line.startswith("-----")]


def first_private_value(key: object) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
        return d.to_bytes((d.bit_length() + 7) // 8, "big")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(32, "big")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.private_bytes_raw()


def leak_forms(target: CertKey) -> dict[str, str]:
    """Ways key material could appear in output, without the PEM header lines."""
    lines = pem_body_lines(target.key_pem())
    value = first_private_value(target.key)
    forms = {
        "PKCS#8 body": "\n".join(lines),
        "one PKCS#8 line": lines[len(lines) // 2],
        "PKCS#8 body in JSON": orjson.dumps({"message": "\n".join(lines)}).decode(),
        "PKCS#8 DER in base64 on one line": base64.b64encode(target.key_der()).decode(),
        "private value in upper-case hex": value.hex().upper(),
        "private value as colon-separated hex": ":".join(f"{byte:02x}" for byte in value),
        "private value in decimal": str(int.from_bytes(value, "big")),
        "private value in base64url": base64.urlsafe_b64encode(value).decode().rstrip("="),
    }
    if not isinstance(target.key, ed25519.Ed25519PrivateKey):
        forms["traditional body"] = "\n".join(pem_body_lines(target.key_pem("traditional")))
    return forms


def public_forms(target: CertKey) -> dict[str, str]:
    """The certificate and public key of the target key, which are public."""
    public_key = target.key.public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms = {
        "certificate PEM": target.cert_pem().decode(),
        "certificate DER in hex": target.cert_der().hex(),
        "public key PEM": spki.decode(),
        "fingerprint": target.fingerprint,
    }
    if isinstance(public_key, rsa.RSAPublicKey):
        forms["modulus in hex"] = format(public_key.public_numbers().n, "x")
        forms["modulus in decimal"] = str(public_key.public_numbers().n)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        forms["public point in hex"] = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ).hex()
    else:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        forms["raw public key in base64"] = base64.b64encode(raw).decode()
    return forms


def assert_excerpt_holds_no_key(finding: Finding, key_text: str) -> None:
    assert len(finding.excerpt) <= 40
    for start in range(len(key_text) - DETECTED_LENGTH + 1):
        assert key_text[start : start + DETECTED_LENGTH] not in str(finding)


# The registry and the scan


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_scan_finds_key_encodings(key_type: KeyType) -> None:
    target = make_ca("Scan Target CA", key_type=key_type)
    scanner = scanner_for(target, key_type)

    for form, text in leak_forms(target).items():
        findings = scanner.scan_text("output", text)
        assert findings, form
        assert all("the target" in finding.description for finding in findings), (form, findings)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_scan_ignores_public_material(key_type: KeyType) -> None:
    target = make_ca("Scan Target CA", key_type=key_type)
    scanner = scanner_for(target, key_type)

    for form, text in public_forms(target).items():
        assert scanner.scan_text("output", text) == [], form


def test_scan_finds_unregistered_pem_keys() -> None:
    scanner = SecretsScanner()
    for header in ("-----BEGIN PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----"):
        (finding,) = scanner.scan_text("output", f"error: {header}\nAAAA")
        assert finding.description.startswith("private key header")


def test_finding_names_place_without_key() -> None:
    target = make_ca("Scan Target CA", key_type="rsa")
    scanner = scanner_for(target, "rsa")
    body = "".join(pem_body_lines(target.key_pem()))

    findings = scanner.scan_text("stderr of `certposture ca add`", f"error: cannot parse {body}")

    assert findings
    for finding in findings:
        assert finding.place == "stderr of `certposture ca add`"
        assert_excerpt_holds_no_key(finding, body)


def test_redact_removes_key_material() -> None:
    target = make_ca("Scan Target CA")
    scanner = scanner_for(target, "ec")
    text = "\n".join([
        "captured stderr:",
        target.key_pem().decode(),
        orjson.dumps("".join(pem_body_lines(target.key_pem("traditional")))).decode(),
        target.cert_pem().decode(),
    ])  # fmt: skip

    redacted = scanner.redact(text)

    assert scanner.scan_text("redacted", redacted) == []
    assert target.cert_pem().decode() in redacted


def test_scan_reads_gzip_output() -> None:
    target = make_ca("Scan Target CA")
    scanner = scanner_for(target, "ec")

    scanner.capture("bundle", gzip.compress(target.key_pem()))

    assert scanner.take_findings()


@pytest.mark.parametrize(
    ("command", "is_cli"),
    [
        ("python -m certposture --home h ca list", True),
        ('bash -c "/usr/bin/python3 -m certposture collect | python -m certposture evaluate -"', True),
        ("/work/.venv/bin/certposture check", True),
        ("certposture rules list", True),
        ("pk12util -o out.p12 -d sql:/tmp/certposture-home", False),
        ("openssl x509 -in certposture.pem", False),
    ],
)
def test_cli_command_recognized(command: str, is_cli: bool) -> None:
    from tests.secrets_scan import _CLI_COMMAND

    assert bool(_CLI_COMMAND.search(command)) is is_cli


# The session's capture points


def test_generated_key_is_registered(request: pytest.FixtureRequest) -> None:
    key = CertKey(make_ca("Scan CA").cert, generate_key("ec"))
    findings = session_scanner().scan_text("output", "\n".join(pem_body_lines(key.key_pem())))

    assert findings
    assert request.node.nodeid in findings[0].description


def test_capture_points_see_cli_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A collect and evaluate round reaches every capture point of the domain code."""
    home = str(tmp_path / "home")
    ca_path = make_ca("Capture CA").write_cert(tmp_path / "ca.pem")
    assert main(["--home", home, "ca", "add", "--id", "capture-ca", str(ca_path)]) == 0
    rule = {
        "name": "Capture",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": "capture-ca",
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": [str(tmp_path / "missing.pem")]},
        },
    }
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    assert main(["--home", home, "rules", "add", str(tmp_path / "rule.json")]) == 0
    facts_path = str(tmp_path / "facts.json")
    decision_log = str(tmp_path / "decisions.jsonl")
    session_scanner().take_findings()

    assert main(["--home", home, "collect", "-o", facts_path]) == 0
    assert main(["--home", home, "evaluate", facts_path, "--decision-log", decision_log]) == 1
    logging.getLogger("certposture.test").debug("a debug record")
    capsys.readouterr()
    places = set(session_scanner().pending_places())

    for expected in (
        "facts from collector.collect",
        "facts document (dump_facts)",
        "file written with -o",
        "CollectionError message",
        "results from posture.evaluate_facts",
        "policy results from engine.Evaluator",
        "posture-log record",
        "decision-log event",
        "log record certposture.test DEBUG",
    ):
        assert expected in places, expected
    for stream in ("stdout", "stderr"):
        prefix = f"{stream} of in-process `certposture --home {home} collect"
        assert any(place.startswith(prefix) for place in places), stream


def test_certificate_facts_are_captured(tmp_path: Path) -> None:
    leaf = make_leaf(make_ca("Capture CA"), "device")
    path = leaf.write_cert(tmp_path / "leaf.pem")
    session_scanner().take_findings()

    collect(Locations(paths=(str(path),)), [], hostname="host", serial_number="S1")

    assert "certificate facts" in session_scanner().pending_places()


def test_cli_errors_on_key_files_hold_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Give key files to commands that expect certificates, rules and facts: the errors must not quote them."""
    key_owner = make_ca("Key Owner CA", key_type="rsa")
    pem_key = key_owner.write_key(tmp_path / "key.pem", key_format="traditional")
    der_key = key_owner.write_key(tmp_path / "key.der", encoding="der")
    home = str(tmp_path / "home")
    session_scanner().take_findings()

    for arguments in (
        ["ca", "add", str(pem_key)],
        ["ca", "add", str(der_key)],
        ["rules", "add", str(pem_key)],
        ["evaluate", str(pem_key)],
    ):
        code = main(["--home", home, *arguments])
        _, err = capsys.readouterr()
        assert code in (2, 3), (arguments, err)
        assert err.startswith("error: "), arguments
        assert session_scanner().take_findings() == [], arguments


def test_leak_in_cli_output_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_owner = make_ca("Key Owner CA")
    key_file = key_owner.write_key(tmp_path / "key.pem")

    def parse_with_leak(raw: bytes, source: str) -> None:
        raise InputError(f"{source} is not a certificate: {raw.decode()}")

    monkeypatch.setattr("certposture.signing.parse_signing_certificate", parse_with_leak)
    assert main(["--home", str(tmp_path / "home"), "ca", "add", str(key_file)]) == 2
    capsys.readouterr()
    findings = session_scanner().take_findings()

    places = {finding.place for finding in findings}
    assert any(place.startswith("stderr of in-process `certposture --home") for place in places), places
    assert "InputError message" in places
    for finding in findings:
        assert_excerpt_holds_no_key(finding, "".join(pem_body_lines(key_owner.key_pem())))


def test_leak_in_log_record_is_found() -> None:
    key_owner = make_ca("Key Owner CA")
    body = "".join(pem_body_lines(key_owner.key_pem()))

    logging.getLogger("certposture.leak").debug("loaded %s", body)
    findings = session_scanner().take_findings()

    assert [finding.place for finding in findings] == ["log record certposture.leak DEBUG"]


def fake_cli(tmp_path: Path, stream: str) -> Path:
    """A `certposture` program that prints the file it is given, as a leaking CLI would."""
    program = tmp_path / "bin" / "certposture"
    program.parent.mkdir()
    redirect = " >&2" if stream == "stderr" else ""
    program.write_text(f'#!/bin/sh\ncat "$1"{redirect}\n')
    program.chmod(0o755)
    return program


def test_leak_in_subprocess_output_is_found(tmp_path: Path) -> None:
    key_file = make_ca("Key Owner CA").write_key(tmp_path / "key.pem", key_format="traditional")
    program = fake_cli(tmp_path, "stdout")

    completed = subprocess.run([str(program), str(key_file)], capture_output=True, check=False)
    findings = session_scanner().take_findings()

    assert completed.returncode == 0
    assert findings
    assert {finding.place for finding in findings} == {f"stdout of subprocess `{program} {key_file}`"}


def test_leak_in_subprocess_stderr_file_is_found(tmp_path: Path) -> None:
    key_file = make_ca("Key Owner CA").write_key(tmp_path / "key.pem")
    program = fake_cli(tmp_path, "stderr")

    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen([str(program), str(key_file)], stderr=stderr)
        assert process.wait(timeout=30) == 0
    findings = session_scanner().take_findings()

    assert findings
    assert {finding.place for finding in findings} == {f"stderr file of subprocess `{program} {key_file}`"}


LEAKING_TESTS = """
import logging
import os
from pathlib import Path

from tests.certgen import make_ca


def test_leak():
    ca = make_ca("Leak CA")
    Path(os.environ["LEAKED_KEY_FILE"]).write_bytes(ca.key_pem())
    logging.getLogger("certposture.leak").warning("key: %s", ca.key_pem().decode())


def test_clean():
    make_ca("Clean CA")
"""

SCAN_CONFTEST = """
from tests import secrets_scan


def pytest_configure(config):
    secrets_scan.install(config)


def pytest_unconfigure(config):
    secrets_scan.uninstall(config)
"""


def test_leaking_test_fails_at_teardown(tmp_path: Path) -> None:
    """Run a leaking test in a pytest of its own: it errors at teardown and the report hides the key."""
    (tmp_path / "conftest.py").write_text(SCAN_CONFTEST)
    (tmp_path / "test_leaking.py").write_text(LEAKING_TESTS)
    key_file = tmp_path / "leaked.pem"
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "LEAKED_KEY_FILE": str(key_file)}

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leaking.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr

    assert completed.returncode == 1, output
    assert "2 passed, 1 error" in output
    assert "ERROR at teardown of test_leak" in output
    assert "private key material in the output of this test" in output
    assert "log record certposture.leak WARNING" in output
    # Reading the key registers it here, so the scan below looks for it in the report.
    serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    findings = session_scanner().scan_text("inner pytest output", output)
    assert [finding for finding in findings if "key #" in finding.description] == []
    for line in pem_body_lines(key_file.read_bytes()):
        assert line not in output


def test_session_scan_counts_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An in-process CLI run adds its stdout and stderr to the outputs scanned."""
    scanner = session_scanner()
    before = scanner.texts_scanned

    assert main(["--home", str(tmp_path / "home"), "ca", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    scanner.take_findings()

    assert scanner.texts_scanned >= before + 2
