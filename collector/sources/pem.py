"""PEM and DER files: certificates and the private keys that belong to them.

Each given path is a file, or a directory scanned recursively in sorted
order. Symbolic links to files are read, but symbolic links to directories
are not entered, so a link loop cannot make the scan run forever. A file may
hold PEM certificates (several form a chain), PEM private keys (PKCS#8
``PRIVATE KEY``, traditional ``RSA``/``EC``/``DSA PRIVATE KEY``, and their
encrypted forms), a single DER certificate or a single DER private key.

Only regular files are opened. FIFOs, sockets and devices, given as paths or
found in directories, are reported without being opened, because reading them
could block or never end. A file larger than ``PemLimits.max_file_size`` or
with more certificate blocks than ``PemLimits.max_certificates_per_file`` is
reported and not parsed at all, so no certificate or key of it is collected.
Reading such a file in part would make the facts depend on the order of its
blocks. Every such file is an entry in the errors, and the other files are
still collected.

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

import errno
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from collector.facts import CertificateSource, CollectionError, PrivateKey
from collector.limits import DEFAULT_MAX_CERTIFICATES_PER_FILE as DEFAULT_MAX_CERTIFICATES_PER_FILE
from collector.limits import DEFAULT_MAX_FILE_SIZE as DEFAULT_MAX_FILE_SIZE
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

if TYPE_CHECKING:
    from collector.proofs import KeyMaterial

logger = logging.getLogger(__name__)

SOURCE = "pem"

# A directory scan stops after this many files, so that a path such as / is
# reported instead of walking the whole file system.
MAX_DIRECTORY_FILES = 10_000

# Maximum number of errors listed for the broken PEM blocks of one file. One more
# error counts the rest, so a file of thousands of broken blocks cannot flood the facts.
MAX_BLOCK_ERRORS_PER_FILE = 20

PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"})
ENCRYPTED_PRIVATE_KEY_LABEL = "ENCRYPTED PRIVATE KEY"

# RFC 1421 header of a traditional OpenSSL key encrypted with a password.
_PROC_TYPE_ENCRYPTED = re.compile(rb"^Proc-Type:\s*4\s*,\s*ENCRYPTED\s*$", re.MULTILINE)

# BEGIN lines of the certificate blocks that count towards the limit per file,
# whole or truncated. TRUSTED CERTIFICATE blocks count too, although parsing
# later rejects each of them.
_CERTIFICATE_BEGIN = re.compile(rb"-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----")

_READ_CHUNK = 64 * 1024


def _open_flags() -> int:
    """Return the flags for opening a file whose type was checked before.

    O_NONBLOCK keeps open() from waiting for a writer if a FIFO took the
    file's place in the meantime, and O_NOCTTY keeps a terminal device from
    becoming the controlling terminal. Windows has neither flag but needs
    O_BINARY, so that reading does not translate line endings.
    """
    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    return flags


_OPEN_FLAGS = _open_flags()


@dataclass(frozen=True)
class PemLimits:
    """Limits per file of the PEM and DER source. A file over either limit is reported and not parsed."""

    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_certificates_per_file: int = DEFAULT_MAX_CERTIFICATES_PER_FILE

    def __post_init__(self) -> None:
        for name in ("max_file_size", "max_certificates_per_file"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = PemLimits()


@dataclass
class _FileContents:
    """Contents of one file: certificates, public keys of its private keys, count of encrypted keys."""

    path: str
    certificates: list[x509.Certificate] = field(default_factory=list)
    key_public_keys: list[bytes] = field(default_factory=list)
    encrypted_keys: int = 0
    # The private keys themselves, by public key, kept only while collecting with a challenge.
    kept_keys: dict[bytes, PrivateKeyTypes] | None = None

    def add_key(self, key: PrivateKeyTypes) -> None:
        public_key = _public_key_der(key)
        self.key_public_keys.append(public_key)
        if self.kept_keys is not None:
            self.kept_keys.setdefault(public_key, key)

    @property
    def has_keys(self) -> bool:
        return bool(self.key_public_keys) or self.encrypted_keys > 0

    @property
    def is_empty(self) -> bool:
        return not self.certificates and not self.has_keys


def _error(location: str, step: str, message: str) -> CollectionError:
    return CollectionError(source=SOURCE, location=location, step=step, message=message)


def collect_pem(
    paths: Sequence[str],
    signers: Sequence[Signer],
    limits: PemLimits = DEFAULT_LIMITS,
    material: KeyMaterial | None = None,
) -> SourceResult:
    """Collect certificates from PEM and DER files and pair each with its private key.

    All paths are read before pairing, so a key in one path pairs with a
    certificate in another. ``source.location`` is the file's absolute path.
    A file over one of ``limits`` adds an error and none of its certificates or keys.
    ``material``, given when collecting with a challenge, receives each
    certificate's DER and the unencrypted private keys, for signing proofs.
    """
    result = SourceResult()
    contents: list[_FileContents] = []
    for path, explicit in _list_files(paths, result.errors):
        data = _read_file(path, limits, result.errors)
        if data is None:
            continue
        file_contents = _parse_file(path, data, explicit, limits, result.errors, material is not None)
        if file_contents is not None:
            contents.append(file_contents)
            if material is not None and file_contents.kept_keys:
                for public_key, key in file_contents.kept_keys.items():
                    material.pem_keys.setdefault(public_key, key)

    pairing = _KeyIndex(contents)
    for file_contents in contents:
        for cert in file_contents.certificates:
            private_key = pairing.private_key_for(cert, file_contents)
            source = CertificateSource(type="pem", location=file_contents.path)
            try:
                facts = certificate_facts(cert, source, private_key, signers)
            except CertificateError as exc:
                result.errors.append(exc.to_collection_error(SOURCE, file_contents.path))
                continue
            result.certificates.append(facts)
            if material is not None:
                material.certificates[facts.fingerprint_sha256] = cert.public_bytes(
                    serialization.Encoding.DER
                )
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
        try:
            info = os.stat(path)
        except OSError as exc:
            # A missing path, a link loop, a dangling link or a folder that may not be searched.
            errors.append(_error(path, "open", _open_error_message(path, exc)))
            continue
        if stat.S_ISDIR(info.st_mode):
            for file_path in _scan_directory(path, errors):
                add(file_path, explicit=False)
        else:
            add(path, explicit=True)
    return files


def _scan_directory(top: str, errors: list[CollectionError]) -> Iterator[str]:
    def on_error(exc: OSError) -> None:
        location = exc.filename if isinstance(exc.filename, str) else top
        errors.append(_error(location, "open", _list_error_message(location, exc)))

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


def _open_error_message(path: str, exc: OSError) -> str:
    """Describe why a file or folder could not be opened, and what to do about it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied opening {path}; run the collector as a user that may read it "
            "(often root), or grant that user read access to the file and search access to its folders"
        )
    if exc.errno == errno.ELOOP:
        return (
            f"{path} cannot be resolved: too many levels of symbolic links, as in a link loop; "
            "point the link at a certificate file or folder, or give the real path"
        )
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return (
            f"{path} is a symbolic link to {_link_target(path)}, which does not exist; fix or remove the link"
        )
    if exc.errno == errno.ENOENT:
        return f"path {path} not found"
    return f"cannot open {path}: {exc.strerror or exc}"


def _list_error_message(directory: str, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied listing directory {directory}; run the collector as a user that may "
            "read it (often root), or grant that user read and search access to the directory"
        )
    return f"cannot list directory {directory}: {exc.strerror or exc}"


def _link_target(path: str) -> str:
    try:
        return _escaped(os.readlink(path))
    except OSError:
        return "a missing file"


def _file_type_problem(path: str, mode: int) -> str | None:
    """Describe why a file that is not a regular file is not opened, or return None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    )
    kind = next((name for test, name in kinds if test(mode)), f"of file type {stat.S_IFMT(mode):#o}")
    # Opening a FIFO waits for a writer, and a device such as /dev/zero never ends.
    return (
        f"{path} is {kind}, not a regular file, so it was not opened; "
        "give the path of a PEM or DER certificate or key file"
    )


def _size_problem(path: str, size: int, limits: PemLimits) -> str | None:
    if size <= limits.max_file_size:
        return None
    return (
        f"{path} is {size} bytes, larger than the limit of {limits.max_file_size} bytes for a certificate "
        "or key file, so it was not read; give the certificate file itself, or raise the limit with "
        "--max-file-size"
    )


def _read_file(path: str, limits: PemLimits, errors: list[CollectionError]) -> bytes | None:
    """Read a regular file of at most ``limits.max_file_size`` bytes, or record why it was not read.

    The type and size are checked with stat before opening. On the open
    file, fstat checks the type again in case another file took its place,
    and reading stops one byte past the limit.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        errors.append(_error(path, "open", _open_error_message(path, exc)))
        return None
    problem = _file_type_problem(path, info.st_mode)
    if problem is not None:
        errors.append(_error(path, "open", problem))
        return None
    problem = _size_problem(path, info.st_size, limits)
    if problem is not None:
        errors.append(_error(path, "read", problem))
        return None

    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        errors.append(_error(path, "open", _open_error_message(path, exc)))
        return None
    try:
        info = os.fstat(descriptor)
        problem = _file_type_problem(path, info.st_mode)
        if problem is not None:
            errors.append(_error(path, "open", problem))
            return None
        data = _read_at_most(descriptor, limits.max_file_size + 1)
    except OSError as exc:
        errors.append(_error(path, "read", f"cannot read {path}: {exc.strerror or exc}"))
        return None
    finally:
        os.close(descriptor)

    if len(data) > limits.max_file_size:
        message = (
            f"{path} grew past the limit of {limits.max_file_size} bytes for a certificate or key file "
            "while it was read, so it was not parsed; collect again once the file stops changing"
        )
        errors.append(_error(path, "read", message))
        return None
    return data


def _read_at_most(descriptor: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _parse_file(
    path: str,
    data: bytes,
    explicit: bool,
    limits: PemLimits,
    errors: list[CollectionError],
    keep_keys: bool = False,
) -> _FileContents | None:
    contents = _FileContents(path, kept_keys={} if keep_keys else None)
    if looks_like_pem(data):
        certificate_blocks = sum(1 for _ in _CERTIFICATE_BEGIN.finditer(data))
        if certificate_blocks > limits.max_certificates_per_file:
            message = (
                f"{path} contains {certificate_blocks} certificate PEM blocks, more than the limit of "
                f"{limits.max_certificates_per_file} per file, so no certificate or key in it was "
                "collected; give the file with the device certificate, or raise the limit with "
                "--max-certificates-per-file"
            )
            errors.append(_error(path, "load", message))
            return None
        labels = _parse_pem(contents, data, errors)
        if contents.is_empty and explicit and labels is not None:
            found = ", ".join(labels) if labels else "none"
            errors.append(
                _error(
                    path, "load", f"{path} contains no certificate or private key (PEM blocks found: {found})"
                )
            )
    else:
        certificate_error = _parse_der(contents, data)
        if contents.is_empty and certificate_error is not None:
            # Shaped like a certificate but not loadable: an error, even in a folder scan,
            # because skipping it could hide the device's certificate.
            errors.append(certificate_error.to_collection_error(SOURCE, path))
        elif contents.is_empty:
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
    block_errors: list[CollectionError] = []
    labels = _load_pem_blocks(contents, data, block_errors)
    errors.extend(block_errors[:MAX_BLOCK_ERRORS_PER_FILE])
    left_out = len(block_errors) - MAX_BLOCK_ERRORS_PER_FILE
    if left_out > 0:
        message = (
            f"{contents.path} has {left_out} more PEM blocks that could not be loaded, beyond the "
            f"{MAX_BLOCK_ERRORS_PER_FILE} reported; repair or remove the file"
        )
        errors.append(_error(contents.path, "load", message))
    return None if block_errors else labels


def _load_pem_blocks(contents: _FileContents, data: bytes, errors: list[CollectionError]) -> list[str]:
    """Load the certificate and key blocks into ``contents``, add an error per broken block, return all labels."""
    path = contents.path
    labels: list[str] = []
    for block in split_pem(data):
        labels.append(block.label)
        where = f"{path}: PEM block {block.label} at line {block.line}"
        if block.text is None:
            errors.append(_error(path, "load", f"{where} has no END line; the file may be truncated"))
        elif block.label in CERTIFICATE_LABELS:
            try:
                contents.certificates.append(load_certificate(block.text, "pem"))
            except CertificateError as exc:
                errors.append(_error(path, "load", f"{where}: {exc.message}"))
        elif block.label == "TRUSTED CERTIFICATE":
            message = (
                f"{where} is an OpenSSL trusted certificate, which is not supported; "
                f"convert it with `openssl x509 -in {path} -out client.pem`"
            )
            errors.append(_error(path, "load", message))
        elif block.label == ENCRYPTED_PRIVATE_KEY_LABEL or (
            block.label in PRIVATE_KEY_LABELS and _PROC_TYPE_ENCRYPTED.search(block.text)
        ):
            contents.encrypted_keys += 1
        elif block.label in PRIVATE_KEY_LABELS:
            _add_pem_key(contents, block.text, where, errors)
        else:
            logger.debug("%s: skipping PEM block %s at line %d", path, block.label, block.line)
    return labels


def _add_pem_key(contents: _FileContents, text: bytes, where: str, errors: list[CollectionError]) -> None:
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        # cryptography raises TypeError when the key is encrypted and no password was given.
        contents.encrypted_keys += 1
        return
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography's message is not copied: the message must never risk carrying key data.
        message = f"{where} is not a valid or supported private key ({type(exc).__name__})"
        errors.append(_error(contents.path, "key", message))
        return
    contents.add_key(key)


def _parse_der(contents: _FileContents, data: bytes) -> CertificateError | None:
    """Add a DER certificate or private key to ``contents``.

    Returns the load error when the data is neither, but its outer structure
    is that of an X.509 certificate, so the caller can report it.
    """
    try:
        contents.certificates.append(load_certificate(data, "der"))
        return None
    except CertificateError as exc:
        certificate_error = exc if _has_certificate_shape(_without_trailing_padding(data)) else None
    try:
        key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        contents.encrypted_keys += 1
        return None
    except (ValueError, UnsupportedAlgorithm):
        return certificate_error
    contents.add_key(key)
    return None


def _without_trailing_padding(data: bytes) -> bytes:
    """Cut line ends, spaces or NUL bytes after the first DER element, as an editor or a transfer adds them.

    The cut is made at the element's own end, because the element itself may end in such bytes.
    """
    element = _der_element(data, 0)
    if element is not None and not data[element[2] :].strip(b"\r\n\x00 \t"):
        return data[: element[2]]
    return data


def _has_certificate_shape(data: bytes) -> bool:
    """Return True when ``data`` has the DER structure of an X.509 certificate (RFC 5280, 4.1).

    The outer SEQUENCE contains the TBSCertificate, the signature algorithm and
    a BIT STRING, and the TBSCertificate starts with an optional [0] version,
    the serial number and five SEQUENCEs. CRLs and certification requests
    share the outer shape but not the inner one.
    """
    outer = _der_children(data, 0, len(data))
    if outer is None or [tag for tag, _, _ in outer] != [0x30]:
        return False
    _, start, end = outer[0]
    if end != len(data):
        return False
    parts = _der_children(data, start, end)
    if parts is None or [tag for tag, _, _ in parts] != [0x30, 0x30, 0x03]:
        return False
    tbs = _der_children(data, parts[0][1], parts[0][2])
    if tbs is None:
        return False
    tags = [tag for tag, _, _ in tbs]
    if tags[:1] == [0xA0]:
        tags = tags[1:]
    return tags[:6] == [0x02, 0x30, 0x30, 0x30, 0x30, 0x30]


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]] | None:
    """Return the elements between ``start`` and ``end`` as (tag, content start, end), or None when malformed."""
    children = []
    position = start
    while position < end:
        element = _der_element(data, position)
        if element is None or element[2] > end:
            return None
        children.append(element)
        position = element[2]
    return children


def _der_element(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """Return the tag, content start and end of the DER element at ``offset``, or None when it is malformed."""
    if offset + 2 > len(data):
        return None
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        start, length = offset + 2, first
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or offset + 2 + size > len(data):
            return None
        start, length = offset + 2 + size, int.from_bytes(data[offset + 2 : offset + 2 + size], "big")
    if start + length > len(data):
        return None
    return tag, start, start + length


def _public_key_der(key: PrivateKeyTypes) -> bytes:
    """Return the SubjectPublicKeyInfo of a private key, the only part of it that is kept.

    A traditional ``DSA PRIVATE KEY`` stores its public value beside the
    private one, and cryptography 50 keeps it unchecked. So the public value
    is derived from the private one here: a forged file that copies a
    certificate's public value next to another secret must not pair with it.
    """
    public_key = key.public_key()
    if isinstance(key, dsa.DSAPrivateKey):
        numbers = key.private_numbers()
        parameters = numbers.public_numbers.parameter_numbers
        derived = pow(parameters.g, numbers.x, parameters.p)
        public_key = dsa.DSAPublicNumbers(derived, parameters).public_key()
    return public_key.public_bytes(
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
