"""`certposture ca` commands: accepted inputs, rejected inputs, records, private key handling."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certposture.cli import main
from tests.certgen import CertKey, make_ca, make_leaf


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ca() -> CertKey:
    return make_ca("Example Device CA")


def test_add_pem_prints_record(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey) -> None:
    ca.write_cert(tmp_path / "ca.pem")
    code, out, _ = run(
        capsys, tmp_path / "home", "ca", "add", "--name", "Device CA", str(tmp_path / "ca.pem")
    )
    assert code == 0
    record = json.loads(out)
    assert next(iter(record)) == "id"
    assert record["name"] == "Device CA"
    assert record["subject"] == "CN=Example Device CA"
    assert record["issuer"] == "CN=Example Device CA"
    assert record["fingerprint_sha256"] == ca.fingerprint
    assert record["serial_number"] == format(ca.cert.serial_number, "X")
    assert record["signature_algorithm"] == "ecdsa-with-SHA256"
    assert record["expires_on"].endswith("Z")
    assert record["uploaded_on"].endswith("Z")


def test_add_der(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey) -> None:
    ca.write_cert(tmp_path / "ca.der", encoding="der")
    code, out, _ = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "ca.der"))
    assert code == 0
    assert json.loads(out)["fingerprint_sha256"] == ca.fingerprint


def test_add_one_line_pem(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey) -> None:
    one_line = ca.cert_pem().decode().replace("\n", "\\n")
    (tmp_path / "ca.txt").write_text(one_line)
    code, out, _ = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "ca.txt"))
    assert code == 0
    assert json.loads(out)["fingerprint_sha256"] == ca.fingerprint


def test_add_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ca: CertKey
) -> None:
    import io
    import sys

    stdin = io.TextIOWrapper(io.BytesIO(ca.cert_pem()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(capsys, tmp_path / "home", "ca", "add", "-")
    assert code == 0
    assert json.loads(out)["fingerprint_sha256"] == ca.fingerprint


def test_add_twice_keeps_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey) -> None:
    ca.write_cert(tmp_path / "ca.pem")
    _, first, _ = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "ca.pem"))
    code, second, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "ca.pem"))
    assert code == 0
    assert json.loads(second)["id"] == json.loads(first)["id"]
    assert "already stored" in err
    _, listed, _ = run(capsys, tmp_path / "home", "ca", "list")
    assert len(json.loads(listed)) == 1


def test_bundle_key_dropped_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + ca.key_pem())
    code, out, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "bundle.pem"))
    assert code == 0
    assert "was not stored" in err
    assert json.loads(out)["private_key_stored"] is False
    assert not (tmp_path / "home" / "private").exists()
    assert "PRIVATE KEY" not in out + err


def test_bundle_key_kept_with_mode_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + ca.key_pem("traditional"))
    code, out, err = run(
        capsys, tmp_path / "home", "ca", "add", "--keep-private-key", str(tmp_path / "bundle.pem")
    )
    assert code == 0
    record = json.loads(out)
    assert record["private_key_stored"] is True
    key_file = tmp_path / "home" / "private" / f"{record['id']}.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stored = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert stored.public_key() == ca.key.public_key()
    assert "PRIVATE KEY" not in out + err
    _, show_output, _ = run(capsys, tmp_path / "home", "ca", "show", record["id"])
    assert "PRIVATE KEY" not in show_output


def test_bundle_with_foreign_key_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    other = make_ca("Other CA")
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + other.key_pem())
    code, out, err = run(
        capsys, tmp_path / "home", "ca", "add", "--keep-private-key", str(tmp_path / "bundle.pem")
    )
    assert code == 2
    assert "does not belong" in err
    assert out == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("public_key_pem", "public key, not a certificate"),
        ("public_key_der", "public key, not a certificate"),
        ("garbage", "not a certificate"),
        ("empty", "empty"),
        ("key_only", "private key but no certificate"),
        ("two_certificates", "contains 2 certificates"),
        ("truncated", "no complete BEGIN/END block"),
    ],
)
def test_add_rejects_non_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey, content: str, message: str
) -> None:
    public = ca.key.public_key()
    inputs = {
        "public_key_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "public_key_der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "garbage": b"\x30\x82\x01\x00not a certificate at all",
        "empty": b"\n",
        "key_only": ca.key_pem(),
        "two_certificates": ca.cert_pem() + make_ca("Second CA").cert_pem(),
        "truncated": ca.cert_pem()[:200],
    }
    (tmp_path / "input").write_bytes(inputs[content])
    code, out, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "input"))
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_add_rejects_leaf_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    leaf = make_leaf(ca, "device-1")
    leaf.write_cert(tmp_path / "leaf.pem")
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "leaf.pem"))
    assert code == 2
    assert "is not a CA" in err


def test_add_rejects_certificate_without_basic_constraints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "No Constraints")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca.key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    (tmp_path / "plain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "plain.pem"))
    assert code == 2
    assert "no basicConstraints" in err


def test_add_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "absent.pem"))
    assert code == 2
    assert "absent.pem" in err


def test_remove_rejected_while_rule_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey
) -> None:
    ca.write_cert(tmp_path / "ca.pem")
    _, out, _ = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "ca.pem"))
    ca_id = json.loads(out)["id"]
    rule = {
        "name": "r",
        "type": "client_certificate_v2",
        "input": {"certificate_id": ca_id, "operating_system": "linux", "check_private_key": False},
    }
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    _, rule_out, _ = run(capsys, tmp_path / "home", "rules", "add", str(tmp_path / "rule.json"))
    rule_id = rule_out.strip()

    code, _, err = run(capsys, tmp_path / "home", "ca", "remove", ca_id)
    assert code == 2
    assert rule_id in err
    assert run(capsys, tmp_path / "home", "ca", "show", ca_id)[0] == 0

    assert run(capsys, tmp_path / "home", "rules", "remove", rule_id)[0] == 0
    assert run(capsys, tmp_path / "home", "ca", "remove", ca_id)[0] == 0
    code, _, err = run(capsys, tmp_path / "home", "ca", "show", ca_id)
    assert code == 2
    assert "not found" in err


def test_remove_deletes_kept_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertKey) -> None:
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + ca.key_pem())
    _, out, _ = run(
        capsys, tmp_path / "home", "ca", "add", "--keep-private-key", str(tmp_path / "bundle.pem")
    )
    ca_id = json.loads(out)["id"]
    assert run(capsys, tmp_path / "home", "ca", "remove", ca_id)[0] == 0
    assert not (tmp_path / "home" / "private" / f"{ca_id}.pem").exists()


def test_home_from_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ca: CertKey
) -> None:
    monkeypatch.setenv("CERTPOSTURE_HOME", str(tmp_path / "env-home"))
    ca.write_cert(tmp_path / "ca.pem")
    assert main(["ca", "add", str(tmp_path / "ca.pem")]) == 0
    capsys.readouterr()
    assert (tmp_path / "env-home" / "certposture.db").is_file()


VECTORS = Path(cryptography_vectors.__file__).parent / "x509"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("custom/two_basic_constraints.pem", "certificate extensions cannot be parsed (Duplicate 2.5.29.19"),
        ("custom/invalid_version.pem", "certificate cannot be parsed: 7 is not a valid X509 version"),
        ("san_x400address.der", "certificate extensions cannot be parsed (x400Address/EDIPartyName"),
        ("san_edipartyname.der", "certificate extensions cannot be parsed (x400Address/EDIPartyName"),
        ("custom/invalid_utf8_common_name.pem", "certificate names cannot be parsed"),
        ("custom/long-form-name-attribute.pem", "certificate names cannot be parsed"),
        ("custom/name_attribute_unsupported_tag.pem", "certificate names cannot be parsed"),
    ],
)
def test_add_malformed_corpus_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, expected: str
) -> None:
    # Certificates from cryptography's test vectors whose parts fail only when first read.
    path = VECTORS / name

    code, out, err = run(capsys, tmp_path, "ca", "add", str(path))

    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {path}: {expected}")
    assert err.count("\n") == 1
    assert run(capsys, tmp_path, "ca", "list")[1].strip() == "[]"


def test_add_begin_lines_without_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 16,000 BEGIN lines: the splitter reads them in one pass (a pattern search per line took 35 s).
    path = tmp_path / "begins.pem"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\n" * 16_000)

    code, out, err = run(capsys, tmp_path, "ca", "add", str(path))

    assert code == 2
    assert out == ""
    assert err == f"error: {path}: PEM armor found but no complete BEGIN/END block; check the file is whole\n"
