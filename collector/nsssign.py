"""Sign messages with private keys in an NSS ``sql:`` database through NSS itself, for proof of possession.

The NSS work runs in a child process (``python -m collector.nsssign``), so the
global state of libnss3 never lives in the collector process and every call
opens the database with a fresh NSS initialization. The parent writes one JSON
request to the child's standard input: the database directory, the password
and the items, with bytes in base64. The password passes only through that
pipe, never through argv or the environment. The child writes one JSON
response to its standard output.

Signature formats, as ``cryptography`` verifies them:

- RSA keys: RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a salt length of 32
  bytes. Python hashes the message and NSS signs the digest with
  ``CKM_RSA_PKCS_PSS``.
- EC keys: ECDSA with SHA-256, DER-encoded as an X9.62 ``Ecdsa-Sig-Value``.
  NSS returns the raw ``r || s`` of ``CKM_ECDSA``, which the child re-encodes.
- Ed25519 keys: pure Ed25519 over the message with ``CKM_EDDSA``, but only
  when the NSS softoken offers that mechanism. NSS 3.87 does not, and it
  cannot store an Ed25519 certificate either.

Any other key type, such as DSA, gives an ``NssSignError``.

NSS is opened read-only with ``NSS_INIT_NOMODDB``, so only the NSS softoken
(cert9.db and key4.db) is loaded. PKCS #11 modules listed in the database's
pkcs11.txt, such as smart cards, are not loaded, and a key held by one of them
is reported as missing.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

logger = logging.getLogger(__name__)

Algorithm = Literal["rsa-pss-sha256", "ecdsa-sha256", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-pss-sha256", "ecdsa-sha256", "ed25519")

DEFAULT_TIMEOUT = 60.0
PSS_SALT_LENGTH = 32

# The shared library that the child loads, and the Debian package that ships it.
LIBNSS3 = "libnss3.so"
LIBNSS3_PACKAGE = "libnss3"

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class NssSignature:
    """A signature made by NSS with the private key of one certificate."""

    algorithm: Algorithm
    signature: bytes


@dataclass(frozen=True)
class NssSignError:
    """The reason that no signature was made for one certificate.

    ``message`` is one line that names the database and the fix. It never
    quotes key material or the password. ``password_needed`` is True when
    the key could not be used because the database needs a password that was
    not given or was wrong.
    """

    message: str
    password_needed: bool = False


NssSignOutcome = NssSignature | NssSignError


def sign_with_nssdb(
    directory: str,
    items: Sequence[tuple[str, bytes, bytes]],
    password: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, NssSignOutcome]:
    """Sign each message with the private key of its certificate in the NSS database ``directory``.

    ``directory`` is ``DIR`` or ``sql:DIR``. ``items`` are tuples of the
    certificate's SHA-256 fingerprint (64 lower-case hex digits), the
    certificate's DER and the message to sign. ``password`` is the database
    password itself, not a file name, or None. ``timeout`` is in seconds and
    covers the whole child process.

    Returns one outcome per fingerprint. Every failure of the database, of
    NSS or of the child process becomes an ``NssSignError`` for the items it
    affects. Raises ValueError only for invalid ``items``: a malformed or
    repeated fingerprint, or one that is not the SHA-256 of its certificate.
    """
    fingerprints = _check_items(items)
    if not fingerprints:
        return {}

    # Imported here, because collector.sources.nssdb loads cryptography, which the child does not need.
    from collector.sources.nssdb import database_directory

    try:
        location = database_directory(directory)
    except ValueError as exc:
        return _fail_all(fingerprints, str(exc))
    problem = _database_problem(location)
    if problem is not None:
        return _fail_all(fingerprints, problem)
    if password is not None and "\0" in password:
        message = f"the password for NSS database {location} contains a NUL character, which NSS cannot take. Pass the database password with --nssdb-password-file FILE."
        return _fail_all(fingerprints, message, password_needed=True)

    request = {
        "directory": location,
        "password": password,
        "items": [
            {"fingerprint": fingerprint, "certificate": _b64(der), "message": _b64(message)}
            for fingerprint, der, message in items
        ],
    }
    logger.debug("signing %d message(s) with NSS database %s", len(items), location)
    return _run_child(location, json.dumps(request).encode(), fingerprints, timeout, password)


def _check_items(items: Sequence[tuple[str, bytes, bytes]]) -> list[str]:
    fingerprints: list[str] = []
    for fingerprint, der, _ in items:
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError(f"invalid fingerprint {fingerprint!r}: expected 64 lower-case hex digits")
        if fingerprint in fingerprints:
            raise ValueError(f"fingerprint {fingerprint} is given more than once")
        if hashlib.sha256(der).hexdigest() != fingerprint:
            raise ValueError(
                f"fingerprint {fingerprint} is not the SHA-256 of the certificate DER given with it"
            )
        fingerprints.append(fingerprint)
    return fingerprints


def _database_problem(location: str) -> str | None:
    if not os.path.exists(location):
        return f"NSS database directory {location} not found. Pass the directory that contains cert9.db and key4.db."
    if not os.path.isdir(location):
        return f"NSS database path {location} is not a directory. Pass the directory that contains cert9.db and key4.db."
    if not os.path.exists(os.path.join(location, "cert9.db")):
        return (
            f"{location} is not an NSS sql: database because it has no cert9.db. Pass the directory "
            f"that contains cert9.db and key4.db, or create one with certutil -N -d {_quoted_spec(location)}"
        )
    for name in ("cert9.db", "key4.db"):
        path = os.path.join(location, name)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}, so NSS was not started. Check the database's files."
        # A FIFO or device would block NSS when it opens the file, so NSS is never started on one.
        if not stat.S_ISREG(mode):
            return f"{path} is not a regular file, so NSS was not started. Replace it with the database file."
    return None


def _quoted_spec(directory: str) -> str:
    """Return ``sql:DIR`` quoted for a shell, for the commands that messages suggest."""
    return shlex.quote(f"sql:{directory}")


def _fail_all(
    fingerprints: Sequence[str], message: str, *, password_needed: bool = False
) -> dict[str, NssSignOutcome]:
    return {fingerprint: NssSignError(message, password_needed) for fingerprint in fingerprints}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Parent side: start the child and read its response.


def _child_argv() -> list[str]:
    return [sys.executable, "-m", "collector.nsssign"]


def _child_environment() -> dict[str, str]:
    """Return this process's environment with this package's parent directory first on PYTHONPATH.

    The child then imports the same ``collector`` package as the parent,
    even from a source tree that is not installed.
    """
    environment = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = package_root if not existing else f"{package_root}{os.pathsep}{existing}"
    return environment


def _run_child(
    location: str, request: bytes, fingerprints: Sequence[str], timeout: float, password: str | None
) -> dict[str, NssSignOutcome]:
    process_name = f"the NSS signing process for database {location}"
    try:
        completed = subprocess.run(
            _child_argv(),
            input=request,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=_child_environment(),
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has killed the child before raising.
        logger.warning("%s timed out after %g s and was killed", process_name, timeout)
        return _fail_all(
            fingerprints,
            f"{process_name} timed out after {timeout:g} s and was killed. Check that the database is on a local disk and not locked, then retry.",
        )
    except OSError as exc:
        logger.warning("%s could not be started: %s", process_name, exc)
        return _fail_all(
            fingerprints, f"{process_name} could not be started with {sys.executable}: {exc.strerror or exc}"
        )

    if completed.returncode != 0:
        detail = _exit_text(completed.returncode) + _stderr_summary(completed.stderr, password)
        logger.warning("%s %s", process_name, detail)
        return _fail_all(
            fingerprints, f"{process_name} {detail}. Run it again, and report the error if it repeats."
        )
    try:
        return _read_response(completed.stdout, fingerprints, location)
    except ValueError as exc:
        logger.warning("%s printed invalid output: %s", process_name, exc)
        return _fail_all(fingerprints, f"{process_name} printed invalid output: {exc}. Report this error.")


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed with {name}"
    return f"exited with status {returncode}"


def _stderr_summary(stderr: bytes, password: str | None) -> str:
    """Return the last non-empty line of the child's stderr, as ``: line``, or nothing.

    The last line of a Python traceback names the exception. The child never
    writes the password, but this line is the one text in an outcome that
    this module does not compose, so any copy of the password in it is replaced.
    """
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    if password:
        line = line.replace(password, "(password)")
    return f": {line[:300]}"


def _read_response(stdout: bytes, fingerprints: Sequence[str], location: str) -> dict[str, NssSignOutcome]:
    """Turn the child's JSON response into outcomes, or raise ValueError when it is not a valid response."""
    try:
        response = json.loads(stdout)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(response, dict) or not isinstance(response.get("results"), dict):
        raise ValueError("no results object")
    shutdown_error = response.get("shutdown_error")
    if shutdown_error is not None:
        logger.warning("NSS did not shut down cleanly after using database %s: %s", location, shutdown_error)

    results: dict[str, Any] = response["results"]
    outcomes: dict[str, NssSignOutcome] = {}
    for fingerprint in fingerprints:
        result = results.get(fingerprint)
        if result is None:
            outcomes[fingerprint] = NssSignError(
                f"the NSS signing process for database {location} returned no result for certificate "
                f"{fingerprint}. Report this error."
            )
        else:
            outcomes[fingerprint] = _read_result(fingerprint, result)
    return outcomes


def _read_result(fingerprint: str, result: object) -> NssSignOutcome:
    if not isinstance(result, dict):
        raise ValueError(f"result for {fingerprint} is not an object")
    if "error" in result:
        message, password_needed = result["error"], result.get("password_needed")
        if not isinstance(message, str) or not isinstance(password_needed, bool):
            raise ValueError(f"error result for {fingerprint} has no message or password_needed flag")
        return NssSignError(message.replace("\n", " "), password_needed)
    algorithm, signature = result.get("algorithm"), result.get("signature")
    if algorithm not in ALGORITHMS or not isinstance(signature, str):
        raise ValueError(f"signature result for {fingerprint} has no known algorithm or no signature")
    try:
        signature_bytes = base64.b64decode(signature, validate=True)
    except ValueError:
        raise ValueError(f"signature for {fingerprint} is not base64") from None
    return NssSignature(cast(Algorithm, algorithm), signature_bytes)


# Child side: NSS through ctypes. Constants are from the NSS 3.87 headers.

NSS_INIT_READONLY = 0x1
NSS_INIT_NOMODDB = 0x4
NSS_INIT_NOROOTINIT = 0x10
SEC_SUCCESS = 0
SEC_ERROR_BAD_PASSWORD = -8192 + 15

CKM_RSA_PKCS_PSS = 0x0D
CKM_SHA256 = 0x250
CKG_MGF1_SHA256 = 0x2
CKM_ECDSA = 0x1041
CKM_EDDSA = 0x1057

# SECKEY_GetPrivateKeyType values (KeyType in keythi.h).
RSA_KEY = 1
EC_KEY = 6
RSA_PSS_KEY = 7

# Public key algorithm OIDs in a certificate's subjectPublicKeyInfo.
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_ED25519 = "1.3.101.112"
OID_NAMES = {"1.2.840.10040.4.1": "DSA", "1.3.101.113": "Ed448", "1.2.840.113549.1.3.1": "DH"}


class SECItem(ctypes.Structure):
    _fields_ = (("type", ctypes.c_int), ("data", ctypes.c_void_p), ("len", ctypes.c_uint))


class CK_RSA_PKCS_PSS_PARAMS(ctypes.Structure):
    """The PSS parameters of CKM_RSA_PKCS_PSS, named and laid out as in pkcs11t.h."""

    _fields_ = (("hashAlg", ctypes.c_ulong), ("mgf", ctypes.c_ulong), ("sLen", ctypes.c_ulong))


# PK11PasswordFunc: char *(*)(PK11SlotInfo *slot, PRBool retry, void *arg)
_PASSWORD_FUNC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

_SECITEM_P = ctypes.POINTER(SECItem)
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "NSS_GetVersion": (ctypes.c_char_p, []),
    "NSS_InitContext": (
        ctypes.c_void_p,
        [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_uint32,
        ],
    ),
    "NSS_ShutdownContext": (ctypes.c_int, [ctypes.c_void_p]),
    "PK11_SetPasswordFunc": (None, [_PASSWORD_FUNC]),
    "PK11_GetInternalKeySlot": (ctypes.c_void_p, []),
    "PK11_FreeSlot": (None, [ctypes.c_void_p]),
    "PK11_NeedLogin": (ctypes.c_int, [ctypes.c_void_p]),
    "PK11_IsLoggedIn": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    "PK11_Authenticate": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]),
    "PK11_DoesMechanism": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulong]),
    "CERT_GetDefaultCertDB": (ctypes.c_void_p, []),
    "CERT_FindCertByDERCert": (ctypes.c_void_p, [ctypes.c_void_p, _SECITEM_P]),
    "CERT_DestroyCertificate": (None, [ctypes.c_void_p]),
    "PK11_FindKeyByAnyCert": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]),
    "SECKEY_GetPrivateKeyType": (ctypes.c_int, [ctypes.c_void_p]),
    "SECKEY_DestroyPrivateKey": (None, [ctypes.c_void_p]),
    "PK11_SignatureLen": (ctypes.c_int, [ctypes.c_void_p]),
    "PK11_SignWithMechanism": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_ulong, _SECITEM_P, _SECITEM_P, _SECITEM_P],
    ),
    "PORT_Strdup": (ctypes.c_void_p, [ctypes.c_char_p]),
    # NSPR functions, found through libnss3's dependency on libnspr4.
    "PR_GetError": (ctypes.c_int32, []),
    "PR_ErrorToName": (ctypes.c_char_p, [ctypes.c_int32]),
    "PR_ErrorToString": (ctypes.c_char_p, [ctypes.c_int32, ctypes.c_uint32]),
}


class _MissingFunction(Exception):
    pass


def _load_nss(name: str) -> ctypes.CDLL:
    """Load libnss3 and declare the prototypes of the functions used.

    Raises OSError when the library cannot be loaded, and _MissingFunction when it lacks a function.
    """
    library = ctypes.CDLL(name)
    for function_name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            function = getattr(library, function_name)
        except AttributeError:
            raise _MissingFunction(function_name) from None
        function.restype = restype
        function.argtypes = argtypes
    return library


def _nss_error(nss: ctypes.CDLL) -> str:
    """Describe NSS's last error as ``NSS error CODE NAME (text)``."""
    code = int(nss.PR_GetError())
    name = nss.PR_ErrorToName(code)
    text = nss.PR_ErrorToString(code, 0)
    described = f"NSS error {code} {name.decode() if name else '(unknown name)'}"
    return f"{described} ({text.decode(errors='replace')})" if text else described


def _secitem(buffer: ctypes.Array[ctypes.c_char]) -> SECItem:
    return SECItem(0, ctypes.cast(buffer, ctypes.c_void_p), len(buffer))


class _PasswordCallback:
    """A PK11PasswordFunc that returns the password on the first call and NULL on every later call.

    NSS frees the returned string, so it gets a ``PORT_Strdup`` copy. NULL on
    a retry stops NSS from trying a wrong password again.
    """

    def __init__(self, nss: ctypes.CDLL, password: str | None) -> None:
        self._nss = nss
        self._password = None if password is None else password.encode()
        self.calls = 0

    def __call__(self, slot: int | None, retry: int, arg: int | None) -> int | None:
        self.calls += 1
        if self._password is None or retry or self.calls > 1:
            return None
        copy: int | None = self._nss.PORT_Strdup(self._password)
        return copy


@dataclass(frozen=True)
class _Login:
    """The outcome of logging in to the key database, done once per child."""

    error: str | None
    password_needed: bool


@dataclass(frozen=True)
class _Database:
    nss: ctypes.CDLL
    directory: str
    handle: int
    login: _Login
    has_eddsa: bool
    version: str


def _error_result(message: str, *, password_needed: bool = False) -> dict[str, object]:
    return {"error": message, "password_needed": password_needed}


def serve(request: Mapping[str, Any], library: str | None = None) -> dict[str, Any]:
    """Sign the items of one child request with NSS loaded from ``library``, by default ``LIBNSS3``.

    Returns the response, which has a result for every item.
    """
    directory: str = request["directory"]
    password: str | None = request["password"]
    items = [
        (item["fingerprint"], base64.b64decode(item["certificate"]), base64.b64decode(item["message"]))
        for item in request["items"]
    ]
    fingerprints = [fingerprint for fingerprint, _, _ in items]

    def all_failed(message: str) -> dict[str, Any]:
        return {
            "results": {fingerprint: _error_result(message) for fingerprint in fingerprints},
            "shutdown_error": None,
        }

    try:
        nss = _load_nss(library or LIBNSS3)
    except OSError as exc:
        return all_failed(
            f"NSS database {directory} cannot be used because {library or LIBNSS3} could not be loaded: {exc}. "
            f"Install the package {LIBNSS3_PACKAGE}."
        )
    except _MissingFunction as exc:
        return all_failed(
            f"NSS database {directory} cannot be used because {library or LIBNSS3} has no function {exc}. "
            f"Install a newer {LIBNSS3_PACKAGE}."
        )

    callback = _PasswordCallback(nss, password)
    # The ctypes function object must stay referenced for as long as NSS may call it.
    password_function = _PASSWORD_FUNC(callback)
    nss.PK11_SetPasswordFunc(password_function)
    flags = NSS_INIT_READONLY | NSS_INIT_NOMODDB | NSS_INIT_NOROOTINIT
    context = nss.NSS_InitContext(b"sql:" + os.fsencode(directory), b"", b"", b"secmod.db", None, flags)
    if not context:
        return all_failed(
            f"NSS could not open database {directory}: {_nss_error(nss)}. Check that the directory "
            "contains cert9.db and key4.db and that this user can read them."
        )

    results: dict[str, Any] = {}
    try:
        database = _open_database(nss, directory, password)
        for fingerprint, der, message in items:
            results[fingerprint] = _sign_item(database, fingerprint, der, message)
    finally:
        shutdown_error = None if nss.NSS_ShutdownContext(context) == SEC_SUCCESS else _nss_error(nss)
    return {"results": results, "shutdown_error": shutdown_error}


def _open_database(nss: ctypes.CDLL, directory: str, password: str | None) -> _Database:
    version_text: bytes | None = nss.NSS_GetVersion()
    version = version_text.decode() if version_text else "(unknown version)"
    slot = nss.PK11_GetInternalKeySlot()
    if not slot:
        login = _Login(f"NSS has no key slot for database {directory}: {_nss_error(nss)}", False)
        return _Database(nss, directory, nss.CERT_GetDefaultCertDB(), login, False, version)
    try:
        login = _log_in(nss, slot, directory, password)
        has_eddsa = bool(nss.PK11_DoesMechanism(slot, CKM_EDDSA))
    finally:
        nss.PK11_FreeSlot(slot)
    return _Database(nss, directory, nss.CERT_GetDefaultCertDB(), login, has_eddsa, version)


def _log_in(nss: ctypes.CDLL, slot: int, directory: str, password: str | None) -> _Login:
    # A database created with an empty password needs no login at all.
    if not nss.PK11_NeedLogin(slot) or nss.PK11_IsLoggedIn(slot, None):
        return _Login(None, False)
    if password is None:
        message = (
            f"NSS database {directory} needs a password to use its private keys, and none was given. "
            "Put the password on the first line of a file readable only by you and pass it with --nssdb-password-file FILE."
        )
        return _Login(message, True)
    # After refusing a wrong password, PK11_Authenticate in NSS 3.87 returns SECWouldBlock (-2), not SECFailure.
    if nss.PK11_Authenticate(slot, 1, None) == SEC_SUCCESS:
        return _Login(None, False)
    code = int(nss.PR_GetError())
    error = _nss_error(nss)
    if code == SEC_ERROR_BAD_PASSWORD:
        message = f"the password given for NSS database {directory} was rejected with {error}. Pass the correct one with --nssdb-password-file FILE."
        return _Login(message, True)
    message = f"NSS could not log in to database {directory}: {error}. Check the database with certutil -K -d {_quoted_spec(directory)}"
    return _Login(message, False)


def _sign_item(database: _Database, fingerprint: str, der: bytes, message: bytes) -> dict[str, object]:
    nss, directory = database.nss, database.directory
    try:
        key_algorithm = _public_key_algorithm(der)
    except ValueError as exc:
        return _error_result(
            f"the certificate DER given for {fingerprint} could not be read: {exc}. Pass the certificate as DER."
        )
    if key_algorithm == OID_ED25519 and not database.has_eddsa:
        return _error_result(
            f"certificate {fingerprint} has an Ed25519 key, which NSS {database.version} cannot use with database "
            f"{directory} because its softoken has no CKM_EDDSA. Use an RSA or EC key, or a newer NSS."
        )
    if key_algorithm not in (OID_RSA_ENCRYPTION, OID_RSASSA_PSS, OID_EC_PUBLIC_KEY, OID_ED25519):
        key_name = OID_NAMES.get(key_algorithm, f"OID {key_algorithm}")
        return _error_result(
            f"certificate {fingerprint} in NSS database {directory} has a {key_name} key, which cannot be "
            "used for proof of possession. Use an RSA, EC or Ed25519 key."
        )

    der_buffer = ctypes.create_string_buffer(der, len(der))
    der_item = _secitem(der_buffer)
    certificate = nss.CERT_FindCertByDERCert(database.handle, ctypes.byref(der_item))
    if not certificate:
        return _error_result(
            f"certificate {fingerprint} is not in NSS database {directory}. Import it with its private key, "
            f"for example with pk12util -i FILE.p12 -d {_quoted_spec(directory)}"
        )
    try:
        if database.login.error is not None:
            return _error_result(database.login.error, password_needed=database.login.password_needed)
        key = nss.PK11_FindKeyByAnyCert(certificate, None)
        if not key:
            return _error_result(
                f"NSS database {directory} has certificate {fingerprint} but no private key for it. Import "
                f"the certificate together with its key, for example with pk12util -i FILE.p12 -d {_quoted_spec(directory)}"
            )
        try:
            return _sign_with_key(database, key, key_algorithm, fingerprint, message)
        finally:
            nss.SECKEY_DestroyPrivateKey(key)
    finally:
        nss.CERT_DestroyCertificate(certificate)


def _sign_with_key(
    database: _Database, key: int, key_algorithm: str, fingerprint: str, message: bytes
) -> dict[str, object]:
    nss, directory = database.nss, database.directory
    key_type = int(nss.SECKEY_GetPrivateKeyType(key))
    parameters: SECItem | None = None
    pss_parameters = CK_RSA_PKCS_PSS_PARAMS(CKM_SHA256, CKG_MGF1_SHA256, PSS_SALT_LENGTH)
    algorithm: Algorithm
    if key_algorithm in (OID_RSA_ENCRYPTION, OID_RSASSA_PSS) and key_type in (RSA_KEY, RSA_PSS_KEY):
        algorithm, mechanism, data = "rsa-pss-sha256", CKM_RSA_PKCS_PSS, hashlib.sha256(message).digest()
        parameters = SECItem(
            0, ctypes.cast(ctypes.pointer(pss_parameters), ctypes.c_void_p), ctypes.sizeof(pss_parameters)
        )
    elif key_algorithm == OID_EC_PUBLIC_KEY and key_type == EC_KEY:
        algorithm, mechanism, data = "ecdsa-sha256", CKM_ECDSA, hashlib.sha256(message).digest()
    elif key_algorithm == OID_ED25519:
        # NOTE: not run by the tests, because NSS 3.87 has no CKM_EDDSA to reach this branch.
        algorithm, mechanism, data = "ed25519", CKM_EDDSA, message
    else:
        return _error_result(
            f"the private key of certificate {fingerprint} in NSS database {directory} has NSS key type "
            f"{key_type}, which does not match the certificate's public key. Import the certificate with its own key."
        )

    length = int(nss.PK11_SignatureLen(key))
    if length <= 0:
        return _error_result(
            f"NSS could not size the signature of {fingerprint} in database {directory}: {_nss_error(nss)}. "
            f"Check the key with certutil -K -d {_quoted_spec(directory)}"
        )
    signature_buffer = ctypes.create_string_buffer(length)
    signature_item = _secitem(signature_buffer)
    data_buffer = ctypes.create_string_buffer(data, len(data))
    data_item = _secitem(data_buffer)
    status = nss.PK11_SignWithMechanism(
        key,
        mechanism,
        None if parameters is None else ctypes.byref(parameters),
        ctypes.byref(signature_item),
        ctypes.byref(data_item),
    )
    if status != SEC_SUCCESS:
        return _error_result(
            f"NSS could not sign with the private key of {fingerprint} in database {directory}: {_nss_error(nss)}. "
            f"Check the key with certutil -K -d {_quoted_spec(directory)}"
        )
    signature = signature_buffer.raw[: signature_item.len]
    if algorithm == "ecdsa-sha256":
        signature = encode_ecdsa_signature(signature)
    return {"algorithm": algorithm, "signature": _b64(signature)}


# DER helpers: enough to read a certificate's public key algorithm and to encode an ECDSA signature.


def _read_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """Return the tag, content start and content end of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("DER element truncated")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or start + size > len(data):
            raise ValueError("invalid DER length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > len(data):
        raise ValueError("DER element longer than its container")
    return tag, start, start + length


def _decode_oid(content: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or content[-1] & 0x80:
        raise ValueError("invalid OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def _public_key_algorithm(certificate: bytes) -> str:
    """Return the dotted OID of the algorithm in a DER certificate's subjectPublicKeyInfo."""
    _, certificate_start, _ = _read_element(certificate, 0)
    tag, offset, tbs_end = _read_element(certificate, certificate_start)
    if tag != 0x30:
        raise ValueError("no tbsCertificate")
    # tbsCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    tag, _, end = _read_element(certificate, offset)
    if tag == 0xA0:
        offset = end
    for _ in range(5):
        _, _, offset = _read_element(certificate, offset)
    if offset >= tbs_end:
        raise ValueError("no subjectPublicKeyInfo")
    _, spki_start, _ = _read_element(certificate, offset)
    _, algorithm_start, _ = _read_element(certificate, spki_start)
    tag, oid_start, oid_end = _read_element(certificate, algorithm_start)
    if tag != 0x06:
        raise ValueError("no public key algorithm OID")
    return _decode_oid(certificate[oid_start:oid_end])


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + _der_length(len(value)) + value


def encode_ecdsa_signature(raw: bytes) -> bytes:
    """Encode NSS's raw ``r || s`` ECDSA signature as a DER ``Ecdsa-Sig-Value`` SEQUENCE of two INTEGERs."""
    if not raw or len(raw) % 2:
        raise ValueError(
            f"raw ECDSA signature has invalid length {len(raw)}, expected a positive even length"
        )
    half = len(raw) // 2
    body = _der_integer(raw[:half]) + _der_integer(raw[half:])
    return b"\x30" + _der_length(len(body)) + body


def _check_request(request: object) -> None:
    """Raise ValueError, KeyError or TypeError unless ``request`` has the shape that ``serve`` reads."""
    if not isinstance(request, dict):
        raise TypeError("request is not an object")
    if not isinstance(request["directory"], str) or not isinstance(request["password"], str | None):
        raise TypeError("directory or password is not a string")
    for item in request["items"]:
        for field in ("fingerprint", "certificate", "message"):
            if not isinstance(item[field], str):
                raise TypeError(f"item {field} is not a string")
        base64.b64decode(item["certificate"], validate=True)
        base64.b64decode(item["message"], validate=True)


def main(library: str | None = None) -> int:
    """Read one request from stdin, write the response to stdout, and return the exit status."""
    # NSS and anything else loaded here must not mix text into the JSON response, so the
    # response goes to a copy of stdout and file descriptor 1 is pointed at stderr.
    response_stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        request = json.loads(sys.stdin.buffer.read())
        _check_request(request)
    except (ValueError, KeyError, TypeError) as exc:
        # The exception type only, because a message could quote the request, which contains the password.
        print(f"invalid request: {type(exc).__name__}", file=sys.stderr)
        return 2
    response = serve(request, library)
    json.dump(response, response_stream)
    response_stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
