"""Batch evaluation: ``evaluate --batch`` gives each device the record that ``evaluate`` gives it alone.

The fleet is collected for real: each device gets its own certificate (or a
flawed one) written to the same two paths, and ``collect`` reads them. Each
device is then evaluated on its own and the whole fleet as JSON Lines, with
one worker and with two, and the records must equal the single results.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certposture import batch
from certposture.progress import BAR_WIDTH
from tests.certgen import CLIENT_AUTH, EMAIL_PROTECTION, CertKey, make_ca, make_leaf
from tests.test_end_to_end import Cli, ca, cli

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

AT = "2026-12-04T19:00:00Z"
VALIDITY = {
    "not_before": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "not_after": dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
}
EXPIRED = {
    "not_before": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    "not_after": dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
}
# The flaws cycle over the devices, so that every rule passes for some devices and fails for others.
FLAWS = ("none", "no_key", "expired", "other_ca", "wrong_cn", "no_email_eku", "wrong_san", "none")
DEVICES = 16


class Fleet:
    """Stored CA and rules, and the facts of ``DEVICES`` devices collected one by one."""

    def __init__(self, cli: Cli, ca: CertKey) -> None:
        self.cli = cli
        self.ca_id = cli.add_ca(ca)
        self.cert_path = cli.work / "device.pem"
        self.key_path = cli.work / "device.key"
        paths = [str(self.cert_path), str(self.key_path)]
        self.rule_ids = [
            cli.add_rule(
                self.ca_id,
                name="Device certificate",
                cn="${serial_number}_mycompany",
                subject_alternative_names=["${hostname}.corp.example"],
                extended_key_usage=["clientAuth"],
                locations={"paths": paths},
            ),
            cli.add_rule(
                self.ca_id,
                name="Mail signing",
                extended_key_usage=["clientAuth", "emailProtection"],
                locations={"paths": paths},
            ),
            cli.add_rule(self.ca_id, "windows", name="Windows device certificate"),
        ]
        other_ca = make_ca("Other CA")
        self.facts_paths: list[Path] = []
        for number in range(DEVICES):
            flaw = FLAWS[number % len(FLAWS)]
            hostname, serial = f"host{number:03d}", f"SER{number:03d}"
            leaf = make_leaf(
                other_ca if flaw == "other_ca" else ca,
                f"WRONG{number}_mycompany" if flaw == "wrong_cn" else f"{serial}_mycompany",
                sans=[f"{'elsewhere' if flaw == 'wrong_san' else hostname}.corp.example"],
                eku=[CLIENT_AUTH] if flaw == "no_email_eku" else [CLIENT_AUTH, EMAIL_PROTECTION],
                **(EXPIRED if flaw == "expired" else VALIDITY),
            )
            leaf.write_cert(self.cert_path)
            self.key_path.unlink(missing_ok=True)
            if flaw != "no_key":
                leaf.write_key(self.key_path)
            facts_path = cli.work / f"facts-{number:03d}.json"
            code, _, err = cli.run(
                "collect", "--hostname", hostname, "--serial-number", serial,
                "--path", str(self.cert_path), "--path", str(self.key_path), "-o", str(facts_path),
            )  # fmt: skip
            assert code == 0, err
            self.facts_paths.append(facts_path)

    def lines(self) -> list[bytes]:
        """The facts as JSON Lines: each document compacted onto one line."""
        return [json.dumps(json.loads(path.read_bytes())).encode() + b"\n" for path in self.facts_paths]

    def single_results(self) -> list[dict[str, Any]]:
        """Evaluate each device on its own, as ``evaluate FILE`` does."""
        documents = []
        for path in self.facts_paths:
            code, out, err = self.cli.run("evaluate", str(path), "--at", AT)
            assert code in (0, 1), err
            documents.append(json.loads(out))
        return documents

    def batch(self, content: bytes, *options: str) -> tuple[int, list[dict[str, Any]], str]:
        path = self.cli.work / "fleet.jsonl"
        path.write_bytes(content)
        code, out, err = self.cli.run("evaluate", "--batch", str(path), "--at", AT, *options)
        return code, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def fleet(cli: Cli, ca: CertKey) -> Fleet:
    return Fleet(cli, ca)


def _without_batch_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in ("line", "errors")}


def test_fleet_has_passes_and_failures(fleet: Fleet) -> None:
    """The generated fleet exercises both outcomes of every applicable rule, or the comparison proves little."""
    statuses = {(index, result["status"]) for document in fleet.single_results()
                for index, result in enumerate(document["results"])}  # fmt: skip
    assert {(0, "passed"), (0, "failed"), (1, "passed"), (1, "failed"), (2, "not_applicable")} <= statuses


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_equals_single_evaluation(fleet: Fleet, jobs: str) -> None:
    singles = fleet.single_results()
    code, records, err = fleet.batch(b"".join(fleet.lines()), "--jobs", jobs)
    assert code == 1, err
    assert [record["line"] for record in records] == list(range(1, DEVICES + 1))
    assert [_without_batch_fields(record) for record in records] == singles
    assert all(record["errors"] == [] for record in records)
    assert list(records[0]) == ["line", "evaluated_at", "collected_at", "device", "results", "errors"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_malformed_line_in_the_middle(fleet: Fleet, jobs: str) -> None:
    singles = fleet.single_results()
    lines = fleet.lines()
    middle = len(lines) // 2
    broken = lines[middle][: len(lines[middle]) // 2] + b"\n"
    content = b"".join([*lines[:middle], broken, *lines[middle:]])
    code, records, err = fleet.batch(content, "--jobs", jobs)

    assert code == 3
    assert [record["line"] for record in records] == list(range(1, DEVICES + 2))
    bad = records[middle]
    assert bad["line"] == middle + 1
    assert bad["device"] == {"hostname": None, "serial_number": None}
    assert "collected_at" not in bad
    assert [result["rule_id"] for result in bad["results"]] == fleet.rule_ids
    assert {result["status"] for result in bad["results"]} == {"error"}
    assert {result["passed"] for result in bad["results"]} == {False}
    assert [reason["code"] for result in bad["results"] for reason in result["reasons"]] == [
        "evaluation_error"
    ] * 3
    assert len(bad["errors"]) == 1
    assert bad["errors"][0].startswith(f"line {middle + 1}: facts are not valid JSON")
    assert bad["errors"][0].endswith("for example with `jq -c .`")
    assert f"error: line {middle + 1}: facts are not valid JSON" in err
    # The lines after the broken one are evaluated as usual.
    good = records[:middle] + records[middle + 1 :]
    assert [_without_batch_fields(record) for record in good] == singles


def test_invalid_facts_line_and_blank_line(fleet: Fleet) -> None:
    lines = fleet.lines()
    document = json.loads(lines[0])
    document["certificates"][0]["private_key"]["present"] = "yes"
    edited = json.dumps(document).encode() + b"\n"
    code, records, err = fleet.batch(b"".join([lines[0], b"\n", edited, b"   \n", lines[1]]))
    assert code == 3
    assert [record["line"] for record in records] == [1, 3, 5]
    assert records[1]["errors"][0].startswith(
        "line 3: facts are invalid at certificates.0.private_key.present"
    )
    assert {result["status"] for result in records[1]["results"]} == {"error"}
    assert "2 blank line(s) skipped" in err


def test_jobs_two_writes_the_same_bytes_as_one(fleet: Fleet) -> None:
    content = b"".join(fleet.lines() * 5)
    path = fleet.cli.work / "fleet.jsonl"
    path.write_bytes(content)
    outputs = []
    for jobs in ("1", "2"):
        code, out, _ = fleet.cli.run("evaluate", "--batch", str(path), "--at", AT, "--jobs", jobs)
        assert code == 1
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == DEVICES * 5


def test_exit_codes_follow_the_worst_device(fleet: Fleet) -> None:
    lines = fleet.lines()
    passing = [line for line, flaw in zip(lines, FLAWS * 2, strict=True) if flaw == "none"]
    code, records, _ = fleet.batch(b"".join(passing), "--rule", fleet.rule_ids[0])
    assert code == 0
    assert all(record["results"][0]["status"] == "passed" for record in records)
    code, _, _ = fleet.batch(b"".join(lines[:3]), "--rule", fleet.rule_ids[0])
    assert code == 1


def test_posture_log_gets_every_device(fleet: Fleet) -> None:
    code, _, _ = fleet.batch(b"".join(fleet.lines()))
    assert code == 1
    code, out, _ = fleet.cli.run("logs", "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == DEVICES * 3
    assert sorted({record["device_name"] for record in records}) == [f"host{n:03d}" for n in range(DEVICES)]


def test_summary_on_stderr(fleet: Fleet) -> None:
    code, _, err = fleet.batch(b"".join(fleet.lines()))
    assert code == 1
    assert f"evaluated {DEVICES} device(s): 4 passed, 12 failed, 0 with errors" in err


def test_empty_input_is_an_error(fleet: Fleet) -> None:
    code, records, err = fleet.batch(b"\n\n")
    assert code == 3
    assert records == []
    assert "no facts documents" in err


def test_line_over_the_limit_is_an_error_record(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = fleet.lines()
    monkeypatch.setattr(batch, "MAX_LINE", max(len(line) for line in lines))
    long_line = b'{"padding": "' + b"x" * (batch.MAX_LINE + 10) + b'"}\n'
    code, records, _ = fleet.batch(b"".join([lines[0], long_line, lines[1]]))
    assert code == 3
    assert [record["line"] for record in records] == [1, 2, 3]
    assert records[1]["errors"][0].startswith(f"line 2: the line is longer than {batch.MAX_LINE} bytes")
    assert records[2]["device"]["hostname"] == "host001"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--jobs", "0"], "--jobs is 0, but it must be at least 1"),
        (["--jobs", "257"], "--jobs 257 is more than 256 worker processes"),
        (["--jobs", "two"], "--jobs 'two' is not a positive whole number"),
        (["--format", "table"], "--batch writes JSON Lines"),
        (["--decision-log", "events.jsonl"], "--decision-log is not supported with --batch"),
        (["facts.json"], "give either FACTS or --batch"),
    ],
)
def test_batch_usage_errors(fleet: Fleet, options: list[str], message: str) -> None:
    code, records, err = fleet.batch(fleet.lines()[0], *options)
    assert code == 2
    assert records == []
    assert message in err


def test_jobs_without_batch_is_usage_error(fleet: Fleet) -> None:
    code, out, err = fleet.cli.run("evaluate", str(fleet.facts_paths[0]), "--jobs", "2")
    assert code == 2
    assert out == ""
    assert "--jobs applies to --batch only" in err


def test_missing_batch_file(fleet: Fleet) -> None:
    code, out, err = fleet.cli.run("evaluate", "--batch", str(fleet.cli.work / "nowhere.jsonl"))
    assert code == 2
    assert out == ""
    assert "nowhere.jsonl" in err


def test_read_lines_splits_and_limits() -> None:
    import io

    stream = io.BytesIO(b'{"a": 1}\n\n' + b"y" * 50 + b"\n" + b'{"b": 2}')
    lines = list(batch.read_lines(stream, max_bytes=20))
    assert lines[0] == (1, b'{"a": 1}\n')
    assert lines[1] == (2, None)
    assert lines[2][0] == 3
    assert isinstance(lines[2][1], str)
    assert "longer than 20 bytes" in lines[2][1]
    assert lines[3] == (4, b'{"b": 2}')


# Subprocess runs: standard input, streaming and the progress line


def _command(cli: Cli, *args: str) -> list[str]:
    return [sys.executable, "-m", "certposture", "--home", str(cli.home), "evaluate", *args]


def test_stdin_with_two_jobs(fleet: Fleet) -> None:
    singles = fleet.single_results()
    completed = subprocess.run(
        _command(fleet.cli, "--batch", "-", "--at", AT, "--jobs", "2"),
        input=b"".join(fleet.lines()),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [_without_batch_fields(record) for record in records] == singles
    assert b"\r" not in completed.stderr


def _read_available_lines(stream: Any, count: int) -> Iterator[bytes]:
    """Read ``count`` lines, failing the test rather than hanging if the process stops writing."""
    buffer = b""
    while buffer.count(b"\n") < count:
        ready, _, _ = select.select([stream], [], [], 60)
        assert ready, "no output within 60 s"
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, "output ended early"
        buffer += chunk
    yield from buffer.splitlines()[:count]


def test_records_stream_before_the_input_ends(fleet: Fleet) -> None:
    """Records are written while the input is still open, so the input is never held whole."""
    process = subprocess.Popen(
        _command(fleet.cli, "--batch", "-", "--at", AT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    lines = fleet.lines()
    # A thread writes, so that neither side can block the other on a full pipe.
    writer = threading.Thread(
        target=lambda: _write_lines(
            process.stdin, [lines[index % len(lines)] for index in range(batch.CHUNK_LINES)]
        )
    )
    writer.start()
    try:
        records = [json.loads(line) for line in _read_available_lines(process.stdout, batch.CHUNK_LINES)]
        assert [record["line"] for record in records] == list(range(1, batch.CHUNK_LINES + 1))
        # The input is still open: the records above were written before it ended.
        assert process.poll() is None
        writer.join()
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=60) == 1
        assert rest == b""
    finally:
        process.kill()
        process.wait()
        writer.join()


def _write_lines(stream: Any, lines: list[bytes]) -> None:
    for line in lines:
        stream.write(line)
    stream.flush()


def test_progress_line_on_a_terminal(fleet: Fleet) -> None:
    path = fleet.cli.work / "fleet.jsonl"
    path.write_bytes(b"".join(fleet.lines()))
    controller, terminal = pty.openpty()
    try:
        completed = subprocess.run(
            _command(fleet.cli, "--batch", str(path), "--at", AT),
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        terminal_output = b""
        while select.select([controller], [], [], 0)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal_output += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert completed.returncode == 1
    assert f"[{'#' * BAR_WIDTH}] 100% {DEVICES} devices".encode() in terminal_output
    assert b"\r" in terminal_output
    assert len(completed.stdout.splitlines()) == DEVICES


def test_pretty_printed_input_names_the_fix(fleet: Fleet) -> None:
    pretty = json.dumps(json.loads(fleet.lines()[0]), indent=2).encode() + b"\n"
    code, records, err = fleet.batch(pretty)
    assert code == 3
    assert records[0]["errors"][0].endswith(
        "put each whole facts document on one line, for example with `jq -c .`"
    )
    assert len(records) == len(pretty.splitlines())
    assert "error: line 1: facts are not valid JSON" in err


def test_errors_beyond_twenty_are_counted(fleet: Fleet) -> None:
    content = b"".join([b"{broken\n"] * 25 + [fleet.lines()[0]])
    code, records, err = fleet.batch(content)
    assert code == 3
    assert len(records) == 26
    assert err.count("error: line ") == 20
    assert "error: 5 more error message(s); each is in its device's record under errors" in err
    assert "evaluated 26 device(s): 1 passed, 0 failed, 25 with errors" in err


def test_rule_error_not_counted_hidden(fleet: Fleet) -> None:
    document = json.loads(fleet.lines()[0])
    document["device"]["serial_number"] = None
    code, records, err = fleet.batch(json.dumps(document).encode() + b"\n")
    assert code == 3
    assert records[0]["results"][0]["status"] == "error"
    assert records[0]["errors"] == []
    assert "more error message(s)" not in err


def test_unwritable_posture_log_is_a_warning(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from certposture.errors import StoreError
    from certposture.store import Store

    def reject_append(store: Store, rows: Any) -> int:
        raise StoreError("store is read-only (simulated)")

    monkeypatch.setattr(Store, "append_posture_log", reject_append)
    code, records, err = fleet.batch(b"".join(fleet.lines()))
    assert code == 1
    assert len(records) == DEVICES
    assert "warning: posture log not written from line 1 on: store is read-only (simulated)" in err
    assert "error:" not in err


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_with_workers(fleet: Fleet, path: Path) -> tuple[subprocess.Popen[bytes], set[int]]:
    """Start a --jobs 2 batch in its own session and wait until both workers exist."""
    process = subprocess.Popen(
        _command(fleet.cli, "--batch", str(path), "--at", AT, "--jobs", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    for _ in range(600):
        children = _children(process.pid)
        # Two workers and the resource tracker of multiprocessing.
        if len(children) >= 3:
            return process, children
        select.select([], [], [], 0.05)
    process.kill()
    raise AssertionError("the worker processes did not start")


def _wait_gone(pids: set[int]) -> set[int]:
    for _ in range(200):
        left = {pid for pid in pids if _alive(pid)}
        if not left:
            return left
        select.select([], [], [], 0.05)
    return left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_during_worker_start(fleet: Fleet) -> None:
    """Ctrl-C reaches the whole process group, also workers still importing; none may hang or print a traceback."""
    path = fleet.cli.work / "fleet.jsonl"
    path.write_bytes(b"".join(fleet.lines() * 40))
    process, children = _start_with_workers(fleet, path)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert b"Traceback" not in err
    assert _wait_gone(children) == set()
    assert all(json.loads(line)["line"] for line in out.splitlines())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_sigterm_ends_workers_logs_written(fleet: Fleet) -> None:
    path = fleet.cli.work / "fleet.jsonl"
    path.write_bytes(b"".join(fleet.lines() * 40))
    process, children = _start_with_workers(fleet, path)
    assert process.stdout is not None
    # Wait for the first records, so that some are written and logged before SIGTERM.
    first = process.stdout.readline()
    assert first
    process.send_signal(signal.SIGTERM)
    # Read through the same buffered file as readline above: communicate() would skip what it holds.
    rest = process.stdout.read()
    assert process.stderr is not None
    err = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 143, err
    assert b"stopped by SIGTERM" in err
    assert b"Traceback" not in err
    assert _wait_gone(children) == set()
    records = [json.loads(line) for line in (first + rest).splitlines()]
    assert [record["line"] for record in records] == list(range(1, len(records) + 1))
    code, logged, _ = fleet.cli.run("logs", "--format", "jsonl")
    assert code == 0
    assert len(logged.splitlines()) == len(records) * 3
