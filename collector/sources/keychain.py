"""macOS System keychain: certificates from ``security find-certificate``, keys from ``security find-identity``.

Both commands are run with the keychain path as their last argument. The
output formats below are those printed by Apple's ``security`` tool
(``SecurityTool/macOS/keychain_find.c`` and ``identity_find.m`` in Apple's
open-source Security project).

``security find-certificate -a -Z -p KEYCHAIN`` prints, for each certificate,
a ``SHA-256 hash:`` line with 64 upper-case hex digits, a ``SHA-1 hash:``
line with 40, and the certificate as a PEM block with 64-character lines.
The tool leaves out a hash line when it cannot compute that hash, so a
certificate may come with one hash line or none. Each PEM block is paired with the
hash lines before it, and a certificate whose hash lines differ from its
real hashes is skipped with an error, because the output is then not what
this parser expects. A block without hash lines is still read, since its
facts come from the PEM data itself.

``security find-identity -p ssl-client KEYCHAIN`` prints a blank line, then::

    Policy: SSL (client)
      Matching identities
      1) 0123…CDEF "label"
      2) 4567…89AB "other label" (CSSMERR_TP_CERT_EXPIRED)
         2 identities found

      Valid identities only
      1) 0123…CDEF "label"
         1 valid identities found

An identity is a certificate with its private key.
Each numbered line has the SHA-1 of the certificate, its label in quotes,
which may itself contain quotes, and the trust evaluation error, if any, in
parentheses. "Matching identities" lists every identity whose key can sign,
expired and untrusted ones included. "Valid identities only" lists the
subset that passes trust evaluation, which is why ``-v`` (that list alone)
is not used and only the first list counts for key presence.

A label is printed as is, so a label with a line break could make a line
look like another identity. The identity list is therefore read strictly:
numbers must run 1, 2, 3…, each count line must equal the number of
identities above it, and any other line makes the whole output unreadable.
Every key is then reported ``unverified``, never ``present``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from collector.commands import CommandError, Runner, command_text, run_command
from collector.facts import CertificateSource, CollectionError, PrivateKey
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import CertificateError, certificate_facts, load_certificate

logger = logging.getLogger(__name__)

SOURCE = "keychain"
SYSTEM_KEYCHAIN = "/Library/Keychains/System.keychain"

# Trust store names that rules may use on macOS, and the keychain each one reads.
KEYCHAINS: Final = {"system": SYSTEM_KEYCHAIN}
WINDOWS_ONLY_TRUST_STORES = frozenset({"user"})

_SHA256_LINE = re.compile(r"SHA-256 hash: ([0-9A-Fa-f]{64})")
_SHA1_LINE = re.compile(r"SHA-1 hash: ([0-9A-Fa-f]{40})")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"

_POLICY_LINE = "Policy: SSL (client)"
_MATCHING_HEADER = "Matching identities"
_VALID_HEADER = "Valid identities only"
# security prints this in place of the SHA-1 when it cannot compute the digest.
_NO_DIGEST = "!----- unable to get SHA-1 digest -----!"
_IDENTITY_LINE = re.compile(
    r"(?P<ordinal>\d+)\) (?P<sha1>[0-9A-Fa-f]{40}|" + re.escape(_NO_DIGEST) + r")"
    r' "(?P<label>.*)"(?: \((?P<status>[^"]*)\))?'
)
_MATCHING_COUNT = re.compile(r"(\d+) identities found")
_VALID_COUNT = re.compile(r"(\d+) valid identities found")

# Maximum length of an unexpected output line quoted in an error message.
_MAX_EXCERPT_LENGTH = 80


def find_certificate_command(keychain: str) -> list[str]:
    return ["security", "find-certificate", "-a", "-Z", "-p", keychain]


def find_identity_command(keychain: str) -> list[str]:
    return ["security", "find-identity", "-p", "ssl-client", keychain]


def collect_keychain(
    trust_stores: Sequence[str], signers: Sequence[Signer], *, run: Runner = run_command
) -> SourceResult:
    """Collect the certificates of each named trust store and whether the keychain contains their private keys.

    A store that cannot be read becomes an error entry whose location is the
    store name, and the other stores are still read.
    """
    result = SourceResult()
    for store in dict.fromkeys(trust_stores):
        keychain = KEYCHAINS.get(store)
        if keychain is None:
            result.errors.append(_error(store, "open", _unsupported_store_message(store)))
            continue
        _collect_store(store, keychain, signers, run, result)
    return result


def _error(store: str, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=store, step=step, message=message)


def _unsupported_store_message(store: str) -> str:
    if store in WINDOWS_ONLY_TRUST_STORES:
        return (
            f"trust store {store!r} exists on Windows only (the current user's certificate store). "
            f"On macOS the collector reads the System keychain {SYSTEM_KEYCHAIN}, so mac rules must "
            "use the trust store 'system'"
        )
    return (
        f"unknown trust store {store!r}. Mac rules must use 'system' (the System keychain {SYSTEM_KEYCHAIN})"
    )


def _excerpt(line: str) -> str:
    if len(line) > _MAX_EXCERPT_LENGTH:
        return repr(line[:_MAX_EXCERPT_LENGTH]) + "…"
    return repr(line)


# Certificates: security find-certificate -a -Z -p


@dataclass(frozen=True)
class _CertificateEntry:
    """One certificate of ``find-certificate`` output, with the hash lines printed before it.

    ``line`` is the 1-based line of the BEGIN line. ``pem`` is None when the
    block has no END line. Hashes are lower-case hex, or None when the
    output has no line for them.
    """

    line: int
    pem: bytes | None
    sha256: str | None
    sha1: str | None


@dataclass
class _CertificateListing:
    """The certificates of ``find-certificate`` output, and what in it could not be read."""

    entries: list[_CertificateEntry]
    problems: list[str]


def _split_certificate_listing(text: str) -> _CertificateListing:
    """Split ``find-certificate -Z -p`` output into PEM blocks, each with the hash lines before it."""
    # str.splitlines would also split at form feeds and Unicode line separators.
    lines = [line.strip() for line in text.split("\n")]
    entries: list[_CertificateEntry] = []
    problems: list[str] = []
    unexpected: list[int] = []
    pending: dict[str, tuple[int, str]] = {}

    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        index += 1
        if not line:
            continue

        sha256 = _SHA256_LINE.fullmatch(line)
        hash_line = sha256 or _SHA1_LINE.fullmatch(line)
        if hash_line is not None:
            kind = "sha256" if sha256 is not None else "sha1"
            # A SHA-256 line starts the next certificate's hash lines, and so does a second SHA-1 line.
            if pending and (kind == "sha256" or kind in pending):
                problems.append(_orphan_hashes(pending))
                pending = {}
            pending[kind] = (number, hash_line[1].lower())
            continue

        if line == _PEM_BEGIN:
            block, index = _read_pem_block(lines, index)
            entries.append(
                _CertificateEntry(
                    line=number,
                    pem=block,
                    sha256=pending["sha256"][1] if "sha256" in pending else None,
                    sha1=pending["sha1"][1] if "sha1" in pending else None,
                )
            )
            pending = {}
            continue

        unexpected.append(number)

    if pending:
        problems.append(_orphan_hashes(pending))
    if unexpected:
        problems.append(
            f"{len(unexpected)} line(s) are neither hash lines nor part of a PEM certificate, "
            f"the first at line {unexpected[0]}"
        )
    return _CertificateListing(entries, problems)


def _read_pem_block(lines: Sequence[str], index: int) -> tuple[bytes | None, int]:
    """Read a PEM block whose BEGIN line is just before ``index``.

    Returns the block, or None when another BEGIN or hash line comes before
    its END line, and the index of the first line after it.
    """
    body = [_PEM_BEGIN]
    while index < len(lines):
        line = lines[index]
        if line == _PEM_BEGIN or _SHA256_LINE.fullmatch(line) or _SHA1_LINE.fullmatch(line):
            return None, index
        index += 1
        body.append(line)
        if line == _PEM_END:
            return ("\n".join(body) + "\n").encode("ascii", "replace"), index
    return None, index


def _orphan_hashes(pending: dict[str, tuple[int, str]]) -> str:
    first = min(number for number, _ in pending.values())
    return f"the hash line(s) at line {first} are not followed by a certificate"


def _hash_mismatch(entry: _CertificateEntry, cert: x509.Certificate) -> str | None:
    """Describe how the entry's hash lines differ from the certificate's hashes, or return None."""
    for name, printed, algorithm in (
        ("SHA-256", entry.sha256, hashes.SHA256()),
        ("SHA-1", entry.sha1, hashes.SHA1()),
    ):
        if printed is None:
            continue
        actual = cert.fingerprint(algorithm).hex()
        if printed != actual:
            return (
                f"its {name} hash line is {printed.upper()}, but the PEM block's {name} is {actual.upper()}"
            )
    return None


# Private keys: security find-identity -p ssl-client


class _IdentityOutputError(Exception):
    """``find-identity`` output that does not have the expected format."""


@dataclass(frozen=True)
class _Identity:
    """One numbered line of ``find-identity`` output. ``sha1`` is None when security printed no digest."""

    sha1: str | None
    label: str
    status: str | None


def _parse_identities(text: str) -> list[_Identity]:
    """Return the identities under "Matching identities", raising ``_IdentityOutputError`` on any other format."""
    lines = [line.strip() for line in text.split("\n")]
    index = _skip_blank(lines, 0)
    index = _expect(lines, index, _POLICY_LINE)
    index = _expect(lines, index, _MATCHING_HEADER)
    matching, index = _parse_identity_list(lines, index, _MATCHING_COUNT, _MATCHING_HEADER)

    # The valid identities are not used, but the list must still be well formed: a label
    # that mimics identity lines would otherwise hide in it.
    index = _skip_blank(lines, index)
    index = _expect(lines, index, _VALID_HEADER)
    _, index = _parse_identity_list(lines, index, _VALID_COUNT, _VALID_HEADER)

    index = _skip_blank(lines, index)
    if index < len(lines):
        raise _IdentityOutputError(
            f"line {index + 1}: expected the end of the output, found {_excerpt(lines[index])}"
        )
    return matching


def _skip_blank(lines: Sequence[str], index: int) -> int:
    while index < len(lines) and not lines[index]:
        index += 1
    return index


def _expect(lines: Sequence[str], index: int, expected: str) -> int:
    if index >= len(lines):
        raise _IdentityOutputError(f"the output ends before the line {expected!r}")
    if lines[index] != expected:
        raise _IdentityOutputError(f"line {index + 1}: expected {expected!r}, found {_excerpt(lines[index])}")
    return index + 1


def _parse_identity_list(
    lines: Sequence[str], index: int, count_line: re.Pattern[str], header: str
) -> tuple[list[_Identity], int]:
    """Read numbered identity lines up to the count line that ends the list under ``header``."""
    identities: list[_Identity] = []
    while index < len(lines):
        line = lines[index]
        number = index + 1
        index += 1

        count = count_line.fullmatch(line)
        if count:
            if int(count[1]) != len(identities):
                raise _IdentityOutputError(
                    f"line {number}: the count line of the {header!r} list gives {count[1]} identities, "
                    f"but {len(identities)} are listed"
                )
            return identities, index

        identity = _IDENTITY_LINE.fullmatch(line)
        if identity is None:
            raise _IdentityOutputError(
                f"line {number}: expected a numbered identity or the count line of the {header!r} list, "
                f"found {_excerpt(line)}"
            )
        if int(identity["ordinal"]) != len(identities) + 1:
            raise _IdentityOutputError(
                f"line {number}: identity number {identity['ordinal']} follows number {len(identities)}"
            )
        sha1 = identity["sha1"]
        identities.append(
            _Identity(
                sha1=None if sha1 == _NO_DIGEST else sha1.lower(),
                label=identity["label"],
                status=identity["status"],
            )
        )
    raise _IdentityOutputError(f"the output ends before the count line of the {header!r} list")


@dataclass(frozen=True)
class _IdentityLookup:
    """The private keys that ``find-identity`` listed for one keychain.

    ``failure`` is the reason the identities could not be listed, and every
    key is then unverified. ``undigested`` counts identities listed without a SHA-1,
    which could belong to any certificate that is not listed.
    """

    store: str
    command: str
    sha1s: frozenset[str] = frozenset()
    undigested: int = 0
    failure: str | None = None

    def private_key_for(self, cert: x509.Certificate) -> PrivateKey:
        if self.failure is not None:
            return PrivateKey(
                present=False,
                status="unverified",
                location=self.store,
                reason=f"{self.failure}, so the private key could not be looked up",
            )

        sha1 = cert.fingerprint(hashes.SHA1()).hex()
        if sha1 in self.sha1s:
            return PrivateKey(present=True, status="present", location=self.store)
        if self.undigested:
            return PrivateKey(
                present=False,
                status="unverified",
                location=self.store,
                reason=f"`{self.command}` listed {self.undigested} identities without their SHA-1, "
                "and one of them may be this certificate with its private key",
            )
        # NOTE: the ssl-client search lists only identities whose private key may sign, so a
        # key restricted to other uses is reported missing.
        return PrivateKey(
            present=False,
            status="missing",
            reason=f"the keychain has no identity (certificate + private key) for this certificate: "
            f"`{self.command}` does not list its SHA-1 {sha1.upper()}",
        )


def _look_up_identities(
    store: str, keychain: str, run: Runner, errors: list[CollectionError]
) -> _IdentityLookup:
    argv = find_identity_command(keychain)
    command = command_text(argv)
    try:
        output = run(argv)
    except CommandError as exc:
        errors.append(
            _error(
                store,
                "command",
                f"cannot list the identities (certificates with private keys) of {keychain}: {exc.message}. "
                f"Private keys in this keychain are reported unverified. Run `{command}` to see the error.",
            )
        )
        return _IdentityLookup(store, command, failure=f"`{command}` failed")

    try:
        identities = _parse_identities(output.decode("utf-8", "replace"))
    except _IdentityOutputError as exc:
        errors.append(
            _error(
                store,
                "parse",
                f"cannot read the output of `{command}`: {exc}. Private keys in this keychain are "
                "reported unverified. Run the command and compare its output with the format "
                "'Policy: SSL (client)', 'Matching identities', numbered SHA-1 lines and "
                "'N identities found'.",
            )
        )
        return _IdentityLookup(store, command, failure=f"the output of `{command}` could not be read")

    for identity in identities:
        logger.debug("identity %s %r status %s", identity.sha1, identity.label, identity.status or "valid")
    undigested = sum(1 for identity in identities if identity.sha1 is None)
    if undigested:
        errors.append(
            _error(
                store,
                "parse",
                f"`{command}` listed {undigested} identities without their SHA-1 digest, so the private "
                "keys of certificates it does not list are reported unverified. Run the command to "
                "see which identities are affected.",
            )
        )
    sha1s = frozenset(identity.sha1 for identity in identities if identity.sha1 is not None)
    return _IdentityLookup(store, command, sha1s=sha1s, undigested=undigested)


# One trust store


def _collect_store(
    store: str, keychain: str, signers: Sequence[Signer], run: Runner, result: SourceResult
) -> None:
    argv = find_certificate_command(keychain)
    command = command_text(argv)
    try:
        output = run(argv)
    except CommandError as exc:
        result.errors.append(
            _error(
                store,
                "command",
                f"cannot list the certificates of {keychain}: {exc.message}. The security tool comes "
                f"with macOS in /usr/bin. Check that it is on PATH and that {keychain} is readable.",
            )
        )
        return

    listing = _split_certificate_listing(output.decode("utf-8", "replace"))
    if listing.problems:
        result.errors.append(
            _error(
                store,
                "parse",
                f"unexpected content in the output of `{command}`: {'; '.join(listing.problems)}. "
                "The certificates in the rest of the output were still read. Run the command and "
                "check that each certificate is a SHA-256 hash line, a SHA-1 hash line and a PEM block.",
            )
        )
    if not listing.entries:
        return

    identities = _look_up_identities(store, keychain, run, result.errors)
    source = CertificateSource(type="keychain", location=store, label=None)
    for entry in listing.entries:
        where = f"certificate at line {entry.line} of the `{command}` output"
        if entry.pem is None:
            result.errors.append(
                _error(store, "load", f"{where}: the PEM block has no END line, so the output is truncated")
            )
            continue
        try:
            cert = load_certificate(entry.pem, "pem")
        except CertificateError as exc:
            result.errors.append(_error(store, exc.step, f"{where}: {exc.message}"))
            continue

        mismatch = _hash_mismatch(entry, cert)
        if mismatch is not None:
            result.errors.append(
                _error(
                    store,
                    "parse",
                    f"{where}: {mismatch}. The certificate was skipped because the hash lines and PEM "
                    f"blocks are not paired as expected. Run `{command}` and check the output.",
                )
            )
            continue

        try:
            facts = certificate_facts(cert, source, identities.private_key_for(cert), signers)
        except CertificateError as exc:
            result.errors.append(_error(store, exc.step, f"{where}: {exc.message}"))
            continue
        result.certificates.append(facts)
