"""Collect the x509 tree of cryptography-vectors and compare the collector with an independent reference.

The tree (about 1,800 files in cryptography-vectors 50) contains PEM and DER
certificates, many of them malformed on purpose, and files of other kinds: CRLs,
certificate requests, OCSP messages, and the PKCS#12, certificate-pair and
S/MIME files of NIST PKITS. The reference here reads every file with
``cryptography`` alone and classifies it:

- A file with a ``-----BEGIN`` line is PEM. Each CERTIFICATE or X509
  CERTIFICATE block is one certificate, and each private-key block is one key.
  A block without its END line is a truncated file. Blocks of other types
  (CRLs, requests) contain no certificate.
- Any other file is DER: a certificate when cryptography loads it as one, a
  private key when it loads as a key, and a broken certificate when its
  outer DER structure is that of a certificate but cryptography cannot load
  it. Everything else (PKCS#12, CRLs, certificate pairs, OCSP, S/MIME, text)
  contains no certificate or key that the collector reads, so the collector
  may skip it without an error.

For each certificate the reference runs the steps that the collector reports
(``load``, ``names``, ``extensions``, ``public_key``) and records the first one
that fails. The collector must then list every certificate that passed all
steps, and report every failure as an error naming the file and that step.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certposture.cli import main
from collector.facts import CollectionError
from collector.sources import SourceResult
from collector.sources.nssdb import collect_nssdb
from collector.sources.pem import collect_pem
from tests.certgen import NssDb, create_nssdb

CORPUS = Path(cryptography_vectors.__file__).parent / "x509"

# The corpus breaks rules on purpose (a negative serial number, a country name
# longer than two letters), and cryptography warns when it reads such a field.
pytestmark = [
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning"),
]

CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
PRIVATE_KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)

_BEGIN_LINE = re.compile(rb"^-----BEGIN ([^\r\n-]+)-----\s*$")


# The reference


@dataclass(frozen=True)
class ReferenceCertificate:
    """One certificate as the reference read it; ``failed_step`` is None when every step passed."""

    location: str
    fingerprint: str
    failed_step: str | None
    der: bytes
    public_key: bytes | None


@dataclass
class Reference:
    files: int = 0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    certificates: list[ReferenceCertificate] = field(default_factory=list)
    # (location, step) of certificate and key blocks that failed before any certificate object existed.
    block_failures: list[tuple[str, str]] = field(default_factory=list)
    # DER bytes of the certificates that cryptography cannot load, by location.
    unloadable: list[tuple[str, bytes]] = field(default_factory=list)
    # DER files shaped like a certificate that cryptography cannot load.
    broken_der: list[str] = field(default_factory=list)
    key_public_keys: set[bytes] = field(default_factory=set)

    def parsed(self) -> collections.Counter[tuple[str, str]]:
        return collections.Counter(
            (item.location, item.fingerprint) for item in self.certificates if item.failed_step is None
        )

    def failures(self) -> collections.Counter[tuple[str, str]]:
        late = [(item.location, item.failed_step) for item in self.certificates if item.failed_step]
        broken = [(location, "load") for location in self.broken_der]
        return collections.Counter([*self.block_failures, *late, *broken])


def first_failed_step(cert: x509.Certificate) -> str | None:
    """Read the certificate the way the collector's steps do and return the first step that fails."""
    # The reference catches every exception on purpose: it classifies, and must never stop the scan.
    try:
        _ = (cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
    except Exception:
        return "load"
    try:
        _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())
        _ = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except Exception:
        return "names"
    try:
        _ = [extension.value for extension in cert.extensions]
    except Exception:
        return "extensions"
    try:
        cert.public_key()
    except UnsupportedAlgorithm:
        # The collector reports an unsupported key algorithm as "unknown", not as an error.
        pass
    except Exception:
        return "public_key"
    return None


def _public_key_bytes(cert: x509.Certificate) -> bytes | None:
    try:
        key = cert.public_key()
    except Exception:
        return None
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_blocks(data: bytes) -> list[tuple[str, bytes | None]]:
    """Split PEM text into (label, block) in file order; the block is None when no END line closes it."""
    blocks: list[tuple[str, bytes | None]] = []
    label: bytes | None = None
    start = 0
    position = 0
    for line in data.splitlines(keepends=True):
        begin = _BEGIN_LINE.match(line.strip())
        if begin:
            if label is not None:
                blocks.append((label.decode("ascii", "replace"), None))
            label = begin.group(1)
            start = position
        elif label is not None and line.strip() == b"-----END " + label + b"-----":
            blocks.append((label.decode("ascii", "replace"), data[start : position + len(line)]))
            label = None
        position += len(line)
    if label is not None:
        blocks.append((label.decode("ascii", "replace"), None))
    return blocks


def pem_body(block: bytes) -> bytes | None:
    """Decode the base64 body of one PEM block, skipping RFC 1421 header lines; None when it is not base64."""
    lines = block.splitlines()[1:-1]
    body = b"".join(line.strip() for line in lines if b":" not in line)
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        return None


def der_elements(data: bytes) -> list[tuple[int, bytes]] | None:
    """Split DER content into (tag, value) pairs; None unless it is a series of whole low-tag TLVs."""
    elements: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            return None
        tag, length = data[offset], data[offset + 1]
        offset += 2
        if tag & 0x1F == 0x1F:
            return None
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or offset + count > len(data):
                return None
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
        if offset + length > len(data):
            return None
        elements.append((tag, data[offset : offset + length]))
        offset += length
    return elements


def looks_like_der_certificate(data: bytes) -> bool:
    """Tell whether DER data has the outer structure of an X.509 certificate (RFC 5280, section 4.1).

    Certificate is SEQUENCE {tbsCertificate SEQUENCE, signatureAlgorithm
    SEQUENCE, signatureValue BIT STRING}, and tbsCertificate starts with an
    optional [0] version, then serialNumber INTEGER and five SEQUENCEs
    (signature, issuer, validity, subject, subjectPublicKeyInfo). A CRL has a
    time where a certificate has its validity SEQUENCE, and a certificate
    request has a [0] there, so neither matches.
    """
    outer = der_elements(data)
    if outer is None or len(outer) != 1 or outer[0][0] != 0x30:
        return False
    parts = der_elements(outer[0][1])
    if parts is None or [tag for tag, _ in parts] != [0x30, 0x30, 0x03]:
        return False
    fields = der_elements(parts[0][1])
    if fields is None:
        return False
    tags = [tag for tag, _ in fields]
    if tags[:1] == [0xA0]:
        tags = tags[1:]
    return tags[:6] == [0x02, 0x30, 0x30, 0x30, 0x30, 0x30]


def _add_certificate(reference: Reference, location: str, cert: x509.Certificate) -> None:
    reference.certificates.append(
        ReferenceCertificate(
            location=location,
            fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
            failed_step=first_failed_step(cert),
            der=cert.public_bytes(serialization.Encoding.DER),
            public_key=_public_key_bytes(cert),
        )
    )


def _read_pem(reference: Reference, location: str, data: bytes) -> str:
    """Read the certificate and key blocks of one PEM file; return the file's kind."""
    kind = "PEM without certificate or key blocks"
    for label, block in pem_blocks(data):
        if label not in CERTIFICATE_LABELS | PRIVATE_KEY_LABELS:
            if block is None:
                reference.block_failures.append((location, "load"))
            continue
        kind = "PEM with certificate or key blocks"
        if block is None:
            reference.block_failures.append((location, "load"))
        elif label in CERTIFICATE_LABELS:
            try:
                cert = x509.load_pem_x509_certificate(block)
            except Exception:
                reference.block_failures.append((location, "load"))
                der = pem_body(block)
                if der is not None:
                    reference.unloadable.append((location, der))
                continue
            _add_certificate(reference, location, cert)
        else:
            _read_pem_key(reference, location, block)
    return kind


def _read_pem_key(reference: Reference, location: str, block: bytes) -> None:
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        # Encrypted: the collector counts it as a key it cannot compare, not as an error.
        return
    except Exception:
        reference.block_failures.append((location, "key"))
        return
    reference.key_public_keys.add(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _read_der(reference: Reference, location: str, data: bytes) -> str:
    """Read one DER file; return the file's kind."""
    try:
        cert = x509.load_der_x509_certificate(data)
    except Exception:
        pass
    else:
        _add_certificate(reference, location, cert)
        return "DER certificate"
    try:
        key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        return "DER private key"
    except Exception:
        pass
    else:
        reference.key_public_keys.add(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return "DER private key"
    if looks_like_der_certificate(data):
        reference.broken_der.append(location)
        reference.unloadable.append((location, data))
        return "DER shaped like a certificate that cryptography cannot load"
    suffix = Path(location).suffix or "(no suffix)"
    return f"other, no certificate or key: {suffix}"


def read_reference(top: Path) -> Reference:
    reference = Reference()
    for path in sorted(item for item in top.rglob("*") if item.is_file()):
        reference.files += 1
        location = str(path)
        data = path.read_bytes()
        if any(_BEGIN_LINE.match(line.strip()) for line in data.splitlines()):
            kind = _read_pem(reference, location, data)
        else:
            kind = _read_der(reference, location, data)
        reference.kinds[kind] += 1
    return reference


# Comparing the collector with the reference


def collected(result: SourceResult) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(
        (item.source.location, item.fingerprint_sha256) for item in result.certificates
    )


def reported(errors: Iterable[CollectionError]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((error.location, error.step) for error in errors)


def _by_step(errors: Iterable[CollectionError]) -> str:
    steps = collections.Counter(error.step for error in errors)
    return ", ".join(f"{step} {count}" for step, count in sorted(steps.items())) or "none"


def summary(reference: Reference, result: SourceResult) -> str:
    lines = [f"files tried: {reference.files}"]
    lines += [f"  {kind}: {count}" for kind, count in sorted(reference.kinds.items())]
    lines.append(
        f"certificates: {len(reference.certificates)} loaded by the reference, "
        f"{sum(reference.parsed().values())} of them read in every step; {len(result.certificates)} collected"
    )
    lines.append(f"collection errors by step: {_by_step(result.errors)}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return read_reference(CORPUS)


@pytest.fixture(scope="module")
def pem_result() -> SourceResult:
    return collect_pem([str(CORPUS)], [])


def test_corpus_counts(reference: Reference, pem_result: SourceResult) -> None:
    print(summary(reference, pem_result))
    steps = {error.step for error in pem_result.errors}

    assert reference.files > 1000, summary(reference, pem_result)
    assert len(pem_result.certificates) > 400, summary(reference, pem_result)
    assert {"load", "names", "extensions"} <= steps, summary(reference, pem_result)


def test_corpus_parsed_certificates_collected(reference: Reference, pem_result: SourceResult) -> None:
    missing = reference.parsed() - collected(pem_result)

    assert not missing, f"{len(missing)} certificates parsed by the reference are not in the facts: {missing}"


def test_corpus_no_extra_certificates(reference: Reference, pem_result: SourceResult) -> None:
    extra = collected(pem_result) - reference.parsed()

    assert not extra, f"{len(extra)} certificates in the facts failed a step in the reference: {extra}"


def test_corpus_failures_reported_with_step(reference: Reference, pem_result: SourceResult) -> None:
    unreported = reference.failures() - reported(pem_result.errors)

    assert not unreported, f"failures without an error of the same file and step: {unreported}"


def test_corpus_no_unexpected_errors(reference: Reference, pem_result: SourceResult) -> None:
    unexpected = reported(pem_result.errors) - reference.failures()

    assert not unexpected, f"errors that the reference did not expect: {unexpected}"


def test_corpus_late_failures_name_certificate(reference: Reference, pem_result: SourceResult) -> None:
    for item in reference.certificates:
        if item.failed_step in {"names", "extensions", "public_key"}:
            messages = [
                error.message
                for error in pem_result.errors
                if error.location == item.location and error.step == item.failed_step
            ]
            assert any(item.fingerprint in message for message in messages), (item, messages)


def test_corpus_keys_paired(reference: Reference, pem_result: SourceResult) -> None:
    public_keys = {item.fingerprint: item.public_key for item in reference.certificates}
    paired = [
        item
        for item in pem_result.certificates
        if public_keys.get(item.fingerprint_sha256) in reference.key_public_keys
    ]

    assert paired, "the corpus has certificates with their keys (custom/ca), and none was paired"
    for item in paired:
        assert item.private_key.status == "present", item


def test_corpus_no_file_silently_dropped(reference: Reference, pem_result: SourceResult) -> None:
    """Every file with a certificate, or with a block that fails to load, is in the facts or the errors.

    A file that contains only valid keys has no entry of its own: its keys show in
    the private_key facts of their certificates, which test_corpus_keys_paired checks.
    DER files that cryptography cannot load are left to
    test_corpus_broken_der_certificates_reported.
    """
    seen = {item.source.location for item in pem_result.certificates}
    seen |= {error.location for error in pem_result.errors}
    must_appear = {item.location for item in reference.certificates}
    must_appear |= {location for location, _ in reference.block_failures}

    dropped = sorted(must_appear - seen)

    assert dropped == []


def test_corpus_broken_der_certificates_reported(reference: Reference, pem_result: SourceResult) -> None:
    assert reference.broken_der, "the corpus has two PKITS certificates with inherited DSA parameters"
    load_errors = {error.location for error in pem_result.errors if error.step == "load"}

    assert sorted(set(reference.broken_der) - load_errors) == []


def test_corpus_cli_collect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pem_result: SourceResult
) -> None:
    """`certposture collect --path TREE` writes the facts of the PEM source, with the same errors."""
    facts_path = tmp_path / "facts.json"
    arguments = ["--home", str(tmp_path / "home"), "collect", "--path", str(CORPUS)]
    arguments += ["--hostname", "corpus-host", "--serial-number", "CORPUS1", "-o", str(facts_path)]

    code = main(arguments)

    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    facts = json.loads(facts_path.read_text())
    certificates = collections.Counter(
        (item["source"]["location"], item["fingerprint_sha256"]) for item in facts["certificates"]
    )
    assert certificates == collected(pem_result)
    source_errors = [error.model_dump(mode="json") for error in pem_result.errors]
    assert [error for error in facts["errors"] if error["source"] == "pem"] == source_errors


# The corpus in an NSS database


@dataclass
class NssImport:
    """Certificates offered to certutil by nickname, with the step at which the reference failed them."""

    database: NssDb
    accepted: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


def sha256_hex(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def _certutil_add_der(database: NssDb, der: bytes, nickname: str) -> str | None:
    """Add raw DER bytes with ``certutil -A`` as NssDb.add_certificate does; return certutil's error or None."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cert.der"
        path.write_bytes(der)
        arguments = ["certutil", "-A", "-d", database.spec, "-n", nickname, "-t", ",,", "-i", str(path)]
        result = subprocess.run(
            arguments, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
        )
    return None if result.returncode == 0 else (result.stderr or result.stdout).strip()


def _certutil_error_code(message: str) -> str:
    match = re.search(r"SEC_ERROR_[A-Z_]+", message)
    return match.group(0) if match else message[:80]


@pytest.fixture(scope="module")
def nss_import(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> NssImport:
    """Import each distinct certificate of the corpus into a new NSS database with certutil.

    All of them are imported, each under its own nickname: about 530 certutil
    runs, which took 3 to 12 seconds on two cores with NSS 3.87, depending on
    the load. Those that cryptography loads go through NssDb.add_certificate.
    The bytes of those it cannot load go to certutil directly, so that the NSS
    source meets them too.
    """
    imported = NssImport(create_nssdb(tmp_path_factory.mktemp("corpus") / "nssdb"))
    offered: dict[str, tuple[bytes, str | None]] = {}
    for item in reference.certificates:
        offered.setdefault(item.fingerprint, (item.der, item.failed_step))
    for _, der in reference.unloadable:
        offered.setdefault(sha256_hex(der), (der, "load"))

    loaded = {item.fingerprint: item for item in reference.certificates}
    for number, (fingerprint, (der, failed_step)) in enumerate(sorted(offered.items())):
        nickname = f"corpus-{number:04d}"
        if fingerprint in loaded:
            try:
                imported.database.add_certificate(x509.load_der_x509_certificate(der), nickname, trust=",,")
                problem = None
            except RuntimeError as error:
                problem = str(error)
        else:
            problem = _certutil_add_der(imported.database, der, nickname)
        if problem is None:
            imported.accepted[nickname] = (fingerprint, failed_step)
        else:
            imported.rejected[nickname] = _certutil_error_code(problem)
    return imported


def _nss_summary(imported: NssImport, result: SourceResult) -> str:
    rejected = collections.Counter(imported.rejected.values())
    reasons = ", ".join(f"{code} {count}" for code, count in sorted(rejected.items()))
    return "\n".join(
        [
            f"certificates offered to certutil: {len(imported.accepted) + len(imported.rejected)}",
            f"  accepted: {len(imported.accepted)}",
            f"  rejected: {len(imported.rejected)} ({reasons or 'none'})",
            f"collected from the NSS database: {len(result.certificates)}",
            f"collection errors by step: {_by_step(result.errors)}",
        ]
    )


def test_corpus_nssdb_accepted_certificates_collected(nss_import: NssImport) -> None:
    result = collect_nssdb(str(nss_import.database.directory), [])
    print(_nss_summary(nss_import, result))
    by_label = {item.source.label: item for item in result.certificates}

    for nickname, (fingerprint, failed_step) in nss_import.accepted.items():
        if failed_step is None:
            assert nickname in by_label, (nickname, _nss_summary(nss_import, result))
            assert by_label[nickname].fingerprint_sha256 == fingerprint
        else:
            # The NSS source names a certificate by nickname and row: "certificate corpus-0008 (row 1)".
            steps = [error.step for error in result.errors if f"certificate {nickname} (" in error.message]
            assert steps == [failed_step], (nickname, steps, _nss_summary(nss_import, result))


def test_corpus_nssdb_nothing_else(nss_import: NssImport) -> None:
    result = collect_nssdb(str(nss_import.database.directory), [])
    labels = [item.source.label for item in result.certificates]

    assert len(labels) + len(result.errors) == len(nss_import.accepted), _nss_summary(nss_import, result)
    assert set(labels) <= set(nss_import.accepted)


def test_corpus_nssdb_rejections_counted(nss_import: NssImport) -> None:
    # NSS rejects some on purpose, for example a second certificate with the issuer and serial number of another.
    offered = len(nss_import.accepted) + len(nss_import.rejected)

    assert len(nss_import.accepted) > offered // 2, dict(collections.Counter(nss_import.rejected.values()))
