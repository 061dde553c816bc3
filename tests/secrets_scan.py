"""Fail any test whose outputs contain private key material.

``install(config)`` (called from ``tests/conftest.py``) does three things:

- It records every private key the test process creates or parses. These are
  the keys made by cryptography's generate functions, which
  ``tests.certgen.generate_key`` calls, and the keys read with cryptography's
  load functions, by tests and by certposture itself. Keys that ``certutil -S``
  creates inside an NSS database (``NssDb.generate_self_signed``) are exported
  and recorded too.
- It captures what certposture produces: the stdout and stderr of every
  in-process ``certposture.cli.main`` run and of every subprocess whose
  command runs certposture, and every log record at DEBUG and above. It also
  captures facts documents, the certificate facts and collection errors that
  collector sources build, certposture exception messages, policy results,
  posture-log records, decision-log events and ``-o`` output files.
- After each test it scans those captures, and a finding makes the test
  fail at teardown with the place and an excerpt of at most 40 characters:
  the private key header, or the first 12 characters of the material, after
  what precedes it.

A registered key is found when at least ``GRAM_LENGTH + GRAM_STEP - 1``
consecutive characters of one of its encodings appear: the base64 body of its
PKCS#8 and traditional PEM forms, or a private number (RSA d, p, q and the CRT
values, the EC private value, the raw Ed25519 or Ed448 key) in hexadecimal,
decimal, base64 or base64url. The private numbers' hexadecimal forms cover
the private parts of the key's DER in hexadecimal. Inputs the tests write
themselves (key files given to the CLI) are not scanned.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import importlib
import inspect
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.serialization import pkcs12

# A leak is found once it reaches GRAM_LENGTH + GRAM_STEP - 1 = 31 characters. An EC P-256 or
# Ed25519 private value is 43 base64 characters. A 160-bit DSA x is 27, so only its hexadecimal
# and decimal forms are found.
GRAM_LENGTH = 24
GRAM_STEP = 8

# Headers of private keys in PEM, OpenSSH and PuTTY files, found also for keys that are not registered.
MARKERS = ("PRIVATE KEY-----", "BEGIN OPENSSH PRIVATE KEY", "PuTTY-User-Key-File-")

# An excerpt shows what precedes the material and at most its first EXCERPT_MATERIAL characters.
EXCERPT_LENGTH = 40
EXCERPT_MATERIAL = 12
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_REPORTED_FINDINGS = 5

# Runs of base64, base64url, hexadecimal or decimal characters long enough to hold a gram.
_RUN = re.compile(rf"[A-Za-z0-9+/_-]{{{GRAM_LENGTH},}}")
_HEX_RUN = re.compile(rf"[0-9A-Fa-f]{{{GRAM_LENGTH},}}")
# Hexadecimal bytes separated by colons or spaces, as `openssl pkey -text` prints them.
_SEPARATED_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}[: ]){12,}[0-9A-Fa-f]{2}")
_LONG_STRETCH = re.compile(rf"[A-Za-z0-9+/=_-]{{{EXCERPT_MATERIAL + 1},}}")
_PEM_PRIVATE_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
# A command line that runs certposture: `python -m certposture ...` or a path ending in /certposture.
_CLI_COMMAND = re.compile(r"-m\s+certposture\b|(?:^|[\s/\"'])certposture(?=[\s\"']|$)")

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | x25519.X25519PrivateKey
    | x448.X448PrivateKey
)
_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    x25519.X25519PrivateKey,
    x448.X448PrivateKey,
)


@dataclass(frozen=True)
class Finding:
    """Private key material found in one captured output."""

    place: str
    description: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.place}: {self.description}: {self.excerpt!r}"


# Key registry


def _integer_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def _private_values(key: PrivateKey) -> list[tuple[str, bytes]]:
    """Return the key's secret values as big-endian bytes, each with its name."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        values = {
            "d": numbers.d,
            "p": numbers.p,
            "q": numbers.q,
            "dmp1": numbers.dmp1,
            "dmq1": numbers.dmq1,
            "iqmp": numbers.iqmp,
        }
        return [(name, _integer_bytes(value)) for name, value in values.items()]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # DER stores the EC private value with the curve's full byte length, leading zeros included.
        length = (key.curve.key_size + 7) // 8
        return [("private value", _integer_bytes(key.private_numbers().private_value, length))]
    if isinstance(key, dsa.DSAPrivateKey):
        return [("x", _integer_bytes(key.private_numbers().x))]
    return [("raw private key", key.private_bytes_raw())]


def _value_encodings(name: str, value: bytes) -> list[tuple[str, str]]:
    as_integer = int.from_bytes(value, "big")
    return [
        (f"{name} in hexadecimal", value.hex()),
        (f"{name} in decimal", str(as_integer)),
        (f"{name} in base64", base64.b64encode(value).decode().rstrip("=")),
        (f"{name} in base64url", base64.urlsafe_b64encode(value).decode().rstrip("=")),
    ]


def _pem_body(pem: bytes) -> str:
    lines = pem.decode().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def _pem_encodings(key: PrivateKey) -> list[tuple[str, str]]:
    encodings = []
    formats = [
        ("PKCS#8 PEM body", serialization.PrivateFormat.PKCS8),
        ("traditional PEM body", serialization.PrivateFormat.TraditionalOpenSSL),
    ]
    for name, private_format in formats:
        try:
            pem = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
        except ValueError:
            # Ed25519, Ed448, X25519 and X448 keys have no traditional form.
            continue
        encodings.append((name, _pem_body(pem)))
    return encodings


def _public_texts(key: PrivateKey) -> list[str]:
    """Return base64 forms of the public key, which the private key's PEM body partly repeats.

    A certificate or public key file contains these bytes at any offset, so all
    three base64 alignments are listed.
    """
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return [base64.b64encode(bytes(shift) + public).decode() for shift in range(3)]


def _grams(text: str, step: int) -> Iterator[tuple[int, str]]:
    for position in range(0, len(text) - GRAM_LENGTH + 1, step):
        yield position, text[position : position + GRAM_LENGTH]


class KeyRegistry:
    """Samples of the encodings of every registered private key, for finding them in text.

    Grams that occur in two different keys (the fixed DER headers) or in the
    key's own public key are dropped, so public data never counts as a leak.
    """

    def __init__(self) -> None:
        self._grams: dict[str, tuple[int, str]] = {}
        self._dropped: set[str] = set()
        self._fingerprints: set[bytes] = set()
        self.origins: list[str] = []

    def __len__(self) -> int:
        return len(self.origins)

    def register(self, key: object, origin: str) -> bool:
        """Record ``key``; return False when it is not a private key or was registered before."""
        if not isinstance(key, _PRIVATE_KEY_TYPES):
            return False
        encodings = _pem_encodings(key)
        for name, value in _private_values(key):
            encodings += _value_encodings(name, value)
        fingerprint = hashlib.sha256("\n".join(text for _, text in encodings).encode()).digest()
        if fingerprint in self._fingerprints:
            return False
        self._fingerprints.add(fingerprint)

        number = len(self.origins)
        self.origins.append(f"{_key_kind(key)} key #{number + 1} ({origin})")
        public = {gram for text in _public_texts(key) for _, gram in _grams(text, 1)}
        for encoding, text in encodings:
            for _, gram in _grams(text, GRAM_STEP):
                self._add_gram(gram, number, encoding, public)
        return True

    def _add_gram(self, gram: str, number: int, encoding: str, public: set[str]) -> None:
        if gram in public or gram in self._dropped:
            return
        existing = self._grams.get(gram)
        if existing is None:
            self._grams[gram] = (number, encoding)
        elif existing[0] != number:
            del self._grams[gram]
            self._dropped.add(gram)

    def probe(self, run: str) -> tuple[int, str] | None:
        """Return the offset in ``run`` of the first registered gram and the key it belongs to, or None."""
        grams = self._grams
        for position in range(len(run) - GRAM_LENGTH + 1):
            hit = grams.get(run[position : position + GRAM_LENGTH])
            if hit is not None:
                number, encoding = hit
                return position, f"{encoding} of {self.origins[number]}"
        return None


def _key_kind(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removesuffix("PrivateKey")


# Scanning


def _candidate_runs(text: str) -> Iterator[tuple[str, int]]:
    """Yield (run, offset) for every stretch of text that could hold a gram, normalized to the registry's forms."""
    for match in _RUN.finditer(text):
        yield match.group(), match.start()
    for match in _HEX_RUN.finditer(text):
        run = match.group()
        if run != run.lower():
            yield run.lower(), match.start()
    for match in _SEPARATED_HEX.finditer(text):
        yield re.sub(r"[: ]", "", match.group()).lower(), match.start()


def _excerpt(text: str, start: int, material_length: int) -> str:
    """Return ``material_length`` characters of ``text`` from ``start``, after the context that precedes them.

    The excerpt has at most EXCERPT_LENGTH characters. In the context, each
    stretch of base64 or hexadecimal characters is cut to its first
    EXCERPT_MATERIAL, because it may be an earlier line of the same key.
    """
    before = text[max(0, start - (EXCERPT_LENGTH - material_length)) : start]
    before = _LONG_STRETCH.sub(lambda match: match.group()[:EXCERPT_MATERIAL] + "…", before)
    return before + text[start : start + material_length]


def _as_text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    if data[:2] == b"\x1f\x8b":
        # A gzip file, such as an OPA bundle, is scanned for its content.
        with contextlib.suppress(OSError, EOFError):
            data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


Capture = str | bytes | Callable[[], str | bytes]


class SecretsScanner:
    """Captured outputs of the current test and the registry to scan them with."""

    def __init__(self) -> None:
        self.registry = KeyRegistry()
        self.current_test = "session setup"
        self._pending: list[tuple[str, Capture]] = []
        self._files: list[tuple[str, Path]] = []
        self.texts_scanned = 0
        self.characters_scanned = 0
        self.seconds = 0.0

    def register_key(self, key: object, source: str) -> None:
        started = time.perf_counter()
        self.registry.register(key, f"{source} in {self.current_test}")
        self.seconds += time.perf_counter() - started

    def capture(self, place: str, data: Capture) -> None:
        """Queue an output for the next scan; ``data`` may be a function, called at scan time."""
        self._pending.append((place, data))

    def capture_file(self, place: str, path: Path) -> None:
        """Queue a file that a subprocess writes, read at scan time."""
        self._files.append((place, path))

    def pending_places(self) -> list[str]:
        """Return the places of the outputs captured since the last scan, in capture order."""
        return [place for place, _ in self._pending] + [place for place, _ in self._files]

    def scan_text(self, place: str, text: str) -> list[Finding]:
        """Scan one text now and return the findings."""
        return self._scan([(place, text)])

    def take_findings(self) -> list[Finding]:
        """Scan and forget everything captured since the last call."""
        started = time.perf_counter()
        pending, files = self._pending, self._files
        self._pending, self._files = [], []
        texts = [(place, _as_text(data() if callable(data) else data)) for place, data in pending]
        for place, path in files:
            try:
                with path.open("rb") as handle:
                    texts.append((place, _as_text(handle.read(MAX_FILE_BYTES))))
            except OSError:
                continue
        findings = self._scan(texts)
        self.seconds += time.perf_counter() - started
        return findings

    def _scan(self, texts: list[tuple[str, str]]) -> list[Finding]:
        findings = []
        # The same fingerprints, paths and serial numbers recur in facts, results and logs:
        # each distinct run is probed once, at its first place.
        runs: dict[str, tuple[int, int]] = {}
        for index, (place, text) in enumerate(texts):
            self.texts_scanned += 1
            self.characters_scanned += len(text)
            markers = [(text.find(marker), marker) for marker in MARKERS if marker in text]
            if markers:
                position, marker = min(markers)
                excerpt = _excerpt(text, position, len(marker))
                findings.append(Finding(place, f"private key header {marker!r}", excerpt))
            for run, offset in _candidate_runs(text):
                runs.setdefault(run, (index, offset))
        for run, (index, offset) in runs.items():
            hit = self.registry.probe(run)
            if hit is not None:
                place, text = texts[index]
                findings.append(Finding(place, hit[1], _excerpt(text, offset, EXCERPT_MATERIAL)))
        return findings

    def redact(self, text: str) -> str:
        """Replace private key blocks and registered key material in ``text``."""
        text = _PEM_PRIVATE_BLOCK.sub("[private key redacted]", text)

        def replace(match: re.Match[str]) -> str:
            run = match.group()
            if self.registry.probe(run) or self.registry.probe(re.sub(r"[: ]", "", run).lower()):
                return "[private key material redacted]"
            return run

        text = _SEPARATED_HEX.sub(replace, text)
        return _RUN.sub(replace, text)


def format_findings(findings: list[Finding]) -> str:
    lines = [f"private key material in the output of this test ({len(findings)} finding(s)):"]
    lines += [f"  {finding}" for finding in findings[:MAX_REPORTED_FINDINGS]]
    if len(findings) > MAX_REPORTED_FINDINGS:
        lines.append(f"  ... and {len(findings) - MAX_REPORTED_FINDINGS} more")
    return "\n".join(lines)


# Patches


class _Patches:
    """Attribute replacements, undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set_attribute(self, owner: Any, name: str, value: Any) -> None:
        if name in vars(owner):
            previous = vars(owner)[name]
            self._undo.append(lambda: setattr(owner, name, previous))
        else:
            self._undo.append(lambda: delattr(owner, name))
        setattr(owner, name, value)

    def wrap_function(self, module_name: str, name: str, make_wrapper: Callable[[Any], Any]) -> None:
        """Replace a module's function, and every binding of it in the modules imported so far."""
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        wrapper = make_wrapper(original)
        self.set_attribute(module, name, wrapper)
        for other in list(sys.modules.values()):
            other_name = getattr(other, "__name__", "")
            if other is module or not other_name.startswith(("certposture", "collector", "tests")):
                continue
            if getattr(other, name, None) is original:
                self.set_attribute(other, name, wrapper)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


class _Tee:
    """A stream that copies everything written to it, text or bytes, into ``chunks``."""

    def __init__(self, target: Any, chunks: list[str | bytes]) -> None:
        self._target = target
        self._chunks = chunks
        self._buffer: _Tee | None = None

    def write(self, data: Any) -> Any:
        written = self._target.write(data)
        self._chunks.append(data)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> _Tee:
        if self._buffer is None:
            self._buffer = _Tee(self._target.buffer, self._chunks)
        return self._buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _joined(chunks: list[str | bytes]) -> str:
    return "".join(_as_text(chunk) for chunk in chunks)


def _command_text(args: Any) -> str:
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args)
    return " ".join(os.fsdecode(argument) for argument in args)


def _short(command: str) -> str:
    return command if len(command) <= 160 else command[:157] + "..."


class _LogScanHandler(logging.Handler):
    def __init__(self, scanner: SecretsScanner) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._scanner = scanner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._scanner.capture(f"log record {record.name} {record.levelname}", text)


class SecretsScanPlugin:
    """The pytest plugin: install the capture points, scan after each test, redact failure reports."""

    def __init__(self) -> None:
        self.scanner = SecretsScanner()
        self._patches = _Patches()
        self._handler = _LogScanHandler(self.scanner)
        self._root_level = logging.getLogger().level

    # Installation

    def install(self) -> None:
        self._register_created_keys()
        self._register_loaded_keys()
        self._register_nss_keys()
        self._capture_cli()
        self._capture_domain_outputs()
        self._capture_subprocesses()
        root = logging.getLogger()
        root.addHandler(self._handler)
        root.setLevel(logging.DEBUG)

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._root_level)
        self._patches.undo()

    def _registering(self, original: Callable[..., Any], source: str) -> Callable[..., Any]:
        scanner = self.scanner

        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            key = original(*args, **kwargs)
            scanner.register_key(key, source)
            return key

        return call

    def _register_created_keys(self) -> None:
        patches = self._patches
        for module, function in (
            (rsa, "generate_private_key"),
            (ec, "generate_private_key"),
            (ec, "derive_private_key"),
            (dsa, "generate_private_key"),
        ):
            original = getattr(module, function)
            source = f"made by {module.__name__.rsplit('.', 1)[-1]}.{function}"
            patches.set_attribute(module, function, self._registering(original, source))
        for key_class in (
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            x25519.X25519PrivateKey,
            x448.X448PrivateKey,
        ):
            for method in ("generate", "from_private_bytes"):
                bound = getattr(key_class, method)
                wrapped = self._registering(bound, f"made by {key_class.__name__}.{method}")
                patches.set_attribute(
                    key_class, method, classmethod(lambda _cls, *a, _w=wrapped, **k: _w(*a, **k))
                )
        # NOTE: keys built from number objects (RSAPrivateNumbers.private_key() and the like)
        # are not registered, because those classes are immutable Rust types.

    def _register_loaded_keys(self) -> None:
        scanner = self.scanner
        for function in ("load_pem_private_key", "load_der_private_key", "load_ssh_private_key"):
            original = getattr(serialization, function)
            self._patches.set_attribute(
                serialization, function, self._registering(original, f"read by serialization.{function}")
            )

        original_p12 = pkcs12.load_key_and_certificates

        @functools.wraps(original_p12)
        def load_key_and_certificates(*args: Any, **kwargs: Any) -> Any:
            loaded = original_p12(*args, **kwargs)
            scanner.register_key(loaded[0], "read by pkcs12.load_key_and_certificates")
            return loaded

        original_pkcs12 = pkcs12.load_pkcs12

        @functools.wraps(original_pkcs12)
        def load_pkcs12(*args: Any, **kwargs: Any) -> Any:
            loaded = original_pkcs12(*args, **kwargs)
            scanner.register_key(loaded.key, "read by pkcs12.load_pkcs12")
            return loaded

        self._patches.set_attribute(pkcs12, "load_key_and_certificates", load_key_and_certificates)
        self._patches.set_attribute(pkcs12, "load_pkcs12", load_pkcs12)

    def _register_nss_keys(self) -> None:
        """Export each key that ``certutil -S`` makes inside an NSS database, and register it."""
        from tests import certgen

        original = certgen.NssDb.generate_self_signed

        @functools.wraps(original)
        def generate_self_signed(database: certgen.NssDb, nickname: str, key_type: Any) -> None:
            original(database, nickname, key_type)
            with tempfile.TemporaryDirectory() as scratch:
                exported = Path(scratch) / "export.p12"
                command = ["pk12util", "-o", str(exported), "-n", nickname, "-d", database.spec]
                command += ["-W", certgen.PKCS12_PASSWORD]
                if database.password is not None:
                    command += ["-K", database.password]
                certgen._run(command)
                with warnings.catch_warnings():
                    # pk12util writes BER, which cryptography reads with a warning.
                    warnings.filterwarnings("ignore", message="PKCS#12 bundle could not be parsed as DER")
                    # The wrapped loader registers the key.
                    pkcs12.load_key_and_certificates(exported.read_bytes(), certgen.PKCS12_PASSWORD.encode())

        self._patches.set_attribute(certgen.NssDb, "generate_self_signed", generate_self_signed)

    def _capture_cli(self) -> None:
        scanner = self.scanner

        def make_main(original: Callable[..., int]) -> Callable[..., int]:
            @functools.wraps(original)
            def main(argv: list[str] | None = None) -> int:
                command = _short(" ".join(["certposture", *(sys.argv[1:] if argv is None else argv)]))
                stdout: list[str | bytes] = []
                stderr: list[str | bytes] = []
                saved = sys.stdout, sys.stderr
                if sys.stdout is not None:
                    sys.stdout = _Tee(sys.stdout, stdout)
                if sys.stderr is not None:
                    sys.stderr = _Tee(sys.stderr, stderr)
                try:
                    return original(argv)
                finally:
                    sys.stdout, sys.stderr = saved
                    scanner.capture(f"stdout of in-process `{command}`", _joined(stdout))
                    scanner.capture(f"stderr of in-process `{command}`", _joined(stderr))

            return main

        self._patches.wrap_function("certposture.cli", "main", make_main)

    def _capture_domain_outputs(self) -> None:
        import certposture.engine
        import collector.facts
        from certposture.errors import CertpostureError
        from certposture.store import Store

        scanner = self.scanner
        patches = self._patches
        dump_facts = collector.facts.dump_facts

        def capturing(place: str, describe: Callable[[Any, dict[str, Any]], Capture]) -> Callable[[Any], Any]:
            """Return a wrapper factory that captures ``describe(result, arguments by name)`` after each call."""

            def make(original: Callable[..., Any]) -> Callable[..., Any]:
                signature = inspect.signature(original)

                @functools.wraps(original)
                def call(*args: Any, **kwargs: Any) -> Any:
                    result = original(*args, **kwargs)
                    try:
                        captured = describe(result, signature.bind(*args, **kwargs).arguments)
                    except TypeError:
                        # orjson rejects some values (integers beyond 64 bits), so their repr is scanned.
                        captured = repr(result)
                    scanner.capture(place, captured)
                    return result

                return call

            return make

        patches.wrap_function(
            "collector.facts",
            "dump_facts",
            capturing("facts document (dump_facts)", lambda data, _: data),
        )
        # Facts are immutable, so they are serialized only when the test's outputs are scanned.
        patches.wrap_function(
            "collector.collect",
            "collect",
            capturing("facts from collector.collect", lambda facts, _: lambda: dump_facts(facts)),
        )
        patches.wrap_function(
            "certposture.posture",
            "evaluate_facts",
            capturing("results from posture.evaluate_facts", lambda returned, _: orjson.dumps(returned[0])),
        )
        original_evaluate = certposture.engine.Evaluator.evaluate

        @functools.wraps(original_evaluate)
        def evaluate(evaluator: Any, facts: Any, *args: Any) -> Any:
            results = original_evaluate(evaluator, facts, *args)
            scanner.capture("policy results from engine.Evaluator", orjson.dumps(results))
            return results

        patches.set_attribute(certposture.engine.Evaluator, "evaluate", evaluate)
        patches.wrap_function(
            "certposture.decisionlog",
            "append_event",
            capturing("decision-log event", lambda _, arguments: orjson.dumps(arguments["event"])),
        )
        patches.wrap_function(
            "certposture.files",
            "write_atomically",
            capturing("file written with -o", lambda _, arguments: arguments["data"]),
        )

        original_append = Store.append_posture_log

        @functools.wraps(original_append)
        def append_posture_log(store: Store, rows: Any) -> int:
            for row in rows:
                scanner.capture("posture-log record", row.record)
            return original_append(store, rows)

        patches.set_attribute(Store, "append_posture_log", append_posture_log)

        def capture_message(kind: str, message: str) -> None:
            scanner.capture(kind, message)

        for model in (collector.facts.CollectionError, collector.facts.CollectionNote):
            original_init = model.__init__

            def init(
                self: Any, /, _original: Any = original_init, _kind: str = model.__name__, **data: Any
            ) -> None:
                _original(self, **data)
                capture_message(f"{_kind} message", self.message)

            patches.set_attribute(model, "__init__", init)

        # Certificate facts that collector sources build, also when a test calls a source directly.
        # Models built by model_validate (facts read as input) do not pass through __init__.
        original_certificate_init = collector.facts.Certificate.__init__

        def certificate_init(self: collector.facts.Certificate, /, **data: Any) -> None:
            original_certificate_init(self, **data)
            scanner.capture("certificate facts", self.model_dump_json)

        patches.set_attribute(collector.facts.Certificate, "__init__", certificate_init)

        def error_init(self: BaseException, *args: Any) -> None:
            super(CertpostureError, self).__init__(*args)
            capture_message(f"{type(self).__name__} message", " ".join(str(argument) for argument in args))

        patches.set_attribute(CertpostureError, "__init__", error_init)

    def _capture_subprocesses(self) -> None:
        scanner = self.scanner
        original_init = subprocess.Popen.__init__
        original_communicate = subprocess.Popen.communicate

        @functools.wraps(original_init)
        def init(process: subprocess.Popen[Any], args: Any, *positional: Any, **keywords: Any) -> None:
            original_init(process, args, *positional, **keywords)
            command = _command_text(args)
            if not _CLI_COMMAND.search(command):
                return
            # NOTE: only streams passed by keyword are followed, and pipes read other than with
            # communicate() (process.stdout.read()) are not captured.
            for stream in ("stdout", "stderr"):
                name = getattr(keywords.get(stream), "name", None)
                if isinstance(name, str) and os.path.isfile(name):
                    scanner.capture_file(f"{stream} file of subprocess `{_short(command)}`", Path(name))

        @functools.wraps(original_communicate)
        def communicate(process: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
            stdout, stderr = original_communicate(process, *args, **kwargs)
            command = _command_text(process.args)
            if _CLI_COMMAND.search(command):
                for stream, data in (("stdout", stdout), ("stderr", stderr)):
                    if data:
                        scanner.capture(f"{stream} of subprocess `{_short(command)}`", data)
            return stdout, stderr

        self._patches.set_attribute(subprocess.Popen, "__init__", init)
        self._patches.set_attribute(subprocess.Popen, "communicate", communicate)

    # Hooks

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.scanner.current_test = nodeid

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        try:
            return (yield)
        finally:
            findings = self.scanner.take_findings()
            if findings:
                pytest.fail(format_findings(findings), pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Iterator[None]:
        report: Any = yield
        if report.failed:
            # pytest prints the captured output of a failing test, so key material is redacted from it.
            report.sections = [(title, self.scanner.redact(content)) for title, content in report.sections]
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        findings = self.scanner.take_findings()
        if findings:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(format_findings(findings).replace("this test", "the session"), red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        scanner = self.scanner
        terminalreporter.write_line(
            f"secrets scan: {len(scanner.registry)} private key(s) registered, {scanner.texts_scanned} output(s) "
            f"with {scanner.characters_scanned} characters scanned in {scanner.seconds:.1f} s"
        )


_plugin: SecretsScanPlugin | None = None


def install(config: pytest.Config) -> None:
    """Install the capture points and register the plugin; call from ``pytest_configure``."""
    global _plugin
    _plugin = SecretsScanPlugin()
    _plugin.install()
    config.pluginmanager.register(_plugin, "secrets-scan")


def uninstall(config: pytest.Config) -> None:
    global _plugin
    if _plugin is not None:
        _plugin.uninstall()
        config.pluginmanager.unregister(_plugin)
        _plugin = None


def session_scanner() -> SecretsScanner:
    """Return the scanner of this pytest session, for tests of the scan itself."""
    if _plugin is None:
        raise RuntimeError("the secrets scan is not installed; tests/conftest.py installs it")
    return _plugin.scanner
