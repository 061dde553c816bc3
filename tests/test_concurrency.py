"""Several certposture processes writing one store at once: no lost writes, no corruption, no lock errors.

Each of WORKERS processes runs the CLI entry point (``certposture/__main__.py``,
as ``python -m certposture`` does) once per step. In every round all of them
add the same signing certificate with its key, then each adds a signing
certificate of its own, a rule that uses it, and checks that rule. A process
imports certposture before a step begins and then waits for the step's start
file, so the workers reach the store within milliseconds of each other.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from certposture import posturelog
from certposture.store import DATABASE_NAME, Store
from tests.certgen import make_ca, make_leaf, write_pem

REPOSITORY = Path(__file__).resolve().parent.parent
WORKERS = 8
ROUNDS = 3
HOSTNAME = "concurrency-host"
SERIAL = "CONC0001"


# A worker: for each step, announce readiness, wait for the start file, run the CLI entry point with
# that step's arguments, and print the exit code and output as one JSON line.
WORKER = """
import io, json, logging, os, runpy, sys, time
import certposture.cli

plan_file, sync, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.basicConfig(level=logging.WARNING, stream=sys.__stderr__)
for step, arguments in enumerate(json.load(open(plan_file))):
    open(os.path.join(sync, f"ready-{step}-{worker}"), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(sync, f"go-{step}")):
        if time.monotonic() > deadline:
            sys.exit(f"worker {worker}: step {step} never started")
        time.sleep(0.001)
    stdout, stderr = io.TextIOWrapper(io.BytesIO()), io.TextIOWrapper(io.BytesIO())
    sys.stdout, sys.stderr, sys.argv = stdout, stderr, ["certposture", *arguments]
    try:
        runpy.run_module("certposture", run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    stdout.flush()
    stderr.flush()
    outputs = [stream.buffer.getvalue().decode() for stream in (stdout, stderr)]
    print(json.dumps({"arguments": arguments, "code": code, "stdout": outputs[0], "stderr": outputs[1]}), flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    worker: int
    arguments: list[str]
    returncode: int
    stdout: str
    stderr: str


def shared_ca_id(round_number: int) -> str:
    return f"shared-ca-{round_number}"


def ca_id(worker: int, round_number: int) -> str:
    return f"ca-{worker}-{round_number}"


def rule_id(worker: int, round_number: int) -> str:
    return f"rule-{worker}-{round_number}"


def check_time(start: dt.datetime, worker: int, round_number: int) -> str:
    """Return a distinct evaluation time per check, which identifies the check's posture-log records."""
    moment = start + dt.timedelta(seconds=worker * ROUNDS + round_number)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_worker(work: Path, home: Path, worker: int, start: dt.datetime) -> list[list[str]]:
    """Write one worker's input files and return the arguments of its steps in order."""
    steps = []
    for round_number in range(ROUNDS):
        shared_path = work / f"shared-ca-{round_number}.pem"
        steps.append(
            ["ca", "add", "--id", shared_ca_id(round_number), "--keep-private-key", str(shared_path)]
        )
        ca = make_ca(f"Worker {worker} CA {round_number}")
        leaf = make_leaf(ca, f"device-{worker}-{round_number}")
        prefix = f"w{worker}-r{round_number}"
        cert_path = leaf.write_cert(work / f"{prefix}-leaf.pem")
        key_path = leaf.write_key(work / f"{prefix}-leaf.key")
        rule = {
            "id": rule_id(worker, round_number),
            "name": f"Worker {worker} round {round_number}",
            "type": "client_certificate_v2",
            "input": {
                "certificate_id": ca_id(worker, round_number),
                "operating_system": "linux",
                "check_private_key": True,
                "locations": {"paths": [str(cert_path), str(key_path)]},
            },
        }
        rule_path = work / f"{prefix}-rule.json"
        rule_path.write_text(json.dumps(rule))

        ca_arguments = ["ca", "add", "--id", ca_id(worker, round_number)]
        ca_path = work / f"{prefix}-ca.pem"
        if round_number % 2:
            # Every other certificate comes with its key, which the store keeps in a file.
            write_pem(ca_path, ca.cert_pem(), ca.key_pem())
            ca_arguments.append("--keep-private-key")
        else:
            ca.write_cert(ca_path)
        check_arguments = ["check", "--rule", rule_id(worker, round_number), "--hostname", HOSTNAME]
        check_arguments += ["--serial-number", SERIAL, "--at", check_time(start, worker, round_number)]
        steps += [[*ca_arguments, str(ca_path)], ["rules", "add", str(rule_path)], check_arguments]
    return [["--home", str(home), *arguments] for arguments in steps]


def run_workers(work: Path, plans: list[list[list[str]]]) -> list[Outcome]:
    """Start one process per plan and release each step once every process is ready for it."""
    sync = work / "sync"
    sync.mkdir()
    processes = []
    for worker, plan in enumerate(plans):
        plan_file = work / f"plan-{worker}.json"
        plan_file.write_text(json.dumps(plan))
        command = [sys.executable, "-c", WORKER, str(plan_file), str(sync), str(worker)]
        processes.append(
            subprocess.Popen(
                command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        for step in range(len(plans[0])):
            wait_until_ready(sync, step, processes)
            (sync / f"go-{step}").touch()
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    outcomes = []
    for worker, (process, (stdout, stderr)) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"worker {worker} exited {process.returncode}: {stderr}"
        for line in stdout.splitlines():
            step = json.loads(line)
            outcomes.append(Outcome(worker, step["arguments"], step["code"], step["stdout"], step["stderr"]))
    return outcomes


def wait_until_ready(sync: Path, step: int, processes: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    waiting = set(range(len(processes)))
    while waiting:
        waiting = {worker for worker in waiting if not (sync / f"ready-{step}-{worker}").exists()}
        for worker in waiting:
            if processes[worker].poll() is not None:
                _, stderr = processes[worker].communicate()
                raise AssertionError(f"worker {worker} stopped before step {step}: {stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {sorted(waiting)} not ready for step {step} within 120 s")
        time.sleep(0.002)


def test_concurrent_cli_writes_lose_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    for round_number in range(ROUNDS):
        shared = make_ca(f"Shared CA {round_number}")
        write_pem(work / f"shared-ca-{round_number}.pem", shared.cert_pem(), shared.key_pem())
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    plans = [plan_worker(work, home, worker, start) for worker in range(WORKERS)]

    outcomes = run_workers(work, plans)

    assert len(outcomes) == sum(len(plan) for plan in plans)
    failures = [
        f"worker {outcome.worker}: certposture {' '.join(outcome.arguments)} "
        f"exited {outcome.returncode}: {outcome.stderr.strip()}"
        for outcome in outcomes
        if outcome.returncode != 0
    ]
    assert failures == []
    assert [outcome.stderr for outcome in outcomes if "locked" in outcome.stderr] == []

    shared_ids = {shared_ca_id(round_number) for round_number in range(ROUNDS)}
    shared_records = [
        json.loads(outcome.stdout) for outcome in outcomes if shared_ids & set(outcome.arguments)
    ]
    assert len(shared_records) == WORKERS * ROUNDS
    assert {record["id"] for record in shared_records} == shared_ids
    assert all(record["private_key_stored"] for record in shared_records)

    store = Store(home)
    expected_cas = shared_ids | {ca_id(w, r) for w in range(WORKERS) for r in range(ROUNDS)}
    assert {record["id"] for record in store.list_signing_certificates()} == expected_cas
    expected_rules = {rule_id(w, r) for w in range(WORKERS) for r in range(ROUNDS)}
    assert {rule["id"] for rule in store.list_rules()} == expected_rules

    kept_keys = shared_ids | {ca_id(w, r) for w in range(WORKERS) for r in range(ROUNDS) if r % 2}
    assert {path.stem for path in (home / "private").iterdir()} == kept_keys

    records = posturelog.query(store)
    assert len(records) == WORKERS * ROUNDS
    by_time = {record["timestamp"]: record for record in records}
    for worker in range(WORKERS):
        for round_number in range(ROUNDS):
            record = by_time[check_time(start, worker, round_number)]
            assert record["rule_id"] == rule_id(worker, round_number)
            assert record["passed"] is True, record

    connection = sqlite3.connect(home / DATABASE_NAME)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()
