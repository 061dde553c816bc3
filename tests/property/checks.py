"""Checks shared by the property tests of the certificate sources."""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import assume

from collector.facts import Certificate, CollectionError, CollectionNote
from collector.sources import SourceResult
from tests.secrets_scan import MARKERS

# The steps that the facts document defines for a collection error.
ERROR_STEPS = frozenset(
    {
        "open",
        "read",
        "load",
        "names",
        "extensions",
        "public_key",
        "key",
        "database",
        "command",
        "parse",
        "identity",
    }
)


def assert_error_well_formed(error: CollectionError, source: str) -> None:
    assert isinstance(error, CollectionError), error
    assert error.source == source, error
    assert error.step in ERROR_STEPS, error
    assert error.message, error


def assert_well_formed(result: SourceResult, source: str) -> None:
    """Check that a source returned facts and errors that the facts document can hold as JSON."""
    for error in result.errors:
        assert_error_well_formed(error, source)
        orjson.dumps(error.model_dump(mode="json"))
    for note in result.notes:
        assert isinstance(note, CollectionNote), note
        orjson.dumps(note.model_dump(mode="json"))
    for certificate in result.certificates:
        assert isinstance(certificate, Certificate), certificate
        assert certificate.source.type == source, certificate.source
        orjson.dumps(certificate.model_dump(mode="json"))


def certificate_by_fingerprint(result: SourceResult, fingerprint: str) -> Certificate:
    """Return the one certificate with this SHA-256 fingerprint, failing when it is missing or repeated."""
    matches = [cert for cert in result.certificates if cert.fingerprint_sha256 == fingerprint]
    assert len(matches) == 1, (
        f"expected certificate {fingerprint} once, found it {len(matches)} times; errors: {result.errors}"
    )
    return matches[0]


def fingerprint_counts(result: SourceResult) -> Counter[str]:
    return Counter(cert.fingerprint_sha256 for cert in result.certificates)


def assume_no_key_header(*values: str | bytes) -> None:
    """Skip an example whose generated text contains the header of a private key file.

    tests/secrets_scan.py fails a test when a log record, a message or CLI
    output contains such a header, even with no key after it. Hypothesis mixes
    the string constants of the code base into generated text, and those
    headers are among them. Parsers copy excerpts of their input into log
    records and error messages, so such an example would fail the scan, not
    the property.
    """
    for value in values:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        assume(not any(marker in text for marker in MARKERS))
