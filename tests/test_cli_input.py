"""Hostile and mistaken CLI input: special files, size limits, empty values, strict facts, output files."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from certposture import engine
from certposture.cli import main
from certposture.errors import PolicyError
from collector.facts import format_utc
from tests.certgen import CLIENT_AUTH, make_ca, make_leaf


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Setup:
    """A store with one CA and one PEM rule whose certificate and key pass."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], **leaf_options: Any) -> None:
        self.home = tmp_path / "home"
        self.capsys = capsys
        ca = make_ca("Device CA")
        ca.write_cert(tmp_path / "ca.pem")
        code, out, err = run(capsys, self.home, "ca", "add", str(tmp_path / "ca.pem"))
        assert code == 0, err
        self.ca_id = json.loads(out)["id"]
        self.leaf = make_leaf(ca, "device", eku=[CLIENT_AUTH], key_type="rsa", **leaf_options)
        self.cert_path = str(self.leaf.write_cert(tmp_path / "client.pem"))
        self.key_path = str(self.leaf.write_key(tmp_path / "client.key"))
        self.tmp_path = tmp_path
        self.rule_ids = [self.add_rule("PEM rule")]

    def add_rule(self, name: str) -> str:
        rule = {
            "name": name,
            "type": "client_certificate_v2",
            "input": {
                "certificate_id": self.ca_id,
                "operating_system": "linux",
                "check_private_key": True,
                "locations": {"paths": [self.cert_path, self.key_path]},
            },
        }
        (self.tmp_path / "rule.json").write_text(json.dumps(rule))
        code, out, err = run(self.capsys, self.home, "rules", "add", str(self.tmp_path / "rule.json"))
        assert code == 0, err
        return out.strip()

    def facts(self) -> dict[str, Any]:
        code, out, err = run(
            self.capsys, self.home, "collect", "--path", self.cert_path, "--path", self.key_path,
            "--hostname", "h", "--serial-number", "s",
        )  # fmt: skip
        assert code == 0, err
        return dict(json.loads(out))

    def evaluate(self, facts: Any, *args: str) -> tuple[int, dict[str, Any], str]:
        path = self.tmp_path / "facts.json"
        path.write_text(json.dumps(facts))
        code, out, err = run(self.capsys, self.home, "evaluate", str(path), *args)
        return code, json.loads(out) if out else {}, err


@pytest.fixture
def setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Setup:
    return Setup(tmp_path, capsys)


# Input files


@pytest.mark.parametrize("command", [["ca", "add"], ["rules", "add"], ["rules", "validate"]])
def test_device_file_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, _, err = run(capsys, tmp_path / "home", *command, "/dev/zero")
    assert code == 2
    assert "/dev/zero is not a regular file" in err


def test_fifo_rejected_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(fifo))
    assert code == 2
    assert "is not a regular file" in err


def test_oversized_input_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    large = tmp_path / "large.json"
    with large.open("wb") as handle:
        handle.truncate(3 * 1024 * 1024 * 1024)
    code, _, err = run(capsys, tmp_path / "home", "rules", "validate", str(large))
    assert code == 2
    assert "larger than 1048576" in err


def test_directory_input_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path))
    assert code == 2
    assert "is a directory" in err


# Empty option values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect", "--path", ""], "--path is empty"),
        (["collect", "--nssdb", ""], "--nssdb is empty"),
        (["collect", "--nssdb", "sql:"], "--nssdb is empty"),
        (["collect", "--path", "/nonexistent", "-o", ""], "output file name is empty"),
        (["collect", "--hostname", "", "--path", "/nonexistent"], "hostname override is empty"),
    ],
)
def test_empty_values_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, tmp_path / "home", *args)
    assert code == 2
    assert out == ""
    assert message in err


def test_empty_home_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", "", "ca", "list"]) == 2
    assert "--home is empty" in capsys.readouterr().err


def test_home_that_is_a_file_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home.json"
    home.write_text("{}")

    assert main(["--home", str(home), "rules", "list"]) == 3
    assert f"store home {home} exists and is not a directory" in capsys.readouterr().err


def test_bundle_empty_output_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path / "home"), "bundle", "-o", " "]) == 2
    assert "--output is empty" in capsys.readouterr().err


def test_empty_name_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_ca("Device CA").write_cert(tmp_path / "ca.pem")
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", "--name", " ", str(tmp_path / "ca.pem"))
    assert code == 2
    assert "--name is empty" in err


# Evaluation time


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is not an RFC 3339 time"),
        ("2026-W49-5T10:00Z", "is not an RFC 3339 time"),
        ("2026-12-04T10:00:00", "has no timezone"),
        ("2026-13-01T00:00:00Z", "is not a valid date and time"),
        ("9999-12-31T23:59:59Z", "outside the years 1678 to 2261"),
        ("0001-01-01T00:00:00Z", "outside the years 1678 to 2261"),
    ],
)
def test_bad_at_rejected(setup: Setup, value: str, message: str) -> None:
    code, document, err = setup.evaluate(setup.facts(), "--at", value)
    assert code == 2
    assert document == {}
    assert message in err


def test_at_with_offset_accepted(setup: Setup) -> None:
    code, document, _ = setup.evaluate(setup.facts(), "--at", "2026-12-04T21:00:00+02:00")
    assert document["evaluated_at"] == "2026-12-04T19:00:00Z"
    assert code in (0, 1)


# Certificates beyond the nanosecond range of Rego time functions


def test_certificate_valid_until_9999_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = Setup(tmp_path, capsys, not_after=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    facts = setup.facts()
    assert facts["certificates"][0]["not_after"] == "9999-12-31T23:59:59Z"
    code, document, err = setup.evaluate(facts)
    assert code == 0, err
    assert document["results"][0]["status"] == "passed"


# Strict facts


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f["certificates"][0]["private_key"].update(present="yes"),
        lambda f: f["certificates"][0]["private_key"].update(present=True, status="missing"),
        lambda f: f.pop("schema_version"),
        lambda f: f.update(schema_version=2),
        lambda f: f["certificates"][0].update(signed_by="all"),
        lambda f: f["certificates"][0].update(trusted=True),
        lambda f: f.update(schema_version=True),
        lambda f: f["certificates"][0]["public_key"].update(size=2**64),
        lambda f: f["certificates"][0]["public_key"].update(size=-5),
        lambda f: f["certificates"][0].update(fingerprint_sha256=""),
    ],
)
def test_tampered_facts_fail_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any) -> None:
    setup = Setup(tmp_path, capsys)
    facts = setup.facts()
    change(facts)
    code, document, err = setup.evaluate(facts)
    assert code == 3
    assert [result["status"] for result in document["results"]] == ["error"]
    assert document["results"][0]["passed"] is False
    assert "facts are invalid" in err


@pytest.mark.parametrize("content", [b"", b"[]", b"\xff\xfe"])
def test_unusable_facts_fail_closed(setup: Setup, content: bytes) -> None:
    path = setup.tmp_path / "facts.json"
    path.write_bytes(content)
    code, out, err = run(setup.capsys, setup.home, "evaluate", str(path))
    assert code == 3
    assert json.loads(out)["results"][0]["status"] == "error"
    assert err.startswith("error: ")


def test_facts_directory_fails_closed(setup: Setup) -> None:
    code, out, err = run(setup.capsys, setup.home, "evaluate", str(setup.tmp_path))
    assert code == 3
    assert json.loads(out)["results"][0]["status"] == "error"
    assert "is a directory" in err


# One rule failing to evaluate


def test_policy_error_isolated_to_rule(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.add_rule("boom")
    original = engine.Evaluator.evaluate

    def failing_for_boom(evaluator: engine.Evaluator, facts: Any, *args: Any) -> list[dict[str, Any]]:
        if any(rule["name"] == "boom" for rule in evaluator.config["rules"]):
            raise PolicyError("policy evaluation failed: simulated")
        return original(evaluator, facts, *args)

    monkeypatch.setattr(engine.Evaluator, "evaluate", failing_for_boom)
    code, document, err = setup.evaluate(setup.facts())
    assert code == 3
    assert [result["status"] for result in document["results"]] == ["passed", "error"]
    assert document["results"][1]["reasons"][0]["code"] == "evaluation_error"
    assert err.count("simulated") == 1


def test_result_keys_in_reading_order(setup: Setup) -> None:
    _, document, _ = setup.evaluate(setup.facts())
    result = document["results"][0]
    assert list(result)[:5] == ["rule_id", "rule_name", "type", "status", "passed"]
    assert list(result["candidates"][0])[:2] == ["fingerprint_sha256", "subject"]


# Output files


def test_output_through_symlink(setup: Setup) -> None:
    target = setup.tmp_path / "target.json"
    target.write_text("old")
    link = setup.tmp_path / "link.json"
    link.symlink_to(target)
    code, _, _ = run(setup.capsys, setup.home, "collect", "--path", setup.cert_path, "-o", str(link))
    assert code == 0
    assert link.is_symlink()
    assert json.loads(target.read_text())["schema_version"] == 1


def test_output_to_fifo_rejected(setup: Setup) -> None:
    fifo = setup.tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run(setup.capsys, setup.home, "collect", "--path", setup.cert_path, "-o", str(fifo))
    assert code == 2
    assert "is not a regular file" in err
    assert fifo.exists()
    assert not fifo.is_file()


def test_output_to_directory_leaves_nothing(setup: Setup) -> None:
    folder = setup.tmp_path / "out"
    folder.mkdir()
    code, _, err = run(setup.capsys, setup.home, "collect", "--path", setup.cert_path, "-o", str(folder))
    assert code == 2
    assert "is not a regular file" in err
    assert list(setup.tmp_path.glob(".out.*")) == []


# Store


def test_keep_key_for_stored_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = make_ca("Device CA")
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + ca.key_pem())
    _, first, _ = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "bundle.pem"))
    assert json.loads(first)["private_key_stored"] is False
    code, second, _ = run(
        capsys, tmp_path / "home", "ca", "add", "--keep-private-key", str(tmp_path / "bundle.pem")
    )
    assert code == 0
    record = json.loads(second)
    assert record["private_key_stored"] is True
    assert (tmp_path / "home" / "private" / f"{record['id']}.pem").is_file()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop privileges"
)
def test_read_only_store_readable(setup: Setup) -> None:
    """A user who may read but not write the store can still list and evaluate."""
    # pytest's temporary folders are private to root, so the unprivileged user works in a shared copy.
    shared = Path(tempfile.mkdtemp(prefix="certposture-ro-"))
    try:
        _check_read_only_store(setup, shared)
    finally:
        shutil.rmtree(shared)


def _check_read_only_store(setup: Setup, shared: Path) -> None:
    facts = setup.facts()
    shutil.copytree(setup.home, shared / "home")
    home = shared / "home"
    facts_path = shared / "facts.json"
    facts_path.write_text(json.dumps(facts))
    for path in [shared, home]:
        path.chmod(0o755)
    for path in [home / "certposture.db", facts_path]:
        path.chmod(0o644)
    root = Path(__file__).resolve().parent.parent
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    environment = {**os.environ, "PYTHONPATH": str(root), "HOME": "/nonexistent"}

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*drop, sys.executable, "-m", "certposture", "--home", str(home), *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=environment, cwd="/", timeout=60, check=False
        )

    listed = as_nobody("rules", "list")
    if "Permission denied" in listed.stderr and "certposture" not in listed.stderr:
        pytest.skip(f"the unprivileged user cannot run this interpreter: {listed.stderr.strip()}")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["id"] == setup.rule_ids[0]

    evaluated = as_nobody("evaluate", str(facts_path))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["results"][0]["status"] == "passed"

    removed = as_nobody("rules", "remove", setup.rule_ids[0])
    assert removed.returncode == 3
    assert "cannot write store" in removed.stderr


# Table output


def test_table_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = make_ca("Device CA")
    leaf = make_leaf(ca, "\x1b[2J\x1b[32mPASSED", eku=[CLIENT_AUTH], key_type="rsa")
    leaf.write_cert(tmp_path / "client.pem")
    ca.write_cert(tmp_path / "ca.pem")
    home = tmp_path / "home"
    ca_id = json.loads(run(capsys, home, "ca", "add", str(tmp_path / "ca.pem"))[1])["id"]
    rule = {
        "name": "r",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": [str(tmp_path / "client.pem")]},
        },
    }
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    assert run(capsys, home, "rules", "add", str(tmp_path / "rule.json"))[0] == 0
    code, out, _ = run(
        capsys, home, "check", "--hostname", "h\nx", "--serial-number", "s", "--format", "table"
    )
    assert code == 1
    assert "\x1b" not in out
    assert "\\x1b[2J" in out
    assert "h\\nx" in out


# Values that JSON or RFC 3339 cannot carry as they are


def test_format_utc_pads_year() -> None:
    """cryptography's builder stops at 1950, but parsed certificates may carry any GeneralizedTime year."""
    assert format_utc(dt.datetime(1, 1, 1, tzinfo=dt.UTC)) == "0001-01-01T00:00:00Z"
    assert format_utc(dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)) == "0999-12-31T23:59:59Z"


def test_non_utf8_file_name_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = Setup(tmp_path, capsys)
    folder = tmp_path / "certs"
    folder.mkdir()
    shutil.copy(setup.cert_path, folder / "good.pem")
    odd = os.path.join(os.fsencode(folder), b"a\xffb.pem")
    shutil.copy(setup.cert_path, odd)

    code, out, err = run(capsys, setup.home, "collect", "--path", str(folder), "--hostname", "h")
    assert code == 0, err
    facts = json.loads(out)
    assert [Path(cert["source"]["location"]).name for cert in facts["certificates"]] == ["good.pem"]
    (error,) = [error for error in facts["errors"] if error["source"] == "pem"]
    assert error["location"] == f"{folder}/a\\xffb.pem"
    assert "not valid UTF-8" in error["message"]


def test_non_utf8_argument_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argument = os.fsdecode(b"host\xff")
    code = main(["--home", str(tmp_path / "home"), "collect", "--hostname", argument])
    err = capsys.readouterr().err
    assert code == 2
    assert "'host\\xff'" in err
    assert "not valid UTF-8" in err


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("rules", "rule", "{not json", "is not a JSON object"),
        ("rules", "rule", '{"name": "no id", "input": {}}', "has id None, not its row id"),
        ("rules", "rule", None, "has no input object"),
        ("signing_certificates", "record", "{}", "has id None, not its row id"),
    ],
)
def test_damaged_store_row_reported(
    setup: Setup, table: str, column: str, value: str | None, message: str
) -> None:
    import sqlite3

    connection = sqlite3.connect(setup.home / "certposture.db")
    if value is None:
        (rule_text,) = connection.execute("SELECT rule FROM rules").fetchone()
        value = json.dumps({**json.loads(rule_text), "input": "linux"})
    with connection:
        connection.execute(f"UPDATE {table} SET {column} = ?", (value,))
    connection.close()

    listing = ["rules", "list"] if table == "rules" else ["ca", "list"]
    for args in (listing, ["check", "--hostname", "h", "--serial-number", "s"]):
        code, _, err = run(setup.capsys, setup.home, *args)
        assert code == 3, args
        assert message in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_empty_rule_option_rejected(setup: Setup) -> None:
    code, _, err = run(setup.capsys, setup.home, "check", "--rule", "", "--hostname", "h")
    assert code == 2
    assert "--rule is empty" in err


def test_output_keeps_file_mode(setup: Setup) -> None:
    target = setup.tmp_path / "facts.json"
    target.write_text("{}")
    target.chmod(0o640)
    assert run(setup.capsys, setup.home, "collect", "--path", setup.cert_path, "-o", str(target))[0] == 0
    assert target.stat().st_mode & 0o777 == 0o640
    for umask, expected in ((0o022, 0o644), (0o077, 0o600)):
        new = setup.tmp_path / f"new-{umask:o}.json"
        previous = os.umask(umask)
        try:
            assert run(setup.capsys, setup.home, "collect", "--path", setup.cert_path, "-o", str(new))[0] == 0
        finally:
            os.umask(previous)
        assert new.stat().st_mode & 0o777 == expected


def test_trusted_certificate_gets_conversion_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = make_ca("Device CA").cert_pem().replace(b"CERTIFICATE-----", b"TRUSTED CERTIFICATE-----")
    (tmp_path / "trusted.pem").write_bytes(pem)
    code, _, err = run(capsys, tmp_path / "home", "ca", "add", str(tmp_path / "trusted.pem"))
    assert code == 2
    assert "openssl x509 -in FILE -out ca.pem" in err
