"""Tests of collector/nsssign.py against real NSS databases made with certutil and pk12util."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from collector import nsssign
from collector.nsssign import NssSignature, NssSignError, encode_ecdsa_signature, sign_with_nssdb
from tests.certgen import CertKey, NssDb, create_nssdb, make_leaf
from tests.secrets_scan import session_scanner

REPOSITORY = Path(__file__).resolve().parent.parent.parent
PASSWORD = "correct horse battery staple"
MESSAGE = b"certposture proof-of-possession challenge 7f3a"

Item = tuple[str, bytes, bytes]


def item(cert_key: CertKey, message: bytes = MESSAGE) -> Item:
    return (cert_key.fingerprint, cert_key.cert_der(), message)


def signature_of(outcomes: dict[str, NssSignature | NssSignError], cert_key: CertKey) -> NssSignature:
    outcome = outcomes[cert_key.fingerprint]
    assert isinstance(outcome, NssSignature), f"expected a signature, got {outcome}"
    return outcome


def error_of(outcomes: dict[str, NssSignature | NssSignError], fingerprint: str) -> NssSignError:
    outcome = outcomes[fingerprint]
    assert isinstance(outcome, NssSignError), f"expected an error, got {outcome}"
    return outcome


def verify(cert: x509.Certificate, signature: NssSignature, message: bytes = MESSAGE) -> None:
    """Verify with cryptography as the verifier does: RSA-PSS SHA-256 with salt 32, or DER ECDSA SHA-256. Raises InvalidSignature."""
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        assert signature.algorithm == "rsa-pss-sha256"
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_key.verify(signature.signature, message, pss, hashes.SHA256())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        assert signature.algorithm == "ecdsa-sha256"
        public_key.verify(signature.signature, message, ec.ECDSA(hashes.SHA256()))
    else:
        raise AssertionError(f"unexpected public key {public_key!r}")


@dataclass
class ChildRuns:
    """The subprocess.run calls made while a test patched it: argv, environment and stdin of each."""

    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def child_runs(monkeypatch: pytest.MonkeyPatch) -> ChildRuns:
    runs = ChildRuns()
    real_run = subprocess.run

    def recording_run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        runs.calls.append({"args": list(args), "env": kwargs.get("env"), "input": kwargs.get("input")})
        return real_run(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    return runs


def use_child(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Replace the child with ``python -c code``."""
    monkeypatch.setattr(nsssign, "_child_argv", lambda: [sys.executable, "-c", code])


@pytest.fixture(scope="module")
def rsa_device(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-rsa", key_type="rsa")


@pytest.fixture(scope="module")
def ec_device(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-ec", key_type="ec")


@pytest.fixture(scope="module")
def ed25519_device(ca: CertKey) -> CertKey:
    return make_leaf(ca, "device-ed25519", key_type="ed25519")


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nsssign")


@pytest.fixture(scope="module")
def open_db(databases: Path, ca: CertKey, rsa_device: CertKey, ec_device: CertKey) -> NssDb:
    """A database without password: RSA and EC keys with certificates, the CA certificate alone, a DSA key."""
    db = create_nssdb(databases / "open")
    db.import_key_pair(rsa_device, "device-rsa")
    db.import_key_pair(ec_device, "device-ec")
    db.add_certificate(ca.cert, "Example Device CA")
    db.generate_self_signed("device-dsa", "dsa")
    return db


@pytest.fixture(scope="module")
def locked_db(databases: Path, ca: CertKey, rsa_device: CertKey, ec_device: CertKey) -> NssDb:
    """A database with a password: RSA and EC keys with certificates, and the CA certificate alone."""
    db = create_nssdb(databases / "locked", password=PASSWORD)
    db.import_key_pair(rsa_device, "device-rsa")
    db.import_key_pair(ec_device, "device-ec")
    db.add_certificate(ca.cert, "Example Device CA")
    return db


@pytest.fixture(scope="module")
def dsa_item(open_db: NssDb) -> Item:
    """The DSA certificate that certutil -S made inside ``open_db``, with a message."""
    der = subprocess.run(
        ["certutil", "-L", "-d", open_db.spec, "-n", "device-dsa", "-r"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return (x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex(), der, MESSAGE)


def test_rsa_key_signs_pss(open_db: NssDb, rsa_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(open_db.directory), [item(rsa_device)], None)
    signature = signature_of(outcomes, rsa_device)
    assert signature.algorithm == "rsa-pss-sha256"
    assert len(signature.signature) == 256
    verify(rsa_device.cert, signature)


def test_rsa_signature_fails_other_message(open_db: NssDb, rsa_device: CertKey) -> None:
    signature = signature_of(sign_with_nssdb(str(open_db.directory), [item(rsa_device)], None), rsa_device)
    with pytest.raises(InvalidSignature):
        verify(rsa_device.cert, signature, MESSAGE + b"!")


def test_ec_key_signs_der_ecdsa(open_db: NssDb, ec_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(open_db.directory), [item(ec_device)], None)
    signature = signature_of(outcomes, ec_device)
    assert signature.algorithm == "ecdsa-sha256"
    assert signature.signature[0] == 0x30
    verify(ec_device.cert, signature)


def test_sql_prefix_accepted(open_db: NssDb, ec_device: CertKey) -> None:
    outcomes = sign_with_nssdb(open_db.spec, [item(ec_device)], None)
    verify(ec_device.cert, signature_of(outcomes, ec_device))


def test_empty_message_signs(open_db: NssDb, ec_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(open_db.directory), [item(ec_device, b"")], None)
    verify(ec_device.cert, signature_of(outcomes, ec_device), b"")


def test_password_given_signs(locked_db: NssDb, rsa_device: CertKey, ec_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(locked_db.directory), [item(rsa_device), item(ec_device)], PASSWORD)
    verify(rsa_device.cert, signature_of(outcomes, rsa_device))
    verify(ec_device.cert, signature_of(outcomes, ec_device))


def test_password_missing_needs_password(locked_db: NssDb, rsa_device: CertKey) -> None:
    error = error_of(
        sign_with_nssdb(str(locked_db.directory), [item(rsa_device)], None), rsa_device.fingerprint
    )
    assert error.password_needed is True
    assert str(locked_db.directory) in error.message
    assert "none was given" in error.message
    assert "--nssdb-password-file FILE" in error.message


def test_wrong_password_needs_password(locked_db: NssDb, rsa_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(locked_db.directory), [item(rsa_device)], "wrong password")
    error = error_of(outcomes, rsa_device.fingerprint)
    assert error.password_needed is True
    assert str(locked_db.directory) in error.message
    assert "SEC_ERROR_BAD_PASSWORD" in error.message
    assert "Pass the correct one with --nssdb-password-file" in error.message


def test_password_for_open_database_ignored(open_db: NssDb, rsa_device: CertKey) -> None:
    outcomes = sign_with_nssdb(str(open_db.directory), [item(rsa_device)], PASSWORD)
    verify(rsa_device.cert, signature_of(outcomes, rsa_device))


def test_certificate_without_key(open_db: NssDb, ca: CertKey) -> None:
    error = error_of(sign_with_nssdb(str(open_db.directory), [item(ca)], None), ca.fingerprint)
    assert error.password_needed is False
    assert "no private key" in error.message
    assert str(open_db.directory) in error.message
    assert "pk12util -i" in error.message


def test_certificate_without_key_password_given(locked_db: NssDb, ca: CertKey) -> None:
    error = error_of(sign_with_nssdb(str(locked_db.directory), [item(ca)], PASSWORD), ca.fingerprint)
    assert error.password_needed is False
    assert "no private key" in error.message


def test_certificate_not_in_database(open_db: NssDb, other_leaf: CertKey) -> None:
    outcomes = sign_with_nssdb(str(open_db.directory), [item(other_leaf)], None)
    error = error_of(outcomes, other_leaf.fingerprint)
    assert error.password_needed is False
    assert "is not in NSS database" in error.message
    assert str(open_db.directory) in error.message


def test_certificate_not_in_locked_database(locked_db: NssDb, other_leaf: CertKey) -> None:
    # A missing certificate is found without the password, so it is not reported as a password problem.
    error = error_of(
        sign_with_nssdb(str(locked_db.directory), [item(other_leaf)], None), other_leaf.fingerprint
    )
    assert error.password_needed is False
    assert "is not in NSS database" in error.message


def test_several_items_one_child(
    open_db: NssDb,
    rsa_device: CertKey,
    ec_device: CertKey,
    ca: CertKey,
    other_leaf: CertKey,
    dsa_item: Item,
    child_runs: ChildRuns,
) -> None:
    items = [item(rsa_device), item(ca), item(ec_device, b"second message"), item(other_leaf), dsa_item]
    outcomes = sign_with_nssdb(str(open_db.directory), items, None)
    assert len(child_runs.calls) == 1
    assert list(outcomes) == [fingerprint for fingerprint, _, _ in items]
    verify(rsa_device.cert, signature_of(outcomes, rsa_device))
    verify(ec_device.cert, signature_of(outcomes, ec_device), b"second message")
    assert "no private key" in error_of(outcomes, ca.fingerprint).message
    assert "is not in NSS database" in error_of(outcomes, other_leaf.fingerprint).message
    assert "DSA key" in error_of(outcomes, dsa_item[0]).message


def test_several_items_locked_without_password(
    locked_db: NssDb, rsa_device: CertKey, ca: CertKey, other_leaf: CertKey
) -> None:
    outcomes = sign_with_nssdb(str(locked_db.directory), [item(rsa_device), item(ca), item(other_leaf)], None)
    assert error_of(outcomes, rsa_device.fingerprint).password_needed is True
    # Without a login NSS shows no private keys, so a certificate without one also needs the password.
    assert error_of(outcomes, ca.fingerprint).password_needed is True
    assert error_of(outcomes, other_leaf.fingerprint).password_needed is False


def test_dsa_key_not_supported(open_db: NssDb, dsa_item: Item) -> None:
    error = error_of(sign_with_nssdb(str(open_db.directory), [dsa_item], None), dsa_item[0])
    assert error.password_needed is False
    assert "DSA key" in error.message
    assert "Use an RSA, EC or Ed25519 key" in error.message


def test_ed25519_key_not_supported_by_nss(open_db: NssDb, ed25519_device: CertKey) -> None:
    # NSS 3.87 has no CKM_EDDSA in its softoken, and certutil -A cannot even store an
    # Ed25519 certificate, so the key type is reported before the certificate is looked up.
    error = error_of(
        sign_with_nssdb(str(open_db.directory), [item(ed25519_device)], None), ed25519_device.fingerprint
    )
    assert error.password_needed is False
    assert "Ed25519" in error.message
    assert "CKM_EDDSA" in error.message
    assert str(open_db.directory) in error.message


def test_empty_directory_not_database(
    tmp_path: Path, rsa_device: CertKey, ec_device: CertKey, child_runs: ChildRuns
) -> None:
    outcomes = sign_with_nssdb(str(tmp_path), [item(rsa_device), item(ec_device)], None)
    assert child_runs.calls == []
    for cert_key in (rsa_device, ec_device):
        error = error_of(outcomes, cert_key.fingerprint)
        assert error.password_needed is False
        assert f"{tmp_path} is not an NSS sql: database" in error.message
        assert "certutil -N" in error.message


def test_missing_directory(tmp_path: Path, rsa_device: CertKey) -> None:
    error = error_of(
        sign_with_nssdb(str(tmp_path / "absent"), [item(rsa_device)], None), rsa_device.fingerprint
    )
    assert error.message.startswith(f"NSS database directory {tmp_path / 'absent'} not found")


def test_file_not_directory(tmp_path: Path, rsa_device: CertKey) -> None:
    path = tmp_path / "cert9.db"
    path.write_bytes(b"")
    error = error_of(sign_with_nssdb(str(path), [item(rsa_device)], None), rsa_device.fingerprint)
    assert "is not a directory" in error.message


def test_legacy_prefix_rejected(tmp_path: Path, rsa_device: CertKey) -> None:
    error = error_of(sign_with_nssdb(f"dbm:{tmp_path}", [item(rsa_device)], None), rsa_device.fingerprint)
    assert "legacy DBM format" in error.message


def test_corrupt_database_nss_error(tmp_path: Path, rsa_device: CertKey) -> None:
    (tmp_path / "cert9.db").write_bytes(b"this is not SQLite " * 100)
    (tmp_path / "key4.db").write_bytes(b"this is not SQLite " * 100)
    error = error_of(sign_with_nssdb(str(tmp_path), [item(rsa_device)], None), rsa_device.fingerprint)
    assert error.password_needed is False
    assert f"NSS could not open database {tmp_path}" in error.message
    assert "NSS error -8174 SEC_ERROR_BAD_DATABASE" in error.message


def test_password_only_on_stdin(locked_db: NssDb, rsa_device: CertKey, child_runs: ChildRuns) -> None:
    outcomes = sign_with_nssdb(str(locked_db.directory), [item(rsa_device)], PASSWORD)
    verify(rsa_device.cert, signature_of(outcomes, rsa_device))
    assert len(child_runs.calls) == 1
    call = child_runs.calls[0]
    assert all(PASSWORD not in argument for argument in call["args"])
    assert call["env"] is not None
    assert all(PASSWORD not in f"{name}={value}" for name, value in call["env"].items())
    assert json.loads(call["input"])["password"] == PASSWORD


def test_child_argv_runs_module() -> None:
    assert nsssign._child_argv() == [sys.executable, "-m", "collector.nsssign"]


def test_messages_never_contain_password(
    locked_db: NssDb,
    open_db: NssDb,
    tmp_path: Path,
    rsa_device: CertKey,
    ca: CertKey,
    other_leaf: CertKey,
    ed25519_device: CertKey,
    dsa_item: Item,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [item(rsa_device), item(ca), item(other_leaf), item(ed25519_device)]
    (tmp_path / "cert9.db").write_bytes(b"not SQLite")
    runs = [
        sign_with_nssdb(str(locked_db.directory), items, PASSWORD + "x"),
        sign_with_nssdb(str(locked_db.directory), items, PASSWORD),
        sign_with_nssdb(str(open_db.directory), [*items, dsa_item], PASSWORD),
        sign_with_nssdb(str(tmp_path), items, PASSWORD),
    ]
    # A child that fails and repeats its whole request, password included, on stderr.
    use_child(monkeypatch, "import sys; sys.stderr.write(sys.stdin.read()); sys.exit(3)")
    runs.append(sign_with_nssdb(str(locked_db.directory), items, PASSWORD))

    messages = [
        outcome.message
        for outcomes in runs
        for outcome in outcomes.values()
        if isinstance(outcome, NssSignError)
    ]
    assert len(messages) == 19
    for message in messages:
        assert PASSWORD not in message
    assert "(password)" in messages[-1]


def test_child_timeout_kills(
    monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey, ca: CertKey
) -> None:
    use_child(monkeypatch, "import time; time.sleep(60)")
    started = time.monotonic()
    outcomes = sign_with_nssdb(str(open_db.directory), [item(rsa_device), item(ca)], None, timeout=0.5)
    assert time.monotonic() - started < 10
    for fingerprint in (rsa_device.fingerprint, ca.fingerprint):
        error = error_of(outcomes, fingerprint)
        assert "timed out after 0.5 s and was killed" in error.message
        assert str(open_db.directory) in error.message


def test_child_crash(monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey) -> None:
    use_child(monkeypatch, "import os; os.abort()")
    error = error_of(
        sign_with_nssdb(str(open_db.directory), [item(rsa_device)], None), rsa_device.fingerprint
    )
    assert "crashed with SIGABRT" in error.message
    assert error.password_needed is False


def test_child_exit_status(monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey) -> None:
    use_child(monkeypatch, "raise RuntimeError('child failed')")
    error = error_of(
        sign_with_nssdb(str(open_db.directory), [item(rsa_device)], None), rsa_device.fingerprint
    )
    assert "exited with status 1: RuntimeError: child failed" in error.message


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("not json", "not JSON"),
        ("[]", "no results object"),
        ('{"results": {"FP": {"algorithm": "rsa-pkcs1", "signature": ""}}}', "no known algorithm"),
        ('{"results": {"FP": {"algorithm": "ecdsa-sha256", "signature": "%%%"}}}', "not base64"),
        ('{"results": {"FP": {"error": "failed"}}}', "no message or password_needed flag"),
        ('{"results": {"FP": "signed"}}', "is not an object"),
    ],
)
def test_child_invalid_output(
    monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey, output: str, expected: str
) -> None:
    text = output.replace("FP", rsa_device.fingerprint)
    use_child(monkeypatch, f"print({text!r})")
    error = error_of(
        sign_with_nssdb(str(open_db.directory), [item(rsa_device)], None), rsa_device.fingerprint
    )
    assert "printed invalid output" in error.message
    assert expected in error.message


def test_child_missing_result(
    monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey, ca: CertKey
) -> None:
    signature = base64.b64encode(b"\x01" * 256).decode()
    response = {"results": {rsa_device.fingerprint: {"algorithm": "rsa-pss-sha256", "signature": signature}}}
    use_child(monkeypatch, f"print({json.dumps(response)!r})")
    outcomes = sign_with_nssdb(str(open_db.directory), [item(rsa_device), item(ca)], None)
    assert outcomes[rsa_device.fingerprint] == NssSignature("rsa-pss-sha256", b"\x01" * 256)
    assert "returned no result for certificate" in error_of(outcomes, ca.fingerprint).message


def test_libnss3_missing(
    monkeypatch: pytest.MonkeyPatch, open_db: NssDb, rsa_device: CertKey, ca: CertKey
) -> None:
    use_child(
        monkeypatch,
        "import sys; from collector.nsssign import main; sys.exit(main('libnss3-not-installed.so'))",
    )
    outcomes = sign_with_nssdb(str(open_db.directory), [item(rsa_device), item(ca)], None)
    for fingerprint in (rsa_device.fingerprint, ca.fingerprint):
        error = error_of(outcomes, fingerprint)
        assert "libnss3-not-installed.so could not be loaded" in error.message
        assert "Install the package libnss3" in error.message
        assert error.password_needed is False


def run_child(request: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        nsssign._child_argv(),
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=60,
        check=False,
        env=nsssign._child_environment(),
    )


def request_for(db: NssDb, password: str | None, items: Sequence[Item]) -> dict[str, Any]:
    return {
        "directory": str(db.directory),
        "password": password,
        "items": [
            {
                "fingerprint": fingerprint,
                "certificate": base64.b64encode(der).decode(),
                "message": base64.b64encode(message).decode(),
            }
            for fingerprint, der, message in items
        ],
    }


@pytest.mark.parametrize("password", [PASSWORD, "wrong password", None])
def test_child_releases_nss_objects(
    locked_db: NssDb,
    rsa_device: CertKey,
    ec_device: CertKey,
    ca: CertKey,
    other_leaf: CertKey,
    password: str | None,
) -> None:
    # NSS_ShutdownContext fails with SEC_ERROR_BUSY while a certificate or key is still referenced.
    items = [item(rsa_device), item(ec_device), item(ca), item(other_leaf)]
    completed = run_child(request_for(locked_db, password, items))
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    assert response["shutdown_error"] is None
    assert set(response["results"]) == {fingerprint for fingerprint, _, _ in items}


def test_child_output_has_no_key_material(
    open_db: NssDb, rsa_device: CertKey, ec_device: CertKey, ca: CertKey, dsa_item: Item
) -> None:
    completed = run_child(request_for(open_db, None, [item(rsa_device), item(ec_device), item(ca), dsa_item]))
    assert completed.returncode == 0, completed.stderr
    scanner = session_scanner()
    assert scanner.scan_text("child stdout", completed.stdout.decode()) == []
    assert scanner.scan_text("child stderr", completed.stderr.decode()) == []


def test_child_rejects_invalid_request() -> None:
    request = {"directory": "/nonexistent", "password": PASSWORD, "items": [{"fingerprint": 1}]}
    completed = run_child(request)
    assert completed.returncode == 2
    assert completed.stdout == b""
    assert b"invalid request: TypeError" in completed.stderr
    assert PASSWORD.encode() not in completed.stderr


def test_no_items_starts_no_child(open_db: NssDb, child_runs: ChildRuns) -> None:
    assert sign_with_nssdb(str(open_db.directory), [], None) == {}
    assert child_runs.calls == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda it: [(it[0].upper(), it[1], it[2])], "invalid fingerprint"),
        (lambda it: [(it[0][:-1], it[1], it[2])], "invalid fingerprint"),
        (lambda it: [it, it], "more than once"),
        (lambda it: [(it[0], it[1] + b"\x00", it[2])], "is not the SHA-256"),
    ],
)
def test_invalid_items_raise(
    open_db: NssDb, rsa_device: CertKey, mutate: Callable[[Item], list[Item]], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        sign_with_nssdb(str(open_db.directory), mutate(item(rsa_device)), None)


def test_password_with_nul(locked_db: NssDb, rsa_device: CertKey, child_runs: ChildRuns) -> None:
    error = error_of(
        sign_with_nssdb(str(locked_db.directory), [item(rsa_device)], "a\0b"), rsa_device.fingerprint
    )
    assert error.password_needed is True
    assert "NUL character" in error.message
    assert child_runs.calls == []


def raw_signature(r: int, s: int, size: int) -> bytes:
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@pytest.mark.parametrize(
    ("r", "s", "size"),
    [
        (1, 1, 32),
        (0x7F << 248, 0x80 << 248, 32),
        ((1 << 256) - 1, 0x0102, 32),
        (0, 5, 32),
        ((1 << 521) - 1, (1 << 520) + 3, 66),
        (0x80, 0x7F, 66),
    ],
)
def test_encode_ecdsa_signature_matches_cryptography(r: int, s: int, size: int) -> None:
    assert encode_ecdsa_signature(raw_signature(r, s, size)) == encode_dss_signature(r, s)


@pytest.mark.parametrize("raw", [b"", b"\x01\x02\x03"])
def test_encode_ecdsa_rejects_invalid_length(raw: bytes) -> None:
    with pytest.raises(ValueError, match="raw ECDSA signature has invalid length"):
        encode_ecdsa_signature(raw)


def test_import_loads_no_cryptography() -> None:
    code = (
        "import sys, collector.nsssign\n"
        "print(sorted(m for m in ('cryptography', 'collector.sources.nssdb', 'pydantic') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    assert completed.stdout.strip() == "[]"
