"""collect_pem on damaged PEM and DER files: errors, never exceptions, and the good certificate still found.

Every example writes the damaged files into a fresh folder next to a good
certificate and its key, then collects twice: once by scanning the folder
and once with every file named explicitly.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.pem import collect_pem
from tests.certgen import CertKey, make_leaf
from tests.property import property_settings
from tests.property.checks import assert_well_formed, certificate_by_fingerprint
from tests.property.conftest import SIGNER_ID
from tests.property.mutations import damaged_der

# Damaged DER often has a negative or zero serial number. cryptography loads such a certificate
# with a deprecation warning, which the CLI sends to the log and which here would fill the report.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive:cryptography.utils.CryptographyDeprecationWarning"
)

GOOD_CERT_NAME = "good.pem"
GOOD_KEY_NAME = "good.key"

PEM_LABELS = (
    "CERTIFICATE",
    "X509 CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "DSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "CERTIFICATE REQUEST",
    "",
)
BASE64_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \t\r\n!*"

# The explicit version field [0] { INTEGER 2 } that starts the TBSCertificate of an X.509 v3
# certificate. Its last byte is the version value.
_VERSION_FIELD = bytes([0xA0, 0x03, 0x02, 0x01, 0x02])


@dataclass(frozen=True)
class PemMaterial:
    """``good`` is written intact next to every damaged file, and ``victim`` is the certificate examples damage."""

    good: CertKey
    victim: CertKey
    signers: list[Signer]


@pytest.fixture(scope="module")
def material(ca: CertKey, signers: list[Signer]) -> PemMaterial:
    return PemMaterial(
        good=make_leaf(ca, "good-device", sans=["good.corp.example"]),
        victim=make_leaf(ca, "victim-device", sans=["victim.corp.example"], key_type="rsa"),
        signers=signers,
    )


def collect_next_to_good_certificate(
    material: PemMaterial, files: Mapping[str, bytes]
) -> list[tuple[SourceResult, list[str]]]:
    """Write ``files`` beside the good certificate and key, and collect them by folder and by file.

    Returns each result with the damaged paths it was given explicitly (none for the folder scan).
    """
    good = material.good
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / GOOD_CERT_NAME).write_bytes(good.cert_pem())
        (folder / GOOD_KEY_NAME).write_bytes(good.key_pem())
        damaged = []
        for name, data in files.items():
            (folder / name).write_bytes(data)
            damaged.append(str(folder / name))
        good_paths = sorted(str(path) for path in folder.iterdir() if str(path) not in damaged)

        by_folder = collect_pem([str(folder)], material.signers)
        by_file = collect_pem([*good_paths, *damaged], material.signers)
    return [(by_folder, []), (by_file, damaged)]


def assert_good_certificate_collected(result: SourceResult, material: PemMaterial) -> None:
    cert = certificate_by_fingerprint(result, material.good.fingerprint)
    assert cert.private_key.status == "present", cert.private_key
    assert cert.signed_by == [SIGNER_ID]


def assert_explicit_files_reported(result: SourceResult, paths: Sequence[str]) -> None:
    """Check that each file named explicitly yields a certificate or an error, so none vanishes silently.

    Only for files without private-key blocks, because a file that contains
    only a key, even an encrypted one, is valid input that yields neither.
    """
    for path in paths:
        certificates = [cert for cert in result.certificates if cert.source.location == path]
        errors = [error for error in result.errors if error.location == path]
        assert certificates or errors, f"{path} yielded no certificate and no error"


def check_collection(material: PemMaterial, files: Mapping[str, bytes]) -> None:
    for result, explicit in collect_next_to_good_certificate(material, files):
        assert_well_formed(result, "pem")
        assert_good_certificate_collected(result, material)
        assert_explicit_files_reported(result, explicit)


def pem_block(label: str, body: bytes) -> bytes:
    return b"-----BEGIN " + label.encode() + b"-----\n" + body + b"\n-----END " + label.encode() + b"-----\n"


def base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\n".join(encoded[start : start + 64] for start in range(0, len(encoded), 64))


@st.composite
def mutated_base64(draw: st.DrawFn, text: bytes) -> bytes:
    """Replace, insert or delete characters of base64 text, drawing new ones from base64 and its neighbours."""
    characters = bytearray(text)
    for _ in range(draw(st.integers(1, 6))):
        edit = draw(st.sampled_from(("replace", "insert", "delete")))
        position = draw(st.integers(0, len(characters) - 1))
        character = ord(draw(st.sampled_from(BASE64_CHARACTERS)))
        if edit == "replace":
            characters[position] = character
        elif edit == "insert":
            characters.insert(position, character)
        elif len(characters) > 1:
            del characters[position]
    return bytes(characters)


def pem_fragments(victim_der: bytes) -> st.SearchStrategy[bytes]:
    """Pieces of broken PEM: lone BEGIN and END lines, headers, base64 text, damaged blocks, raw bytes."""
    labels = st.sampled_from(PEM_LABELS) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ -", max_size=12)
    return st.one_of(
        labels.map(lambda label: f"-----BEGIN {label}-----\n".encode()),
        labels.map(lambda label: f"-----END {label}-----\n".encode()),
        st.just(b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n"),
        st.binary(max_size=64).map(base64.b64encode),
        st.tuples(st.sampled_from(PEM_LABELS), st.binary(max_size=96)).map(
            lambda block: pem_block(block[0], base64_lines(block[1]))
        ),
        damaged_der(victim_der).map(lambda der: pem_block("CERTIFICATE", base64_lines(der))),
        st.binary(max_size=64),
    )


@given(contents=st.lists(st.binary(max_size=2048), min_size=1, max_size=3))
@property_settings(max_examples=150)
def test_pem_arbitrary_bytes(material: PemMaterial, contents: list[bytes]) -> None:
    files = {f"damaged-{index}.bin": data for index, data in enumerate(contents)}
    check_collection(material, files)


@given(data=st.data())
@property_settings(max_examples=150)
def test_pem_mutated_base64(material: PemMaterial, data: st.DataObject) -> None:
    body = base64_lines(material.victim.cert_der())
    damaged_body = data.draw(mutated_base64(body), label="damaged_body")
    files = {"victim.pem": pem_block("CERTIFICATE", damaged_body)}
    check_collection(material, files)


@given(data=st.data())
@property_settings(max_examples=200)
def test_pem_mutated_der(material: PemMaterial, data: st.DataObject) -> None:
    damaged = data.draw(damaged_der(material.victim.cert_der()), label="damaged_der")
    files = {"victim.der": damaged, "victim.pem": pem_block("CERTIFICATE", base64_lines(damaged))}
    check_collection(material, files)


@given(version=st.integers(0, 255))
@property_settings(max_examples=60)
def test_pem_certificate_version_field(material: PemMaterial, version: int) -> None:
    der = bytearray(material.victim.cert_der())
    start = der.find(_VERSION_FIELD)
    assert 0 < start < 16, "the victim certificate has no X.509 v3 version field near its start"
    der[start + len(_VERSION_FIELD) - 1] = version
    files = {"victim.der": bytes(der), "victim.pem": pem_block("CERTIFICATE", base64_lines(bytes(der)))}
    check_collection(material, files)


def collect_bundle(
    material: PemMaterial, before: bytes, after: bytes, *, key_in_certificate_file: bool
) -> None:
    """Collect one file holding the good certificate between ``before`` and ``after``, and check it."""
    good = material.good
    middle = good.cert_pem() + (good.key_pem() if key_in_certificate_file else b"")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bundle.pem"
        # The newlines keep the garbage from running into the good BEGIN line.
        path.write_bytes(before + b"\n" + middle + b"\n" + after)
        paths = [str(path)]
        if not key_in_certificate_file:
            paths.append(str(good.write_key(Path(scratch) / GOOD_KEY_NAME)))
        result = collect_pem(paths, material.signers)
    assert_well_formed(result, "pem")
    assert_good_certificate_collected(result, material)


@given(data=st.data(), key_in_certificate_file=st.booleans())
@property_settings(max_examples=120)
def test_pem_garbage_around_good_certificate(
    material: PemMaterial, data: st.DataObject, key_in_certificate_file: bool
) -> None:
    fragments = st.lists(pem_fragments(material.victim.cert_der()), max_size=6).map(b"".join)
    before = data.draw(fragments, label="before")
    after = data.draw(fragments, label="after")
    collect_bundle(material, before, after, key_in_certificate_file=key_in_certificate_file)


@given(
    labels=st.lists(st.sampled_from(PEM_LABELS), min_size=1, max_size=300),
    with_end_lines=st.lists(st.booleans(), max_size=300),
    key_in_certificate_file=st.booleans(),
)
@property_settings(max_examples=50)
def test_pem_many_begin_lines(
    material: PemMaterial, labels: list[str], with_end_lines: list[bool], key_in_certificate_file: bool
) -> None:
    lines = []
    for index, label in enumerate(labels):
        lines.append(f"-----BEGIN {label}-----")
        if index < len(with_end_lines) and with_end_lines[index]:
            lines.append(f"-----END {label}-----")
    before = "\n".join(lines).encode()
    collect_bundle(material, before, b"", key_in_certificate_file=key_in_certificate_file)
