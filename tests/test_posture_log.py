"""Posture log (`evaluate`, `check`, `logs`) and the OPA decision log (`--decision-log`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from certposture import __version__
from certposture.decisionlog import format_rfc3339_nano
from certposture.errors import StoreError
from certposture.store import Store
from tests.certgen import CLIENT_AUTH, CertKey, make_leaf
from tests.test_end_to_end import FULL_RULE, HOSTNAME, SERIAL, Cli, ca, cli, good_leaf, pem_pair

__all__ = ["ca", "cli"]


class LogSetup:
    """A store with a passing rule and a failing rule (it requires a SAN the certificate lacks)."""

    def __init__(self, cli: Cli, ca: CertKey) -> None:
        self.cli = cli
        self.leaf = good_leaf(ca)
        self.cert_path, self.key_path = pem_pair(cli, self.leaf)
        ca_id = cli.add_ca(ca)
        locations = {"paths": [self.cert_path, self.key_path]}
        self.passing = cli.add_rule(ca_id, name="Passing", **FULL_RULE, locations=locations)
        self.failing = cli.add_rule(
            ca_id, name="Failing", subject_alternative_names=["other.example"], locations=locations
        )

    def facts(self, hostname: str = HOSTNAME) -> Path:
        path = self.cli.work / f"facts-{hostname}.json"
        code, _, err = self.cli.run(
            "collect", "--path", self.cert_path, "--path", self.key_path,
            "--hostname", hostname, "--serial-number", SERIAL, "-o", str(path),
        )  # fmt: skip
        assert code == 0, err
        return path

    def evaluate(self, *args: str, hostname: str = HOSTNAME) -> tuple[int, str, str]:
        return self.cli.run("evaluate", str(self.facts(hostname)), *args)

    def logs(self, *args: str) -> list[dict[str, Any]]:
        code, out, err = self.cli.run("logs", *args)
        assert code == 0, err
        return list(json.loads(out))


@pytest.fixture
def setup(cli: Cli, ca: CertKey) -> LogSetup:
    return LogSetup(cli, ca)


def hours_ago(hours: float) -> str:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# Within the validity of the test certificates, which starts an hour before each is made.
AT = hours_ago(1 / 60)


# Records written by evaluate and check


def test_evaluate_records_every_field(setup: LogSetup) -> None:
    code, _, err = setup.evaluate("--at", AT)
    assert code == 1, err
    records = setup.logs()
    assert [record["rule_id"] for record in records] == [setup.passing, setup.failing]
    passed, failed = records
    assert list(passed) == [
        "timestamp", "rule_id", "rule_name", "rule_type", "passed", "expected", "received",
        "device_name", "serial_number", "os_version", "client_version",
    ]  # fmt: skip
    assert passed["timestamp"] == AT
    assert passed["rule_name"] == "Passing"
    assert passed["rule_type"] == "client_certificate_v2"
    assert passed["passed"] is True
    assert passed["expected"]["cn"] == "${serial_number}_mycompany"
    assert passed["expected"]["locations"] == {"paths": [setup.cert_path, setup.key_path]}
    assert passed["received"]["status"] == "passed"
    assert passed["received"]["matched_certificates"] == [
        {"fingerprint_sha256": setup.leaf.fingerprint, "subject": f"CN={SERIAL}_mycompany",
         "location": setup.cert_path},
    ]  # fmt: skip
    assert passed["received"]["candidates"] == []
    assert passed["device_name"] == HOSTNAME
    assert passed["serial_number"] == SERIAL
    assert isinstance(passed["os_version"], str)
    assert passed["client_version"] == f"certposture/{__version__} collector/{__version__}"

    assert failed["passed"] is False
    assert failed["received"]["status"] == "failed"
    assert failed["received"]["matched_certificates"] == []
    assert failed["received"]["reasons"] == ["no_matching_certificate"]
    (candidate,) = failed["received"]["candidates"]
    assert candidate["fingerprint_sha256"] == setup.leaf.fingerprint
    assert candidate["reasons"] == ["san_mismatch"]


def test_check_records_results(setup: LogSetup) -> None:
    code, _, err = setup.cli.run("check", "--hostname", HOSTNAME, "--serial-number", SERIAL, "--at", AT)
    assert code == 1, err
    records = setup.logs()
    assert [record["device_name"] for record in records] == [HOSTNAME, HOSTNAME]
    assert [record["serial_number"] for record in records] == [SERIAL, SERIAL]
    assert [record["passed"] for record in records] == [True, False]
    assert records[0]["timestamp"] == AT


def test_unreadable_facts_recorded_as_error(setup: LogSetup) -> None:
    broken = setup.cli.work / "broken.json"
    broken.write_text("{")
    assert setup.cli.run("evaluate", str(broken))[0] == 3
    records = setup.logs()
    assert [record["received"]["status"] for record in records] == ["error", "error"]
    assert records[0]["device_name"] is None
    assert records[0]["client_version"] == f"certposture/{__version__} collector/unknown"


# Queries


def test_filter_by_rule(setup: LogSetup) -> None:
    setup.evaluate()
    records = setup.logs("--rule", setup.failing)
    assert [record["rule_id"] for record in records] == [setup.failing]


def test_filter_by_device_ignores_case(setup: LogSetup) -> None:
    setup.evaluate(hostname="laptop-one")
    setup.evaluate(hostname="laptop-two")
    records = setup.logs("--device", "LAPTOP-TWO")
    assert {record["device_name"] for record in records} == {"laptop-two"}
    assert len(records) == 2


def test_filter_by_since(setup: LogSetup) -> None:
    setup.evaluate("--at", hours_ago(72))
    setup.evaluate("--at", hours_ago(2))
    recent = setup.logs("--since", "1d")
    assert len(recent) == 2
    assert {record["timestamp"] for record in recent} == {recent[0]["timestamp"]}
    assert len(setup.logs("--since", "30m")) == 0
    assert len(setup.logs("--since", "4d")) == 4
    assert len(setup.logs("--since", "999999999d")) == 4


def test_filter_by_failed(setup: LogSetup) -> None:
    setup.evaluate()
    records = setup.logs("--failed")
    assert [record["rule_id"] for record in records] == [setup.failing]


def test_filters_combine(setup: LogSetup) -> None:
    setup.evaluate("--at", hours_ago(72), hostname="old-host")
    setup.evaluate("--at", hours_ago(1), hostname="new-host")
    records = setup.logs("--failed", "--device", "new-host", "--since", "12h", "--rule", setup.failing)
    assert len(records) == 1
    assert records[0]["device_name"] == "new-host"


def test_records_ordered_oldest_first(setup: LogSetup) -> None:
    setup.evaluate("--at", hours_ago(1))
    setup.evaluate("--at", hours_ago(5))
    timestamps = [record["timestamp"] for record in setup.logs()]
    assert timestamps == sorted(timestamps)
    assert timestamps[0] == timestamps[1] != timestamps[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "12"], "is not a duration"),
        (["--since", "1w"], "is not a duration"),
        (["--since", "-1h"], "is not a duration"),
        (["--since", "9999999999999d"], "is too long"),
        (["--format", "csv"], "is not a format"),
        (["--rule", ""], "--rule is empty"),
        (["--device", " "], "--device is empty"),
    ],
)
def test_bad_logs_options_rejected(setup: LogSetup, args: list[str], message: str) -> None:
    code, out, err = setup.cli.run("logs", *args)
    assert code == 2
    assert out == ""
    assert message in err


# Output formats


def test_jsonl_format(setup: LogSetup) -> None:
    setup.evaluate()
    code, out, _ = setup.cli.run("logs", "--format", "jsonl")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["rule_id"] for line in lines] == [setup.passing, setup.failing]


def test_table_format(setup: LogSetup) -> None:
    setup.evaluate("--at", AT)
    code, out, _ = setup.cli.run("logs", "--format", "table")
    assert code == 0
    header, first, second, summary = out.splitlines()
    assert header.split() == ["TIMESTAMP", "RULE_ID", "RULE_NAME", "STATUS", "DEVICE_NAME", "SERIAL_NUMBER"]
    assert first.split() == [AT, setup.passing, "Passing", "passed", HOSTNAME, SERIAL]
    assert second.split()[3] == "failed"
    assert summary == "2 record(s)"


def test_empty_log_formats(cli: Cli) -> None:
    assert cli.run("logs") == (0, "[]\n", "")
    assert cli.run("logs", "--format", "jsonl") == (0, "", "")
    code, out, _ = cli.run("logs", "--format", "table")
    assert code == 0
    assert out.splitlines()[-1] == "0 record(s)"


# Retention


def test_retention_prunes_now_and_after_each_append(setup: LogSetup) -> None:
    five, four, three, one = (hours_ago(hours) for hours in (5, 4, 3, 1))
    for at in (five, four, three):
        setup.evaluate("--at", at)
    code, _, err = setup.cli.run("logs", "--retention", "3")
    assert code == 0
    assert "keeps at most 3 record(s); deleted 3" in err
    kept = setup.logs()
    assert [record["timestamp"] for record in kept] == [four, three, three]

    setup.evaluate("--at", one)
    kept = setup.logs()
    assert [record["timestamp"] for record in kept] == [three, one, one]


def test_retention_zero_keeps_nothing(setup: LogSetup) -> None:
    assert setup.cli.run("logs", "--retention", "0")[0] == 0
    setup.evaluate()
    assert setup.logs() == []


def test_retention_default(cli: Cli) -> None:
    store = Store(cli.home)
    assert store.posture_log_retention() == 100_000


def test_retention_persists(setup: LogSetup) -> None:
    setup.cli.run("logs", "--retention", "7")
    assert Store(setup.cli.home).posture_log_retention() == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retention", "-1"], "greater than or equal to 0"),
        (["--retention", "5", "--failed"], "--retention sets the log's size and lists nothing"),
        (["--retention", "5", "--rule", "x"], "--retention sets the log's size and lists nothing"),
    ],
)
def test_bad_retention_rejected(cli: Cli, args: list[str], message: str) -> None:
    code, _, err = cli.run("logs", *args)
    assert code == 2
    assert message in err


# Store versions and read-only stores


def test_version_1_store_gets_posture_log(setup: LogSetup) -> None:
    database = setup.cli.home / "certposture.db"
    connection = sqlite3.connect(database)
    connection.executescript("DROP TABLE posture_log; DROP TABLE settings; PRAGMA user_version = 1;")
    connection.close()

    assert setup.evaluate()[0] == 1
    assert len(setup.logs()) == 2
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 3
    connection.close()


def test_read_only_store_evaluates_with_warning(setup: LogSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    facts_path = setup.facts()

    def open_read_only(store: Store) -> sqlite3.Connection:
        # Stands in for a store file the user may read but not write.
        if store._connection is None:
            store._connection = store._connect_read_only(store.home / "certposture.db")
        return store._connection

    monkeypatch.setattr(Store, "_connect", open_read_only)
    code, out, err = setup.cli.run("evaluate", str(facts_path))
    assert code == 1
    assert [result["status"] for result in json.loads(out)["results"]] == ["passed", "failed"]
    (line,) = err.splitlines()
    assert line.startswith("warning: posture log not written: store ")
    assert "is read-only" in line
    assert setup.logs() == []

    code, _, err = setup.cli.run("logs", "--retention", "5")
    assert code == 3
    assert "is read-only" in err


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop privileges"
)
def test_read_only_version_1_store_as_other_user(setup: LogSetup) -> None:
    """An unprivileged user evaluates with a store written by a certposture without the posture log."""
    facts = json.loads(setup.facts().read_text())
    database = setup.cli.home / "certposture.db"
    connection = sqlite3.connect(database)
    connection.executescript("DROP TABLE posture_log; DROP TABLE settings; PRAGMA user_version = 1;")
    connection.close()
    # pytest's temporary folders are private to root, so the unprivileged user works in a shared copy.
    shared = Path(tempfile.mkdtemp(prefix="certposture-ro-"))
    try:
        home = shared / "home"
        shutil.copytree(setup.cli.home, home)
        facts_path = shared / "facts.json"
        facts_path.write_text(json.dumps(facts))
        for folder in (shared, home):
            folder.chmod(0o755)
        for file in (home / "certposture.db", facts_path):
            file.chmod(0o644)
        root = Path(__file__).resolve().parent.parent
        command = [
            "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            sys.executable, "-m", "certposture", "--home", str(home),
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(root), "HOME": "/nonexistent"}

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, *args], capture_output=True, text=True, env=environment, cwd="/", timeout=60,
                check=False,
            )  # fmt: skip

        evaluated = as_nobody("evaluate", str(facts_path))
        if "Permission denied" in evaluated.stderr and "certposture" not in evaluated.stderr:
            pytest.skip(f"the unprivileged user cannot run this interpreter: {evaluated.stderr.strip()}")
        assert evaluated.returncode == 1, evaluated.stderr
        assert [result["status"] for result in json.loads(evaluated.stdout)["results"]] == [
            "passed",
            "failed",
        ]
        (line,) = evaluated.stderr.splitlines()
        assert line.startswith("warning: posture log not written")

        listed = as_nobody("logs")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
    finally:
        shutil.rmtree(shared)


# Decision log


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decision_log_event_fields(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    facts_path = setup.facts()
    facts = json.loads(facts_path.read_text())
    code, out, _ = setup.cli.run("evaluate", str(facts_path), "--at", AT, "--decision-log", str(log))
    assert code == 1
    (event,) = read_events(log)
    assert uuid.UUID(event["decision_id"]).version == 4
    assert event["path"] == "certposture/posture/results"
    assert event["input"] == facts
    assert event["result"] == json.loads(out)["results"]
    assert event["labels"] == {"app": "certposture", "version": __version__}
    assert event["metrics"]["timer_certposture_evaluate_ns"] > 0
    assert "erased" not in event
    assert event["timestamp"].endswith("Z")
    written = dt.datetime.fromisoformat(event["timestamp"][:26] + "+00:00")
    assert abs(dt.datetime.now(dt.UTC) - written) < dt.timedelta(minutes=5)


def test_decision_log_appends(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    log.write_text('{"earlier": true}\n{"cut short"')
    setup.evaluate("--decision-log", str(log))
    setup.cli.run("check", "--hostname", HOSTNAME, "--serial-number", SERIAL, "--decision-log", str(log))
    lines = log.read_text().splitlines()
    assert lines[:2] == ['{"earlier": true}', '{"cut short"']
    events = [json.loads(line) for line in lines[2:]]
    assert len(events) == 2
    assert events[0]["decision_id"] != events[1]["decision_id"]


def test_decision_log_new_file_is_private(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    setup.evaluate("--decision-log", str(log))
    assert log.stat().st_mode & 0o777 == 0o600


def test_mask_removes_and_lists_values(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    setup.evaluate(
        "--decision-log", str(log), "--mask", "/input/device/serial_number",
        "--mask", "/input/certificates/0/subject", "--mask", "/input/no/such/value",
        "--mask", "/result/1/candidates",
    )  # fmt: skip
    (event,) = read_events(log)
    assert event["erased"] == [
        "/input/device/serial_number", "/input/certificates/0/subject", "/result/1/candidates",
    ]  # fmt: skip
    assert "serial_number" not in event["input"]["device"]
    assert event["input"]["device"]["hostname"] == HOSTNAME
    assert "subject" not in event["input"]["certificates"][0]
    assert "candidates" not in event["result"][1]
    assert "candidates" in event["result"][0]


def test_mask_device(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    setup.cli.run(
        "check", "--hostname", HOSTNAME, "--serial-number", SERIAL,
        "--decision-log", str(log), "--mask-device", "--mask", "/input/device/hostname",
    )  # fmt: skip
    (event,) = read_events(log)
    assert event["erased"] == ["/input/device/hostname", "/input/device/serial_number"]
    assert set(event["input"]["device"]) == {"os"}


def test_mask_escaped_key() -> None:
    from certposture.decisionlog import build_event

    results = [{"a/b": 1, "c~d": 2, "keep": 3}]
    event = build_event(None, results, ["/result/0/a~1b", "/result/0/c~0d"])
    assert event["result"] == [{"keep": 3}]
    assert "input" not in event


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mask", "/input/device"], "applies to the decision log only"),
        (["--mask-device"], "applies to the decision log only"),
        (["--decision-log", "LOG", "--mask", "input/device"], "not a JSON pointer under /input or /result"),
        (["--decision-log", "LOG", "--mask", "/data/x"], "not a JSON pointer under /input or /result"),
        (["--decision-log", "LOG", "--mask", "/input/a~2"], "not ~0 or ~1"),
        (["--decision-log", " "], "--decision-log is empty"),
    ],
)
def test_bad_decision_log_options_rejected(setup: LogSetup, args: list[str], message: str) -> None:
    log = setup.cli.work / "decisions.jsonl"
    code, out, err = setup.evaluate(*[str(log) if arg == "LOG" else arg for arg in args])
    assert code == 2
    assert out == ""
    assert message in err
    assert not log.exists()
    assert setup.logs() == []


@pytest.mark.parametrize("target", ["directory", "missing folder"])
def test_unwritable_decision_log_exits_3(setup: LogSetup, target: str) -> None:
    log = setup.cli.work if target == "directory" else setup.cli.work / "missing" / "decisions.jsonl"
    code, out, err = setup.evaluate("--decision-log", str(log))
    assert code == 3
    assert [result["status"] for result in json.loads(out)["results"]] == ["passed", "failed"]
    (line,) = err.splitlines()
    assert line.startswith(f"error: cannot append to decision log {log}")
    assert len(setup.logs()) == 2


def test_decision_log_fifo_rejected(setup: LogSetup) -> None:
    fifo = setup.cli.work / "pipe"
    os.mkfifo(fifo)
    code, _, err = setup.evaluate("--decision-log", str(fifo))
    assert code == 3
    assert "is not a regular file" in err


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (1_764_874_800_000_000_000, "2025-12-04T19:00:00Z"),
        (1_764_874_800_120_000_000, "2025-12-04T19:00:00.12Z"),
        (1_764_874_800_000_000_001, "2025-12-04T19:00:00.000000001Z"),
    ],
)
def test_timestamp_like_go_rfc3339nano(nanoseconds: int, text: str) -> None:
    assert format_rfc3339_nano(nanoseconds) == text


# Private key material


def test_logs_hold_no_private_key(setup: LogSetup) -> None:
    log = setup.cli.work / "decisions.jsonl"
    setup.evaluate("--decision-log", str(log))
    setup.cli.run("check", "--hostname", HOSTNAME, "--serial-number", SERIAL)
    key_lines = setup.leaf.key_pem().decode().splitlines()[1:-1]
    _, listed, _ = setup.cli.run("logs", "--format", "jsonl")
    database = (setup.cli.home / "certposture.db").read_bytes()
    for text in (listed, log.read_text(), database.decode("latin-1")):
        assert "PRIVATE KEY" not in text
        for line in key_lines:
            assert line not in text


def test_not_applicable_counts_as_not_passed(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device", eku=[CLIENT_AUTH], key_type="rsa")
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, operating_system="windows")
    facts_path = cli.work / "facts.json"
    assert cli.run("collect", "--path", cert_path, "--path", key_path, "-o", str(facts_path))[0] == 0
    cli.run("evaluate", str(facts_path))
    code, out, _ = cli.run("logs", "--failed")
    assert code == 0
    (record,) = json.loads(out)
    assert record["received"]["status"] == "not_applicable"


def test_copies_of_one_certificate_both_recorded(cli: Cli, ca: CertKey) -> None:
    leaf = make_leaf(ca, "copy", eku=[CLIENT_AUTH])
    first = leaf.write_cert(cli.work / "a.pem")
    second = leaf.write_cert(cli.work / "b.pem")
    cli.add_rule(
        cli.add_ca(ca), extended_key_usage=["emailProtection"], locations={"paths": [str(first), str(second)]}
    )
    facts_path = cli.work / "copies.json"
    assert cli.run("collect", "--path", str(first), "--path", str(second), "-o", str(facts_path))[0] == 0
    assert cli.run("evaluate", str(facts_path))[0] == 1

    code, out, _ = cli.run("logs", "--format", "json")

    assert code == 0
    (record,) = json.loads(out)
    locations = sorted(candidate["location"] for candidate in record["received"]["candidates"])
    assert locations == [str(first), str(second)]


def test_damaged_retention_setting_is_store_error(cli: Cli) -> None:
    store = Store(cli.home)
    assert store.posture_log_retention() == 100_000
    with contextlib.closing(sqlite3.connect(cli.home / "certposture.db")) as connection:
        connection.execute(
            "INSERT OR REPLACE INTO settings (name, value) VALUES ('posture_log_retention', '²')"
        )
        connection.commit()

    with pytest.raises(StoreError, match=r"posture_log_retention is '²', not a count"):
        Store(cli.home).posture_log_retention()
