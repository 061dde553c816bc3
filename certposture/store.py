"""Embedded store of signing certificates and posture rules: one SQLite file under the home directory.

The home is ``--home``, else ``$CERTPOSTURE_HOME``, else the user data
directory. A signing certificate's private key, kept only on request, lives in
``private/<id>.pem`` with mode 0600 and never enters the database, the facts,
the results or any output.

Files and folders that the store creates are private to their owner, whatever
the umask: the home and its missing parents get mode 0700 and the database
file 0600, and SQLite gives its journal file the database file's mode.
Existing files and folders keep their modes, so a store that an administrator
shares read-only with other users stays readable.

Several processes may use one store at once. Each write runs in a
``BEGIN IMMEDIATE`` transaction, which takes the write lock before the first
read, so a check and the insert that depends on it cannot interleave with
another writer. A process waits up to ``BUSY_TIMEOUT_SECONDS`` for a lock
before it fails. The database keeps SQLite's default rollback journal, not
WAL, because SQLite (3.40.1, tested) cannot open a WAL database whose
``-shm`` file is missing for a user who may not create that file, which
would break read-only stores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certposture.errors import InputError, NotFoundError, StoreError
from certposture.rules import ID_PATTERN
from certposture.signing import SigningCertificateInput
from collector.facts import format_utc
from collector.x509facts import fingerprint_sha256

logger = logging.getLogger(__name__)

DATABASE_NAME = "certposture.db"
# Version 2 added the posture_log and settings tables, version 3 the challenges table. Opening an
# older store for writing creates the missing tables. A read-only older store still works, without
# a posture log (version 1) or issued challenges (versions 1 and 2).
_SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS signing_certificates (
    id TEXT PRIMARY KEY,
    fingerprint_sha256 TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS posture_log (
    seq INTEGER PRIMARY KEY,
    timestamp_us INTEGER NOT NULL,
    rule_id TEXT NOT NULL,
    device_name TEXT,
    passed INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posture_log_time ON posture_log (timestamp_us, seq);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS challenges (
    nonce TEXT PRIMARY KEY,
    issued_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
"""

DEFAULT_POSTURE_LOG_RETENTION = 100_000

# How long a process waits for another one's lock on the database. Transactions write a few rows,
# so a lock held this long means a hung or stopped process.
BUSY_TIMEOUT_SECONDS = 30.0


def default_home() -> Path:
    """Return the per-user data directory for certposture on this platform."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "certposture"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "certposture"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "certposture"


def resolve_home(option: str | None) -> Path:
    if option:
        return Path(option)
    from_environment = os.environ.get("CERTPOSTURE_HOME")
    if from_environment:
        return Path(from_environment)
    return default_home()


class Store:
    """Signing certificates and rules, in insertion order."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._connection: sqlite3.Connection | None = None
        self._read_only = False

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        path = self.home / DATABASE_NAME
        if self.home.exists() and not self.home.is_dir():
            raise StoreError(
                f"store home {self.home} exists and is not a directory; "
                "give a directory with --home or CERTPOSTURE_HOME"
            )
        try:
            _make_private_directory(self.home)
            _create_private_file(path)
        except OSError as error:
            raise StoreError(
                f"cannot open store {path}: {error.strerror}; check --home or CERTPOSTURE_HOME"
            ) from None
        if not _writable(path):
            self._connection = self._connect_read_only(path)
            return self._connection
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            if self._check_version(connection, path) < _SCHEMA_VERSION:
                _create_schema(connection)
        except sqlite3.OperationalError as error:
            if "readonly" not in str(error):
                raise StoreError(
                    f"cannot open store {path}: {_describe(error)}; check --home or CERTPOSTURE_HOME"
                ) from None
            # A file system mounted read-only, or a store that access() reports writable but is not.
            connection = self._connect_read_only(path)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open store {path}: {error}; check --home or CERTPOSTURE_HOME") from None
        self._connection = connection
        return connection

    def _connect_read_only(self, path: Path) -> sqlite3.Connection:
        """Open a store that cannot be written (read-only mount, file owned by another user) for reading."""
        logger.debug("store %s is not writable; opening it read-only", path)
        try:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
            )
            if self._check_version(connection, path) == 0:
                raise StoreError(
                    f"store {path} is read-only and was never initialized; run a write command first"
                )
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot open store {path} read-only: {_describe(error)}; check --home"
            ) from None
        self._read_only = True
        return connection

    @staticmethod
    def _check_version(connection: sqlite3.Connection, path: Path) -> int:
        """Return the store's schema version, and raise StoreError when this code does not support it."""
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > _SCHEMA_VERSION:
            raise StoreError(
                f"store {path} has schema version {version}, newer than this "
                f"certposture supports ({_SCHEMA_VERSION}); upgrade certposture"
            )
        return version

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a read-modify-write under the write lock, committing on success and rolling back on any exception."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot write store {self.home / DATABASE_NAME}: {_describe(error)}; check it is writable"
            ) from None
        try:
            yield connection
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            _roll_back(connection)
            raise StoreError(f"cannot write store {self.home / DATABASE_NAME}: {_describe(error)}") from None
        except BaseException:
            _roll_back(connection)
            raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection for queries and turn SQLite errors into StoreError."""
        connection = self._connect()
        try:
            yield connection
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot read store {self.home / DATABASE_NAME}: {_describe(error)}; "
                "check that it is a certposture store"
            ) from None

    @property
    def read_only(self) -> bool:
        """True when the store file could be opened for reading only."""
        self._connect()
        return self._read_only

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # Signing certificates

    def add_signing_certificate(
        self,
        parsed: SigningCertificateInput,
        name: str | None,
        keep_private_key: bool,
        certificate_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a checked certificate; return its record and whether it was new.

        A certificate already stored (same SHA-256 fingerprint) is not added twice;
        its existing record is returned. ``certificate_id`` keeps an id assigned
        elsewhere (Cloudflare's, for rules exported from there); default a new UUID.
        The lookups, the key file and the insert happen under one write lock, so
        processes adding the same certificate at once all get the same record.
        """
        written_keys: list[Path] = []
        try:
            with self._transaction() as connection:
                return self._add_signing_certificate(
                    connection, parsed, name, keep_private_key, certificate_id, written_keys
                )
        except BaseException:
            for key_path in written_keys:
                key_path.unlink(missing_ok=True)
            raise

    def _add_signing_certificate(
        self,
        connection: sqlite3.Connection,
        parsed: SigningCertificateInput,
        name: str | None,
        keep_private_key: bool,
        certificate_id: str | None,
        written_keys: list[Path],
    ) -> tuple[dict[str, Any], bool]:
        certificate = parsed.certificate
        fingerprint = fingerprint_sha256(certificate)
        key_pem = parsed.private_key_pem if keep_private_key else None
        existing = _find_by_fingerprint(connection, fingerprint)
        if existing is not None:
            if certificate_id and existing["id"] != certificate_id:
                raise InputError(
                    f"certificate is already stored as {existing['id']}, not {certificate_id!r}; "
                    "remove it first to store it under another id"
                )
            if key_pem is None or existing.get("private_key_stored"):
                return existing, False
            # Keep the private key of a certificate stored earlier without it.
            written_keys.append(self._write_private_key(existing["id"], key_pem))
            updated = {**existing, "private_key_stored": True}
            connection.execute(
                "UPDATE signing_certificates SET record = ? WHERE id = ?",
                (orjson.dumps(updated).decode(), existing["id"]),
            )
            return updated, False

        if certificate_id is not None:
            if not re.fullmatch(ID_PATTERN, certificate_id):
                raise InputError(
                    f"--id {certificate_id!r} is not a valid id; use letters, digits, '-' and '_' (at most 64)"
                )
            if connection.execute(
                "SELECT 1 FROM signing_certificates WHERE id = ?", (certificate_id,)
            ).fetchone():
                raise InputError(f"--id {certificate_id!r} is already used by another signing certificate")
        certificate_id = certificate_id or str(uuid.uuid4())
        record = _certificate_record(certificate, certificate_id, name, fingerprint)
        if key_pem is not None:
            written_keys.append(self._write_private_key(certificate_id, key_pem))
            record["private_key_stored"] = True
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        connection.execute(
            "INSERT INTO signing_certificates VALUES (?, ?, ?, ?, "
            "(SELECT COALESCE(MAX(added), 0) + 1 FROM signing_certificates))",
            (certificate_id, fingerprint, orjson.dumps(record).decode(), pem),
        )
        return record, True

    def _write_private_key(self, certificate_id: str, key_pem: bytes) -> Path:
        directory = self.home / "private"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            path = directory / f"{certificate_id}.pem"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(key_pem)
        except OSError as error:
            raise StoreError(f"cannot write private key file under {directory}: {error.strerror}") from None
        return path

    def list_signing_certificates(self) -> list[dict[str, Any]]:
        with self._reading() as connection:
            rows = connection.execute("SELECT id, record FROM signing_certificates ORDER BY added").fetchall()
        return [_load_row("signing_certificates", row_id, text) for row_id, text in rows]

    def get_signing_certificate(self, certificate_id: str) -> dict[str, Any]:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT record FROM signing_certificates WHERE id = ?", (certificate_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"signing certificate {certificate_id!r} not found; list stored ones with `certposture ca list`"
            )
        return _load_row("signing_certificates", certificate_id, row[0])

    def signing_certificate_exists(self, certificate_id: str) -> bool:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT 1 FROM signing_certificates WHERE id = ?", (certificate_id,)
            ).fetchone()
        return row is not None

    def load_signers(self) -> list[tuple[str, x509.Certificate]]:
        """Return (id, certificate) for every stored signing certificate."""
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT id, certificate_pem FROM signing_certificates ORDER BY added"
            ).fetchall()
        signers = []
        for certificate_id, pem in rows:
            try:
                signers.append((certificate_id, x509.load_pem_x509_certificate(pem.encode())))
            except ValueError as error:
                raise StoreError(
                    f"stored signing certificate {certificate_id} cannot be parsed ({error}); add it again "
                    f"with `certposture ca add --id {certificate_id}` after `certposture ca remove {certificate_id}` "
                    "(remove the rules that use it first)"
                ) from None
        return signers

    def remove_signing_certificate(self, certificate_id: str) -> None:
        with self._transaction() as connection:
            if (
                connection.execute(
                    "SELECT 1 FROM signing_certificates WHERE id = ?", (certificate_id,)
                ).fetchone()
                is None
            ):
                raise NotFoundError(
                    f"signing certificate {certificate_id!r} not found; "
                    "list stored ones with `certposture ca list`"
                )
            users = [
                rule["id"]
                for rule in self._rules(connection)
                if rule.get("input", {}).get("certificate_id") == certificate_id
            ]
            if users:
                raise InputError(
                    f"signing certificate {certificate_id} is used by rule(s) {', '.join(users)}; "
                    "remove or change those rules first (`certposture rules remove ID`)"
                )
            connection.execute("DELETE FROM signing_certificates WHERE id = ?", (certificate_id,))
            # Under the write lock, so a process adding the certificate again cannot write its key
            # file first and then lose it here.
            key_path = self.home / "private" / f"{certificate_id}.pem"
            try:
                key_path.unlink(missing_ok=True)
            except OSError as error:
                raise StoreError(f"cannot remove private key file {key_path}: {error.strerror}") from None

    # Rules

    def add_rules(self, rules: list[dict[str, Any]]) -> list[str]:
        """Store validated rules in one transaction; an id already stored rejects the whole batch."""
        with self._transaction() as connection:
            for rule in rules:
                if connection.execute("SELECT 1 FROM rules WHERE id = ?", (rule["id"],)).fetchone():
                    raise InputError(
                        f"rule {rule['id']!r} is already stored; remove it first with "
                        f"`certposture rules remove {rule['id']}` or drop the id to add a copy"
                    )
                connection.execute(
                    "INSERT INTO rules VALUES (?, ?, (SELECT COALESCE(MAX(added), 0) + 1 FROM rules))",
                    (rule["id"], orjson.dumps(rule).decode()),
                )
        return [rule["id"] for rule in rules]

    def list_rules(self) -> list[dict[str, Any]]:
        with self._reading() as connection:
            return self._rules(connection)

    def _rules(self, connection: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = connection.execute("SELECT id, rule FROM rules ORDER BY added").fetchall()
        return [_load_row("rules", row_id, text) for row_id, text in rows]

    def get_rule(self, rule_id: str) -> dict[str, Any]:
        with self._reading() as connection:
            row = connection.execute("SELECT rule FROM rules WHERE id = ?", (rule_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"rule {rule_id!r} not found; list stored rules with `certposture rules list`"
            )
        return _load_row("rules", rule_id, row[0])

    def remove_rule(self, rule_id: str) -> None:
        with self._transaction() as connection:
            if connection.execute("DELETE FROM rules WHERE id = ?", (rule_id,)).rowcount == 0:
                raise NotFoundError(
                    f"rule {rule_id!r} not found; list stored rules with `certposture rules list`"
                )

    # Posture log

    def has_posture_log(self) -> bool:
        """False only for a read-only store written by a certposture without the posture log."""
        with self._reading() as connection:
            row = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'posture_log'"
            ).fetchone()
        return row is not None

    def append_posture_log(self, rows: Sequence[PostureLogRow]) -> int:
        """Insert posture-log rows, then delete the oldest beyond the retention; return how many were deleted."""
        self._require_writable("the posture log cannot be written")
        with self._transaction() as connection:
            connection.executemany(
                "INSERT INTO posture_log (timestamp_us, rule_id, device_name, passed, record) "
                "VALUES (?, ?, ?, ?, ?)",
                [(row.timestamp_us, row.rule_id, row.device_name, row.passed, row.record) for row in rows],
            )
            return _prune_posture_log(connection, self._retention(connection))

    def posture_log_retention(self) -> int:
        if not self.has_posture_log():
            return DEFAULT_POSTURE_LOG_RETENTION
        with self._reading() as connection:
            return self._retention(connection)

    def set_posture_log_retention(self, maximum: int) -> int:
        """Store the maximum number of posture-log records and prune to it; return how many were deleted."""
        if maximum < 0:
            raise InputError(f"--retention {maximum} is negative; give a number of records, 0 or more")
        self._require_writable("the posture log retention cannot be changed")
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO settings VALUES ('posture_log_retention', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(maximum),),
            )
            return _prune_posture_log(connection, maximum)

    def select_posture_log(
        self, *, rule_id: str | None, device_name: str | None, since_us: int | None, failed_only: bool
    ) -> list[dict[str, Any]]:
        """Return the matching records, oldest evaluation time first; ties keep insertion order."""
        if not self.has_posture_log():
            return []
        conditions = []
        parameters: list[Any] = []
        if rule_id is not None:
            conditions.append("rule_id = ?")
            parameters.append(rule_id)
        if device_name is not None:
            # NOCASE folds the ASCII letters only, as the policies compare host names.
            conditions.append("device_name = ? COLLATE NOCASE")
            parameters.append(device_name)
        if since_us is not None:
            conditions.append("timestamp_us >= ?")
            parameters.append(since_us)
        if failed_only:
            conditions.append("passed = 0")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._reading() as connection:
            rows = connection.execute(
                f"SELECT seq, record FROM posture_log {where} ORDER BY timestamp_us, seq", parameters
            ).fetchall()
        return [_load_log_record(seq, text) for seq, text in rows]

    # Challenges

    def add_challenge(self, nonce: str, issued_us: int, expires_us: int, forget_before_us: int) -> None:
        """Store an issued nonce with its expiry (microseconds since the epoch).

        Challenges that expired before ``forget_before_us`` are deleted in the
        same transaction, so the table does not grow without bound.
        """
        self._require_writable("no challenge can be issued")
        with self._transaction() as connection:
            connection.execute("DELETE FROM challenges WHERE expires_us < ?", (forget_before_us,))
            connection.execute(
                "INSERT INTO challenges (nonce, issued_us, expires_us) VALUES (?, ?, ?)",
                (nonce, issued_us, expires_us),
            )

    def challenge_expiry(self, nonce: str) -> int | None:
        """Return when an issued nonce expires (microseconds since the epoch), or None when it was never issued."""
        with self._reading() as connection:
            exists = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'challenges'"
            ).fetchone()
            if exists is None:
                return None
            row = connection.execute("SELECT expires_us FROM challenges WHERE nonce = ?", (nonce,)).fetchone()
        if row is None:
            return None
        if type(row[0]) is not int:
            raise StoreError(
                f"challenge {nonce} has expiry {row[0]!r}, not a time, so the store file is damaged; "
                "issue a new one with `certposture challenge`"
            )
        return int(row[0])

    def _retention(self, connection: sqlite3.Connection) -> int:
        row = connection.execute("SELECT value FROM settings WHERE name = 'posture_log_retention'").fetchone()
        if row is None:
            return DEFAULT_POSTURE_LOG_RETENTION
        # isascii: str.isdigit also accepts digits such as "²" that int() rejects.
        if not (str(row[0]).isascii() and str(row[0]).isdigit()):
            raise StoreError(
                f"store setting posture_log_retention is {row[0]!r}, not a count, so the store file is damaged; "
                "set it again with `certposture logs --retention N`"
            )
        return int(row[0])

    def _require_writable(self, consequence: str) -> None:
        if self.read_only:
            raise StoreError(f"store {self.home / DATABASE_NAME} is read-only, so {consequence}")


def _make_private_directory(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700. Existing folders keep their modes.

    The mode is given to mkdir, and the umask can only remove bits from it.
    Parents are private too, because the XDG Base Directory Specification
    says that missing data directories should be created with mode 0700.
    """
    missing = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        # Another process may create the same folder at the same moment.
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


def _create_private_file(path: Path) -> None:
    """Create the empty database file with mode 0600 unless it exists. SQLite would create it with 0644."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        if path.is_file():
            return
        raise
    os.close(descriptor)


def _writable(path: Path) -> bool:
    """Return whether this user may write the database file and create its journal beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _create_schema(connection: sqlite3.Connection) -> None:
    """Create the tables of a new store, or those a version-1 store lacks, and set the schema version."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created the schema while this one waited for the lock.
        if connection.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise


def _roll_back(connection: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (a full disk, an I/O error), and ROLLBACK would then fail.
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _describe(error: sqlite3.Error) -> str:
    if "database is locked" in str(error):
        return (
            f"another process held the store's lock for more than {BUSY_TIMEOUT_SECONDS:g} s; "
            "retry when it has finished"
        )
    return str(error)


def _find_by_fingerprint(connection: sqlite3.Connection, fingerprint: str) -> dict[str, Any] | None:
    row = connection.execute(
        "SELECT id, record FROM signing_certificates WHERE fingerprint_sha256 = ?", (fingerprint,)
    ).fetchone()
    return _load_row("signing_certificates", row[0], row[1]) if row else None


@dataclass(frozen=True)
class PostureLogRow:
    """One posture-log record with the columns that queries filter on."""

    timestamp_us: int
    rule_id: str
    device_name: str | None
    passed: bool
    record: str


def _prune_posture_log(connection: sqlite3.Connection, maximum: int) -> int:
    """Delete the records beyond ``maximum``, oldest evaluation time first."""
    count = connection.execute("SELECT COUNT(*) FROM posture_log").fetchone()[0]
    excess = int(count) - maximum
    if excess <= 0:
        return 0
    connection.execute(
        "DELETE FROM posture_log WHERE seq IN "
        "(SELECT seq FROM posture_log ORDER BY timestamp_us, seq LIMIT ?)",
        (excess,),
    )
    return excess


def _load_log_record(seq: int, text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise _damaged("posture_log", str(seq), "is not a JSON object")
    return value


def _certificate_record(
    certificate: x509.Certificate, certificate_id: str, name: str | None, fingerprint: str
) -> dict[str, Any]:
    subject = certificate.subject.rfc4514_string()
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    default_name = str(common_names[0].value) if common_names else subject
    return {
        "id": certificate_id,
        "name": name or default_name,
        "issuer": certificate.issuer.rfc4514_string(),
        "subject": subject,
        "serial_number": format(certificate.serial_number, "X"),
        "signature_algorithm": _signature_algorithm_name(certificate),
        "expires_on": format_utc(certificate.not_valid_after_utc),
        "uploaded_on": format_utc(datetime.now(UTC)),
        "fingerprint_sha256": fingerprint,
        "private_key_stored": False,
    }


def _signature_algorithm_name(certificate: x509.Certificate) -> str:
    oid = certificate.signature_algorithm_oid
    # cryptography exposes the OpenSSL-style name only through ``_name``; fall back to the dotted OID.
    name = getattr(oid, "_name", None)
    return name if isinstance(name, str) and name != "Unknown OID" else oid.dotted_string


def _load_row(table: str, row_id: str, text: str) -> dict[str, Any]:
    """Parse one stored JSON document and check the fields every reader relies on."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise _damaged(table, row_id, "is not a JSON object")
    if value.get("id") != row_id:
        raise _damaged(table, row_id, f"has id {value.get('id')!r}, not its row id")
    if table == "rules" and not isinstance(value.get("input"), dict):
        raise _damaged(table, row_id, "has no input object")
    return value


def _damaged(table: str, row_id: str, problem: str) -> StoreError:
    return StoreError(
        f"store row {row_id!r} in table {table} {problem}, so the store file is damaged; "
        "remove the row or restore the store from a backup"
    )
