from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.x509.oid import NameOID

from collector.facts import Certificate, CollectionError
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.pem import DEFAULT_MAX_FILE_SIZE, collect_pem
from tests.certgen import (
    CertKey,
    KeyFormat,
    KeyType,
    der_integer,
    der_length,
    make_ca,
    make_leaf,
    with_huge_rsa_modulus,
    write_pem,
)

PASSWORD = b"correct horse"


def only(result: SourceResult, cert_key: CertKey) -> Certificate:
    matches = [cert for cert in result.certificates if cert.fingerprint_sha256 == cert_key.fingerprint]
    assert len(matches) == 1, f"expected the certificate once, found {len(matches)}: {result}"
    return matches[0]


def errors_for(result: SourceResult, path: Path) -> list[CollectionError]:
    return [error for error in result.errors if error.location == str(path)]


def test_pem_cert_and_key_one_file(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), leaf.key_pem())
    result = collect_pem([str(path)], [])
    cert = only(result, leaf)
    assert cert.source.type == "pem"
    assert cert.source.location == str(path)
    assert cert.private_key.present is True
    assert cert.private_key.status == "present"
    assert cert.private_key.location == str(path)
    assert result.errors == []


def test_pem_key_before_cert(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.key_pem(), leaf.cert_pem())
    assert only(collect_pem([str(path)], []), leaf).private_key.present is True


def test_pem_cert_and_key_two_files(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.crt")
    key_path = leaf.write_key(tmp_path / "client.key")
    result = collect_pem([str(cert_path), str(key_path)], [])
    cert = only(result, leaf)
    assert cert.source.location == str(cert_path)
    assert cert.private_key.present is True
    assert cert.private_key.location == str(key_path)
    assert result.errors == []


def test_pem_key_in_other_directory(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    (tmp_path / "certs").mkdir()
    (tmp_path / "private").mkdir()
    leaf.write_cert(tmp_path / "certs" / "client.pem")
    key_path = leaf.write_key(tmp_path / "private" / "client.key")
    result = collect_pem([str(tmp_path / "certs"), str(tmp_path / "private")], [])
    assert only(result, leaf).private_key.location == str(key_path)


def test_pem_chain_file(tmp_path: Path) -> None:
    root = make_ca("Root CA")
    intermediate = make_ca("Issuing CA", parent=root)
    leaf = make_leaf(intermediate, "device-1")
    path = write_pem(
        tmp_path / "chain.pem", leaf.cert_pem(), intermediate.cert_pem(), root.cert_pem(), leaf.key_pem()
    )
    signers = [Signer("root", root.cert), Signer("intermediate", intermediate.cert)]
    result = collect_pem([str(path)], signers)
    assert [cert.fingerprint_sha256 for cert in result.certificates] == [
        leaf.fingerprint,
        intermediate.fingerprint,
        root.fingerprint,
    ]
    assert only(result, leaf).signed_by == ["intermediate"]
    assert only(result, leaf).private_key.present is True
    assert only(result, intermediate).private_key.status == "missing"
    assert only(result, intermediate).signed_by == ["root"]


def test_pem_der_certificate(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.der", encoding="der")
    result = collect_pem([str(cert_path)], [Signer("ca", ca.cert)])
    cert = only(result, leaf)
    assert cert.signed_by == ["ca"]
    assert cert.private_key.status == "missing"
    assert result.errors == []


def test_pem_der_key(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.der", encoding="der")
    key_path = leaf.write_key(tmp_path / "client.key.der", encoding="der")
    cert = only(collect_pem([str(cert_path), str(key_path)], []), leaf)
    assert cert.private_key.present is True
    assert cert.private_key.location == str(key_path)


KEY_FORMATS: list[tuple[KeyType, KeyFormat, bytes]] = [
    ("rsa", "pkcs8", b"-----BEGIN PRIVATE KEY-----"),
    ("rsa", "traditional", b"-----BEGIN RSA PRIVATE KEY-----"),
    ("ec", "pkcs8", b"-----BEGIN PRIVATE KEY-----"),
    ("ec", "traditional", b"-----BEGIN EC PRIVATE KEY-----"),
    # Ed25519 has no traditional OpenSSL format.
    ("ed25519", "pkcs8", b"-----BEGIN PRIVATE KEY-----"),
]


@pytest.mark.parametrize(("key_type", "key_format", "header"), KEY_FORMATS)
def test_pem_key_formats(
    tmp_path: Path, ca: CertKey, key_type: KeyType, key_format: KeyFormat, header: bytes
) -> None:
    leaf = make_leaf(ca, "device-1", key_type=key_type)
    key_pem = leaf.key_pem(key_format)
    assert key_pem.startswith(header)
    cert_path = leaf.write_cert(tmp_path / "client.pem")
    key_path = write_pem(tmp_path / "client.key", key_pem)
    result = collect_pem([str(cert_path), str(key_path)], [])
    cert = only(result, leaf)
    assert cert.private_key.present is True
    assert cert.private_key.location == str(key_path)
    assert cert.public_key.algorithm == key_type
    assert result.errors == []


def test_pem_key_in_own_file_preferred(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    copy = leaf.write_key(tmp_path / "a-copy.key")
    own = write_pem(tmp_path / "b-client.pem", leaf.cert_pem(), leaf.key_pem())
    cert = only(collect_pem([str(copy), str(own)], []), leaf)
    assert cert.private_key.location == str(own)


def test_pem_key_of_other_certificate(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    other = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), other.key_pem())
    cert = only(collect_pem([str(path)], []), leaf)
    assert cert.private_key.present is False
    assert cert.private_key.status == "missing"
    assert cert.private_key.location is None
    assert cert.private_key.reason is not None
    assert cert.private_key.reason == (
        "the one unencrypted private key in the collected paths does not match the certificate's public key"
    )


def test_pem_no_key_missing(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert = only(collect_pem([str(leaf.write_cert(tmp_path / "client.pem"))], []), leaf)
    assert cert.private_key.status == "missing"
    assert cert.private_key.present is False


@pytest.mark.parametrize(
    ("key_format", "marker"),
    [("pkcs8", b"ENCRYPTED PRIVATE KEY"), ("traditional", b"Proc-Type: 4,ENCRYPTED")],
)
def test_pem_encrypted_key_same_file(
    tmp_path: Path, ca: CertKey, key_format: KeyFormat, marker: bytes
) -> None:
    leaf = make_leaf(ca, "device-1")
    key_pem = leaf.key_pem(key_format, password=PASSWORD)
    assert marker in key_pem
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), key_pem)
    result = collect_pem([str(path)], [])
    cert = only(result, leaf)
    assert cert.private_key.present is False
    assert cert.private_key.status == "unverified"
    assert cert.private_key.location == str(path)
    assert cert.private_key.reason is not None
    assert "encrypted" in cert.private_key.reason
    assert result.errors == []


def test_pem_encrypted_key_other_file(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.pem")
    key_path = leaf.write_key(tmp_path / "client.key", password=PASSWORD)
    cert = only(collect_pem([str(cert_path), str(key_path)], []), leaf)
    assert cert.private_key.status == "unverified"
    assert cert.private_key.present is False
    assert cert.private_key.location == str(key_path)


def test_pem_encrypted_der_key(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.pem")
    key_path = leaf.write_key(tmp_path / "client.key", password=PASSWORD, encoding="der")
    cert = only(collect_pem([str(cert_path), str(key_path)], []), leaf)
    assert cert.private_key.status == "unverified"
    assert cert.private_key.location == str(key_path)


def test_pem_plain_key_wins_over_encrypted(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), leaf.key_pem(password=PASSWORD))
    key_path = leaf.write_key(tmp_path / "plain.key")
    cert = only(collect_pem([str(path), str(key_path)], []), leaf)
    assert cert.private_key.status == "present"
    assert cert.private_key.location == str(key_path)


def test_pem_encrypted_elsewhere_ignored_when_file_has_keys(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    other = make_leaf(ca, "device-2")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), other.key_pem())
    encrypted_path = other.write_key(tmp_path / "other.key", password=PASSWORD)
    cert = only(collect_pem([str(path), str(encrypted_path)], []), leaf)
    assert cert.private_key.status == "missing"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.pem", os.urandom(512)),
        ("truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n"),
        ("bad-base64.pem", b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"),
        ("bad-der.pem", b"-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n"),
        ("bad-key.pem", b"-----BEGIN PRIVATE KEY-----\nMAMCAQU=\n-----END PRIVATE KEY-----\n"),
        ("empty.pem", b""),
    ],
)
def test_pem_bad_file_next_to_good(tmp_path: Path, ca: CertKey, name: str, content: bytes) -> None:
    leaf = make_leaf(ca, "device-1")
    bad = tmp_path / name
    bad.write_bytes(content)
    good = write_pem(tmp_path / "good.pem", leaf.cert_pem(), leaf.key_pem())
    result = collect_pem([str(bad), str(good)], [])
    assert only(result, leaf).private_key.present is True
    errors = errors_for(result, bad)
    assert len(errors) == 1, result.errors
    assert errors[0].source == "pem"
    assert errors[0].step in {"load", "key"}
    assert str(bad) in errors[0].message


def test_pem_bad_block_keeps_other_blocks(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    bad_block = b"-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n"
    path = write_pem(tmp_path / "client.pem", bad_block, leaf.cert_pem(), leaf.key_pem())
    result = collect_pem([str(path)], [])
    assert only(result, leaf).private_key.present is True
    assert len(result.errors) == 1
    assert result.errors[0].step == "load"
    assert "line 1" in result.errors[0].message


def test_pem_truncated_after_good_cert(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    pem = leaf.cert_pem()
    path = write_pem(tmp_path / "client.pem", pem, pem[: len(pem) // 2])
    result = collect_pem([str(path)], [])
    only(result, leaf)
    assert len(result.errors) == 1
    assert "no END line" in result.errors[0].message


def test_pem_missing_path(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    good = leaf.write_cert(tmp_path / "good.pem")
    missing = tmp_path / "absent.pem"
    result = collect_pem([str(missing), str(good)], [])
    only(result, leaf)
    assert [(error.step, error.location) for error in result.errors] == [("open", str(missing))]
    assert str(missing) in result.errors[0].message


def test_pem_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "client.pem"
    link.symlink_to(tmp_path / "gone.pem")
    result = collect_pem([str(tmp_path)], [])
    assert [(error.step, error.location) for error in result.errors] == [("open", str(link))]


def test_pem_fifo_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "client.pem"
    os.mkfifo(fifo)
    result = collect_pem([str(fifo)], [])
    assert [(error.step, error.location) for error in result.errors] == [("open", str(fifo))]
    assert "not a regular file" in result.errors[0].message


def test_pem_large_file_skipped(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    large = tmp_path / "large.pem"
    large.write_bytes(leaf.cert_pem() + b"\n" * DEFAULT_MAX_FILE_SIZE)
    result = collect_pem([str(large)], [])
    assert result.certificates == []
    assert [(error.step, error.location) for error in result.errors] == [("read", str(large))]
    assert str(DEFAULT_MAX_FILE_SIZE) in result.errors[0].message


def test_pem_explicit_file_without_certificate(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("no certificates here\n")
    result = collect_pem([str(path)], [])
    assert [(error.step, error.location) for error in result.errors] == [("load", str(path))]


def test_pem_directory_skips_unrelated_files(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    (tmp_path / "README").write_text("certificates live here\n")
    (tmp_path / "request.csr").write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQU=\n-----END CERTIFICATE REQUEST-----\n"
    )
    write_pem(tmp_path / "client.pem", leaf.cert_pem(), leaf.key_pem())
    result = collect_pem([str(tmp_path)], [])
    only(result, leaf)
    assert result.errors == []


def test_pem_directory_recursive_sorted(tmp_path: Path, ca: CertKey) -> None:
    leaves = [make_leaf(ca, f"device-{index}") for index in range(4)]
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    leaves[3].write_cert(tmp_path / "b" / "deep" / "z.pem")
    leaves[2].write_cert(tmp_path / "b" / "a.pem")
    leaves[1].write_cert(tmp_path / "a" / "x.pem")
    leaves[0].write_cert(tmp_path / "0.pem")
    result = collect_pem([str(tmp_path)], [])
    assert [cert.source.location for cert in result.certificates] == [
        str(tmp_path / "0.pem"),
        str(tmp_path / "a" / "x.pem"),
        str(tmp_path / "b" / "a.pem"),
        str(tmp_path / "b" / "deep" / "z.pem"),
    ]
    assert [cert.fingerprint_sha256 for cert in result.certificates] == [leaf.fingerprint for leaf in leaves]


def test_pem_file_listed_twice_read_once(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = leaf.write_cert(tmp_path / "client.pem")
    result = collect_pem([str(path), str(tmp_path), str(path)], [])
    only(result, leaf)


def test_pem_location_absolute_normalized(
    tmp_path: Path, ca: CertKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = make_leaf(ca, "device-1")
    (tmp_path / "certs").mkdir()
    path = write_pem(tmp_path / "certs" / "client.pem", leaf.cert_pem(), leaf.key_pem())
    monkeypatch.chdir(tmp_path)
    cert = only(collect_pem(["./certs/../certs//client.pem"], []), leaf)
    assert cert.source.location == str(path)
    assert cert.private_key.location == str(path)


@pytest.mark.parametrize("key_type", ["rsa", "ec", "ed25519"])
def test_pem_facts_hold_no_key_material(
    tmp_path: Path, ca: CertKey, key_type: KeyType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaf = make_leaf(ca, "device-1", key_type=key_type)
    key_pem = leaf.key_pem()
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), key_pem)
    broken_key = write_pem(tmp_path / "broken.pem", key_pem[:40] + key_pem[60:])
    result = collect_pem([str(path), str(broken_key)], [])
    assert only(result, leaf).private_key.present is True
    assert len(result.errors) == 1
    dump = repr(result) + "".join(cert.model_dump_json() for cert in result.certificates)
    dump += "".join(error.model_dump_json() for error in result.errors)
    dump += caplog.text
    key_der = leaf.key_der()
    # Short base64 lines could occur in the facts by chance; 16 characters cannot.
    body_lines = [line for line in key_pem.decode().splitlines() if not line.startswith("-----")]
    for line in body_lines:
        if len(line) >= 16:
            assert line not in dump
    assert base64.b64encode(key_der).decode() not in dump
    assert key_der.hex() not in dump


def test_pem_trusted_certificate_rejected_with_fix(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    plain = leaf.write_cert(tmp_path / "plain.crt")
    trusted = tmp_path / "trusted.pem"
    subprocess.run(
        ["openssl", "x509", "-in", str(plain), "-trustout", "-addtrust", "clientAuth", "-out", str(trusted)],
        check=True,
        capture_output=True,
    )
    assert b"BEGIN TRUSTED CERTIFICATE" in trusted.read_bytes()
    result = collect_pem([str(trusted)], [])
    assert result.certificates == []
    assert [(error.step, error.location) for error in result.errors] == [("load", str(trusted))]

    fix = re.search(r"`(openssl [^`]+)`", result.errors[0].message)
    assert fix is not None, result.errors[0].message
    subprocess.run(shlex.split(fix.group(1)), cwd=tmp_path, check=True, capture_output=True)
    only(collect_pem([str(tmp_path / "client.pem")], []), leaf)


def test_pem_directory_link_reported(tmp_path: Path, ca: CertKey) -> None:
    target = tmp_path / "target"
    target.mkdir()
    make_leaf(ca, "linked").write_cert(target / "client.pem")
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    (scanned / "linked").symlink_to(target)
    make_leaf(ca, "direct").write_cert(scanned / "direct.pem")

    result = collect_pem([str(scanned)], [])

    assert [certificate.subject.common_names for certificate in result.certificates] == [["direct"]]
    (error,) = result.errors
    assert error.location == str(scanned / "linked")
    assert error.step == "open"
    assert "symbolic link to a directory, which is not followed" in error.message


def test_huge_key_does_not_hide_others(tmp_path: Path, ca: CertKey) -> None:
    good = make_leaf(ca, "good")
    good.write_cert(tmp_path / "good.pem")
    (tmp_path / "huge.der").write_bytes(with_huge_rsa_modulus(make_leaf(ca, "huge").cert, 1_000_008))

    result = collect_pem([str(tmp_path)], [])

    assert [cert.fingerprint_sha256 for cert in result.certificates] == [good.fingerprint]
    (error,) = result.errors
    assert (error.location, error.step) == (str(tmp_path / "huge.der"), "public_key")


def test_forged_dsa_key_not_paired(tmp_path: Path, ca: CertKey) -> None:
    # A traditional DSA key file stores the public value y beside the secret x. A file that
    # copies a certificate's y next to another x must not count as the certificate's key.
    parameters = dsa.generate_parameters(1024)
    device_key = parameters.generate_private_key()
    cert = _dsa_device_certificate(ca, device_key)
    attacker = parameters.generate_private_key().private_numbers()
    domain = attacker.public_numbers.parameter_numbers
    stolen_y = device_key.public_key().public_numbers().y
    fields = (0, domain.p, domain.q, domain.g, stolen_y, attacker.x)
    body = b"".join(der_integer(value) for value in fields)
    forged = b"\x30" + der_length(len(body)) + body
    key_pem = (
        b"-----BEGIN DSA PRIVATE KEY-----\n" + base64.encodebytes(forged) + b"-----END DSA PRIVATE KEY-----\n"
    )
    write_pem(tmp_path / "client.pem", cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "client.key").write_bytes(key_pem)

    result = collect_pem([str(tmp_path)], [])

    (certificate,) = result.certificates
    assert certificate.private_key.status == "missing"


def test_genuine_dsa_key_paired(tmp_path: Path, ca: CertKey) -> None:
    device_key = dsa.generate_parameters(1024).generate_private_key()
    cert = _dsa_device_certificate(ca, device_key)
    write_pem(tmp_path / "client.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_pem = device_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "client.key").write_bytes(key_pem)

    (certificate,) = collect_pem([str(tmp_path)], []).certificates

    assert certificate.private_key.status == "present"


def _dsa_device_certificate(ca: CertKey, device_key: dsa.DSAPrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsa-device")]))
        .issuer_name(ca.cert.subject)
        .public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )


@pytest.mark.parametrize("suffix", [b"\n", b"\r\n", b"\x00"])
def test_der_with_trailing_bytes_reported(tmp_path: Path, ca: CertKey, suffix: bytes) -> None:
    good = make_leaf(ca, "good")
    good.write_cert(tmp_path / "good.pem")
    (tmp_path / "device.der").write_bytes(make_leaf(ca, "device").cert_der() + suffix)

    result = collect_pem([str(tmp_path)], [])

    assert [cert.fingerprint_sha256 for cert in result.certificates] == [good.fingerprint]
    (error,) = result.errors
    assert (error.location, error.step) == (str(tmp_path / "device.der"), "load")
