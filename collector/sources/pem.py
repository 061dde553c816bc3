"""PEM and DER files: certificates and the private keys that belong to them.

Each given path is a file, or a directory scanned recursively in sorted
order. Symbolic links to files are read, but symbolic links to directories
are not entered, so a link loop cannot make the scan run forever. A file may
hold PEM certificates (several form a chain), PEM private keys (PKCS#8
``PRIVATE KEY``, traditional ``RSA``/``EC``/``DSA PRIVATE KEY``, and their
encrypted forms), a single DER certificate or a single DER private key.

A certificate's private key is present when a key from any of the given
paths has the same SubjectPublicKeyInfo as the certificate. Keys are loaded
only to derive their public key, and no key bytes or key objects reach the
facts, the errors or the log.

A file named explicitly that contains no certificate or key is an error. A
file found by scanning a directory is skipped silently in that case,
because directories also hold README files, configuration and requests, but
a broken certificate or key block in it is still an error.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from collector.facts import CertificateSource, CollectionError, PrivateKey
from collector.signers import Signer
from collector.sources import SourceResult
from collector.x509facts import (
    CERTIFICATE_LABELS,
    CertificateError,
    certificate_facts,
    load_certificate,
    looks_like_pem,
    public_key_der,
    split_pem,
)

logger = logging.getLogger(__name__)

SOURCE = "pem"

# Certificate and key files are a few KiB, and a chain with many certificates
# stays well below this. Larger files are skipped so that a mistyped path (a log, a
# disk image) is not read into memory.
MAX_FILE_SIZE = 1024 * 1024

# A directory scan stops after this many files, so that a path such as / is
# reported instead of walking the whole file system.
MAX_DIRECTORY_FILES = 10_000

PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"})
ENCRYPTED_PRIVATE_KEY_LABEL = "ENCRYPTED PRIVATE KEY"

# RFC 1421 header of a traditional OpenSSL key encrypted with a password.
_PROC_TYPE_ENCRYPTED = re.compile(rb"^Proc-Type:\s*4\s*,\s*ENCRYPTED\s*$", re.MULTILINE)


@dataclass
class _FileContents:
    """Contents of one file: certificates, public keys of its private keys, count of encrypted keys."""

    path: str
    certificates: list[x509.Certificate] = field(default_factory=list)
    key_public_keys: list[bytes] = field(default_factory=list)
    encrypted_keys: int = 0

    @property
    def has_keys(self) -> bool:
        return bool(self.key_public_keys) or self.encrypted_keys > 0

    @property
    def is_empty(self) -> bool:
        return not self.certificates and not self.has_keys


def _error(location: str, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=location, step=step, message=message)


def collect_pem(paths: Sequence[str], signers: Sequence[Signer]) -> SourceResult:
    """Collect certificates from PEM and DER files and pair each with its private key.

    All paths are read before pairing, so a key in one path pairs with a
    certificate in another. ``source.location`` is the file's absolute path.
    """
    result = SourceResult()
    contents: list[_FileContents] = []
    for path, explicit in _list_files(paths, result.errors):
        data = _read_file(path, result.errors)
        if data is None:
            continue
        file_contents = _parse_file(path, data, explicit, result.errors)
        if file_contents is not None:
            contents.append(file_contents)

    pairing = _KeyIndex(contents)
    for file_contents in contents:
        for cert in file_contents.certificates:
            private_key = pairing.private_key_for(cert, file_contents)
            source = CertificateSource(type="pem", location=file_contents.path)
            try:
                result.certificates.append(certificate_facts(cert, source, private_key, signers))
            except CertificateError as exc:
                result.errors.append(exc.to_collection_error(SOURCE, file_contents.path))
    return result


def _list_files(paths: Sequence[str], errors: list[CollectionError]) -> list[tuple[str, bool]]:
    """Expand paths into absolute file paths, each once, with True for files named explicitly."""
    files: list[tuple[str, bool]] = []
    seen: set[str] = set()

    def add(path: str, explicit: bool) -> None:
        if path not in seen:
            seen.add(path)
            files.append((path, explicit))

    for raw_path in paths:
        if not raw_path:
            errors.append(_error(raw_path, "open", "empty path; give a certificate file or directory"))
            continue
        if not _is_utf8(raw_path):
            escaped = _escaped(raw_path)
            errors.append(_error(escaped, "open", f"path {escaped} is not valid UTF-8; rename it"))
            continue
        path = os.path.abspath(raw_path)
        if os.path.isdir(path):
            for file_path in _scan_directory(path, errors):
                add(file_path, explicit=False)
        elif os.path.lexists(path):
            add(path, explicit=True)
        else:
            errors.append(_error(path, "open", f"path {path} not found"))
    return files


def _scan_directory(top: str, errors: list[CollectionError]) -> Iterator[str]:
    def on_error(exc: OSError) -> None:
        location = exc.filename if isinstance(exc.filename, str) else top
        errors.append(_error(location, "open", f"cannot list directory {location}: {exc.strerror or exc}"))

    count = 0
    for directory, subdirectories, filenames in os.walk(top, onerror=on_error):
        subdirectories.sort()
        for name in subdirectories:
            # os.walk does not descend into links to directories, which could form loops.
            link = os.path.join(directory, name)
            if os.path.islink(link) and _is_utf8(link):
                errors.append(
                    _error(
                        link,
                        "open",
                        f"{link} is a symbolic link to a directory, which is not followed; "
                        "name the target directory in the rule's paths or with --path",
                    )
                )
        for filename in sorted(filenames):
            if count == MAX_DIRECTORY_FILES:
                errors.append(
                    _error(
                        top,
                        "open",
                        f"directory {top} contains more than {MAX_DIRECTORY_FILES} files; only the first "
                        f"{MAX_DIRECTORY_FILES} in sorted order were read. Give the certificate's "
                        "directory or file instead.",
                    )
                )
                return
            count += 1
            path = os.path.join(directory, filename)
            if not _is_utf8(path):
                # Facts are JSON, which cannot hold these bytes; the file is reported, not read.
                escaped = _escaped(path)
                errors.append(
                    _error(escaped, "open", f"file name {escaped} is not valid UTF-8; rename the file")
                )
                continue
            yield path


def _is_utf8(path: str) -> bool:
    """Tell whether a path decoded by the file system (surrogate escapes) is valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_file(path: str, errors: list[CollectionError]) -> bytes | None:
    try:
        info = os.stat(path)
    except OSError as exc:
        errors.append(_error(path, "open", f"cannot open {path}: {exc.strerror or exc}"))
        return None
    if not stat.S_ISREG(info.st_mode):
        # Opening a FIFO or device could block or never end.
        errors.append(_error(path, "open", f"{path} is not a regular file"))
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        errors.append(_error(path, "read", f"cannot read {path}: {exc.strerror or exc}"))
        return None
    if len(data) > MAX_FILE_SIZE:
        message = (
            f"{path} is larger than the {MAX_FILE_SIZE} byte limit for certificate and key files; "
            "it was not parsed"
        )
        errors.append(_error(path, "read", message))
        return None
    return data


def _parse_file(
    path: str, data: bytes, explicit: bool, errors: list[CollectionError]
) -> _FileContents | None:
    contents = _FileContents(path)
    if looks_like_pem(data):
        labels = _parse_pem(contents, data, errors)
        if contents.is_empty and explicit and labels is not None:
            found = ", ".join(labels) if labels else "none"
            errors.append(
                _error(
                    path, "load", f"{path} contains no certificate or private key (PEM blocks found: {found})"
                )
            )
    else:
        _parse_der(contents, data)
        if contents.is_empty:
            if explicit:
                message = f"{path} is neither PEM nor a DER certificate or private key"
                errors.append(_error(path, "load", message))
            else:
                logger.debug("skipping %s: neither PEM nor a DER certificate or private key", path)
    return None if contents.is_empty else contents


def _parse_pem(contents: _FileContents, data: bytes, errors: list[CollectionError]) -> list[str] | None:
    """Load the certificate and key blocks into ``contents``.

    Returns the labels of all blocks, or None when some block was already
    recorded as an error.
    """
    path = contents.path
    labels: list[str] = []
    had_error = False
    for block in split_pem(data):
        labels.append(block.label)
        where = f"{path}: PEM block {block.label} at line {block.line}"
        if block.text is None:
            errors.append(_error(path, "load", f"{where} has no END line; the file may be truncated"))
            had_error = True
        elif block.label in CERTIFICATE_LABELS:
            try:
                contents.certificates.append(load_certificate(block.text, "pem"))
            except CertificateError as exc:
                errors.append(_error(path, "load", f"{where}: {exc.message}"))
                had_error = True
        elif block.label == "TRUSTED CERTIFICATE":
            message = (
                f"{where} is an OpenSSL trusted certificate, which is not supported; "
                f"convert it with `openssl x509 -in {path} -out client.pem`"
            )
            errors.append(_error(path, "load", message))
            had_error = True
        elif block.label == ENCRYPTED_PRIVATE_KEY_LABEL or (
            block.label in PRIVATE_KEY_LABELS and _PROC_TYPE_ENCRYPTED.search(block.text)
        ):
            contents.encrypted_keys += 1
        elif block.label in PRIVATE_KEY_LABELS:
            had_error |= not _add_pem_key(contents, block.text, where, errors)
        else:
            logger.debug("%s: skipping PEM block %s at line %d", path, block.label, block.line)
    return None if had_error else labels


def _add_pem_key(contents: _FileContents, text: bytes, where: str, errors: list[CollectionError]) -> bool:
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        # cryptography raises TypeError when the key is encrypted and no password was given.
        contents.encrypted_keys += 1
        return True
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography's message is not copied: the message must never risk carrying key data.
        message = f"{where} is not a valid or supported private key ({type(exc).__name__})"
        errors.append(_error(contents.path, "key", message))
        return False
    contents.key_public_keys.append(_public_key_der(key))
    return True


def _parse_der(contents: _FileContents, data: bytes) -> None:
    try:
        contents.certificates.append(load_certificate(data, "der"))
        return
    except CertificateError:
        pass
    try:
        key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        contents.encrypted_keys += 1
        return
    except (ValueError, UnsupportedAlgorithm):
        return
    contents.key_public_keys.append(_public_key_der(key))


def _public_key_der(key: PrivateKeyTypes) -> bytes:
    """Return the SubjectPublicKeyInfo of a private key, the only part of it that is kept."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class _KeyIndex:
    """The keys found in all files, for pairing each certificate with its private key."""

    def __init__(self, contents: Sequence[_FileContents]) -> None:
        self._key_paths: dict[bytes, list[str]] = {}
        self._encrypted_key_paths: list[str] = []
        for file_contents in contents:
            for public_key in file_contents.key_public_keys:
                self._key_paths.setdefault(public_key, []).append(file_contents.path)
            if file_contents.encrypted_keys:
                self._encrypted_key_paths.append(file_contents.path)
        self._key_count = sum(len(file_contents.key_public_keys) for file_contents in contents)

    def private_key_for(self, cert: x509.Certificate, contents: _FileContents) -> PrivateKey:
        """Find the certificate's key, preferring one in the certificate's own file."""
        try:
            public_key = public_key_der(cert)
        except CertificateError:
            # certificate_facts reports the invalid key at its public_key step, with the fingerprint.
            return PrivateKey(
                present=False,
                status="unverified",
                reason="the certificate's public key is invalid, so no private key could be compared with it",
            )
        if public_key is None:
            return PrivateKey(
                present=False,
                status="unverified",
                reason="the certificate's public key algorithm is not supported, so no private key "
                "could be compared with it",
            )

        key_paths = self._key_paths.get(public_key)
        if key_paths:
            return PrivateKey(present=True, status="present", location=_nearest(contents.path, key_paths))

        encrypted_key_path = None
        if contents.encrypted_keys:
            encrypted_key_path = contents.path
        elif not contents.has_keys and self._encrypted_key_paths:
            encrypted_key_path = self._encrypted_key_paths[0]
        if encrypted_key_path is not None:
            return PrivateKey(
                present=False,
                status="unverified",
                location=encrypted_key_path,
                reason=f"no unencrypted private key matches the certificate's public key, and the "
                f"private key in {encrypted_key_path} is encrypted, so its public key could not be "
                "compared; an encrypted key does not count as present",
            )

        return PrivateKey(
            present=False,
            status="missing",
            reason=_no_matching_key_reason(self._key_count),
        )


def _no_matching_key_reason(key_count: int) -> str:
    # The count covers every path collected in this run, which may include other rules' paths.
    if key_count == 0:
        return "the collected paths hold no unencrypted private key"
    if key_count == 1:
        return "the one unencrypted private key in the collected paths does not match the certificate's public key"
    return (
        f"none of the {key_count} unencrypted private keys in the collected paths "
        "matches the certificate's public key"
    )


def _nearest(certificate_path: str, key_paths: Sequence[str]) -> str:
    """Pick the key file in the certificate's own file, else its folder, else the first found.

    A rule only counts a key inside its own paths, so the key nearest the
    certificate is the one most likely to be inside the same rule's paths.
    """
    if certificate_path in key_paths:
        return certificate_path
    folder = os.path.dirname(certificate_path)
    for key_path in key_paths:
        if os.path.dirname(key_path) == folder:
            return key_path
    return key_paths[0]
