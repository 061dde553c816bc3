"""File modes of the store: what certposture creates is private to its owner, whatever the umask."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from certposture.cli import main
from certposture.store import DATABASE_NAME, Store
from tests.certgen import make_ca, make_leaf, write_pem


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fill_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path) -> str:
    """Store a CA with its key and a rule, and check once, so that every kind of file exists."""
    ca = make_ca("Permissions CA")
    leaf = make_leaf(ca, "device")
    bundle = write_pem(tmp_path / "bundle.pem", ca.cert_pem(), ca.key_pem())
    code, out, err = run(capsys, home, "ca", "add", "--keep-private-key", str(bundle))
    assert code == 0, err
    ca_id = str(json.loads(out)["id"])
    cert_path, key_path = leaf.write_cert(tmp_path / "leaf.pem"), leaf.write_key(tmp_path / "leaf.key")
    rule = {
        "name": "Permissions",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": [str(cert_path), str(key_path)]},
        },
    }
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    code, _, err = run(capsys, home, "rules", "add", str(tmp_path / "rule.json"))
    assert code == 0, err
    code, _, err = run(capsys, home, "check", "--hostname", "host", "--serial-number", "S1")
    assert code == 0, err
    return ca_id


def test_new_store_is_private(tmp_path: Path, capsys: pytest.CaptureFixture[str], umask: int) -> None:
    home = tmp_path / "missing" / "parent" / "home"

    ca_id = fill_store(tmp_path, capsys, home)

    for directory in (tmp_path / "missing", tmp_path / "missing" / "parent", home, home / "private"):
        assert mode(directory) == 0o700, directory
    assert mode(home / DATABASE_NAME) == 0o600
    assert mode(home / "private" / f"{ca_id}.pem") == 0o600
    # The rollback journal exists only during a write, so nothing else is left in the home.
    assert sorted(path.name for path in home.iterdir()) == [DATABASE_NAME, "private"]


def test_store_keeps_rollback_journal(tmp_path: Path) -> None:
    """WAL would need a -shm file that users of a read-only store cannot create."""
    store = Store(tmp_path / "home")
    assert store.list_rules() == []
    store.close()

    connection = sqlite3.connect(tmp_path / "home" / DATABASE_NAME)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        connection.close()


def test_journal_file_is_private(tmp_path: Path, umask: int) -> None:
    """SQLite gives the journal the database file's mode, so it is 0600 as well."""
    home = tmp_path / "home"
    Store(home).list_rules()
    connection = sqlite3.connect(home / DATABASE_NAME, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO settings VALUES ('probe', '1')")
        journal = home / f"{DATABASE_NAME}-journal"
        assert journal.is_file()
        assert mode(journal) == 0o600
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def test_existing_store_keeps_its_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store an administrator opened to other users on purpose stays as it is."""
    home = tmp_path / "home"
    fill_store(tmp_path, capsys, home)
    home.chmod(0o755)
    (home / DATABASE_NAME).chmod(0o644)

    code, _, err = run(capsys, home, "check", "--hostname", "host", "--serial-number", "S1")

    assert code == 0, err
    assert mode(home) == 0o755
    assert mode(home / DATABASE_NAME) == 0o644


def test_existing_home_keeps_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str], umask: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o750)

    code, _, err = run(capsys, home, "rules", "list")

    assert code == 0, err
    assert mode(home) == 0o750
    assert mode(home / DATABASE_NAME) == 0o600
