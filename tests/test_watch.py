"""`certposture check --watch`: the scheduler and loop with a fake clock, rounds on a real store, and
the command in a subprocess stopped by a round limit, SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certposture import posturelog, watch
from certposture.errors import StoreError
from certposture.store import Store
from certposture.watch import (
    MINIMUM_SCHEDULE,
    RoundRunner,
    RoundSummary,
    Scheduler,
    WatchLoop,
    WatchOptions,
)
from tests.certgen import CertKey
from tests.test_end_to_end import FULL_RULE, HOSTNAME, SERIAL, Cli, ca, cli, good_leaf, pem_pair

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPOSITORY = Path(__file__).resolve().parent.parent
# In the subprocess tests one schedule minute lasts 0.3 s, or 1.2 s where the test counts runs per rule.
# A round takes about 30 ms, but the first one (policies compiled, modules imported) took over 0.6 s
# with six tests at once on two CPUs. A round longer than a minute of schedule time skips runs.
FAST_TIME_SCALE = "0.005"
COUNTING_TIME_SCALE = "0.02"
ROUND_LINE = re.compile(r"^\S+Z round (\d+): (\d+) rule\(s\) run: .*; (\d+) record\(s\) logged", re.MULTILINE)


def rule(rule_id: str, schedule: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"id": rule_id, "name": rule_id, "input": {}}
    if schedule is not None:
        document["schedule"] = schedule
    return document


def minutes(count: float) -> datetime:
    return T0 + timedelta(minutes=count)


# Schedules


def test_parse_duration_units() -> None:
    assert watch.parse_duration("30s") == timedelta(seconds=30)
    assert watch.parse_duration("5m") == timedelta(minutes=5)
    assert watch.parse_duration("12h") == timedelta(hours=12)
    assert watch.parse_duration("1d") == timedelta(days=1)


@pytest.mark.parametrize("value", ["", "0m", "5", "m", "5w", "1.5m", "-1m", "٣m"])
def test_parse_duration_rejects_invalid(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        watch.parse_duration(value)


def test_rule_interval_default_five_minutes() -> None:
    assert watch.rule_interval(rule("a")) == (timedelta(minutes=5), None)


def test_rule_interval_raises_short_schedule() -> None:
    interval, warning = watch.rule_interval(rule("fast", "30s"))
    assert interval == MINIMUM_SCHEDULE == timedelta(minutes=1)
    assert warning is not None
    assert "fast" in warning
    assert "30s" in warning


def test_rule_interval_keeps_long_schedule() -> None:
    assert watch.rule_interval(rule("slow", "2h")) == (timedelta(hours=2), None)
    assert watch.rule_interval(rule("edge", "60s")) == (timedelta(minutes=1), None)


@pytest.mark.parametrize("schedule", ["-5m", "5y", "1" + "0" * 30 + "d", 10**30])
def test_rule_interval_invalid_schedule_defaults(schedule: Any) -> None:
    # Only a rule edited in the store can hold these; the loop must keep running it.
    interval, warning = watch.rule_interval(rule("edited", "5m") | {"schedule": schedule})

    assert interval == timedelta(minutes=5)
    assert warning == f"rule edited has schedule {schedule!r}, which is not a duration; it runs every 5m"


# Scheduler


def test_scheduler_due_per_schedule() -> None:
    scheduler = Scheduler(warn=lambda message: None)
    rules = [rule("one", "1m"), rule("two", "2m"), rule("default")]
    ran: list[list[str]] = []
    for minute in range(6):
        due = scheduler.due(rules, minutes(minute))
        ran.append([item["id"] for item in due])
        scheduler.mark_run(due, minutes(minute))
    assert ran == [
        ["one", "two", "default"],
        ["one"],
        ["one", "two"],
        ["one"],
        ["one", "two"],
        ["one", "default"],
    ]


def test_scheduler_next_due_is_earliest() -> None:
    scheduler = Scheduler(warn=lambda message: None)
    assert scheduler.next_due() is None
    due = scheduler.due([rule("two", "2m"), rule("three", "3m")], T0)
    scheduler.mark_run(due, T0)
    assert scheduler.next_due() == minutes(2)


def test_scheduler_warns_once_per_rule() -> None:
    warnings: list[str] = []
    scheduler = Scheduler(warn=warnings.append)
    for minute in range(3):
        due = scheduler.due([rule("fast", "30s"), rule("fine", "1m")], minutes(minute))
        assert [item["id"] for item in due] == ["fast", "fine"]
        scheduler.mark_run(due, minutes(minute))
    assert len(warnings) == 1
    assert "fast" in warnings[0]


def test_scheduler_skips_runs_missed_by_long_round() -> None:
    scheduler = Scheduler(warn=lambda message: None)
    due = scheduler.due([rule("one", "1m")], T0)
    scheduler.mark_run(due, minutes(2.5))
    assert scheduler.next_due() == minutes(3)


def test_scheduler_forgets_removed_rule() -> None:
    scheduler = Scheduler(warn=lambda message: None)
    scheduler.mark_run(scheduler.due([rule("a", "1m"), rule("b", "1m")], T0), T0)
    assert [item["id"] for item in scheduler.due([rule("b", "1m")], minutes(1))] == ["b"]
    # Stored again, "a" is a new rule and runs at once, off the minute grid.
    assert [item["id"] for item in scheduler.due([rule("a", "1m")], minutes(1.5))] == ["a"]


def test_scheduler_changed_schedule_runs_at_once() -> None:
    scheduler = Scheduler(warn=lambda message: None)
    scheduler.mark_run(scheduler.due([rule("a", "1h")], T0), T0)
    assert scheduler.due([rule("a", "1h")], minutes(2)) == []
    assert [item["id"] for item in scheduler.due([rule("a", "2m")], minutes(2))] == ["a"]


# The loop with a fake clock


class FakeClock:
    """Schedule time that moves only when the loop sleeps or a round advances it."""

    def __init__(
        self,
        stop: threading.Event,
        stop_at: datetime | None = None,
        on_wake: Callable[[datetime], None] | None = None,
    ) -> None:
        self.time = T0
        self.sleeps: list[float] = []
        self._stop = stop
        self._stop_at = stop_at
        self._on_wake = on_wake

    def now(self) -> datetime:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += timedelta(seconds=seconds)
        if self._on_wake is not None:
            self._on_wake(self.time)
        if self._stop_at is not None and self.time >= self._stop_at:
            self._stop.set()


@dataclass
class ListReporter:
    rounds: list[RoundSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def round_finished(self, summary: RoundSummary) -> None:
        self.rounds.append(summary)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)


@dataclass
class FakeRounds:
    """Stands in for RoundRunner.run: records when each round ran and which rules it ran."""

    clock: FakeClock
    duration: timedelta = timedelta()
    ran: list[tuple[datetime, list[str]]] = field(default_factory=list)

    def __call__(self, number: int, rules: Sequence[dict[str, Any]]) -> RoundSummary:
        self.ran.append((self.clock.now(), [item["id"] for item in rules]))
        self.clock.time += self.duration
        return RoundSummary(number, self.clock.now(), {}, rules_run=len(rules))


def make_loop(
    load_rules: Callable[[], list[dict[str, Any]]],
    *,
    stop_at: datetime | None = None,
    max_rounds: int | None = None,
    round_duration: timedelta = timedelta(),
    on_wake: Callable[[datetime], None] | None = None,
) -> tuple[WatchLoop, FakeClock, FakeRounds, ListReporter]:
    stop = threading.Event()
    clock = FakeClock(stop, stop_at, on_wake)
    rounds = FakeRounds(clock, round_duration)
    reporter = ListReporter()
    loop = WatchLoop(
        clock=clock,
        stop=stop,
        load_rules=load_rules,
        run_round=rounds,
        reporter=reporter,
        max_rounds=max_rounds,
    )
    return loop, clock, rounds, reporter


def test_loop_runs_rules_at_their_rounds() -> None:
    rules = [rule("one", "1m"), rule("two", "2m"), rule("default")]
    loop, _, rounds, reporter = make_loop(lambda: rules, stop_at=minutes(5.5))
    assert loop.run() == 6
    assert rounds.ran == [
        (minutes(0), ["one", "two", "default"]),
        (minutes(1), ["one"]),
        (minutes(2), ["one", "two"]),
        (minutes(3), ["one"]),
        (minutes(4), ["one", "two"]),
        (minutes(5), ["one", "default"]),
    ]
    assert [summary.number for summary in reporter.rounds] == [1, 2, 3, 4, 5, 6]


def test_loop_stops_after_max_rounds() -> None:
    loop, clock, rounds, _ = make_loop(lambda: [rule("one", "1m"), rule("two", "2m")], max_rounds=4)
    assert loop.run() == 4
    assert [ids for _, ids in rounds.ran] == [["one", "two"], ["one"], ["one", "two"], ["one"]]
    assert clock.time == minutes(3)


def test_loop_raises_short_schedule_to_minimum() -> None:
    loop, _, rounds, reporter = make_loop(lambda: [rule("fast", "30s")], stop_at=minutes(2.5))
    loop.run()
    assert [when for when, _ in rounds.ran] == [minutes(0), minutes(1), minutes(2)]
    assert len(reporter.warnings) == 1
    assert "below the minimum of 1m" in reporter.warnings[0]


def test_loop_reads_store_every_minute() -> None:
    loop, clock, rounds, _ = make_loop(lambda: [rule("daily", "1d")], stop_at=minutes(10))
    loop.run()
    assert [ids for _, ids in rounds.ran] == [["daily"]]
    assert clock.sleeps
    assert max(clock.sleeps) == MINIMUM_SCHEDULE.total_seconds()


def test_loop_picks_up_added_and_removed_rules() -> None:
    stored = [rule("one", "1m")]

    def change_store(now: datetime) -> None:
        if now == minutes(2):
            stored.append(rule("two", "1m"))
        if now == minutes(4):
            del stored[0]

    loop, _, rounds, _ = make_loop(lambda: list(stored), stop_at=minutes(4.5), on_wake=change_store)
    loop.run()
    assert rounds.ran == [
        (minutes(0), ["one"]),
        (minutes(1), ["one"]),
        (minutes(2), ["one", "two"]),
        (minutes(3), ["one", "two"]),
        (minutes(4), ["two"]),
    ]


def test_loop_continues_after_store_error() -> None:
    failures = iter([True, True])

    def load_rules() -> list[dict[str, Any]]:
        if next(failures, False):
            raise StoreError("store row 'x' in table rules is not a JSON object")
        return [rule("one", "1m")]

    loop, _, rounds, reporter = make_loop(load_rules, stop_at=minutes(3.5))
    loop.run()
    assert [when for when, _ in rounds.ran] == [minutes(2), minutes(3)]
    assert len(reporter.errors) == 1
    assert "not a JSON object" in reporter.errors[0]
    assert reporter.notes == ["the rules can be read again; watching resumes"]


def test_loop_warns_once_without_rules() -> None:
    loop, clock, rounds, reporter = make_loop(lambda: [], stop_at=minutes(3))
    assert loop.run() == 0
    assert rounds.ran == []
    assert len(reporter.warnings) == 1
    assert "no rules stored" in reporter.warnings[0]
    assert clock.sleeps == [60.0, 60.0, 60.0]


def test_loop_skips_runs_after_long_round() -> None:
    loop, _, rounds, _ = make_loop(
        lambda: [rule("one", "1m")], stop_at=minutes(6), round_duration=timedelta(seconds=150)
    )
    loop.run()
    # Each round ends 2.5 minutes after it starts, so the next one starts at the next whole minute.
    assert [when for when, _ in rounds.ran] == [minutes(0), minutes(3)]


def test_loop_finishes_round_when_stopped_during_it() -> None:
    stop = threading.Event()
    clock = FakeClock(stop)
    ran: list[int] = []

    def run_round(number: int, rules: Sequence[dict[str, Any]]) -> RoundSummary:
        ran.append(number)
        stop.set()
        return RoundSummary(number, clock.now(), {}, rules_run=len(rules))

    reporter = ListReporter()
    loop = WatchLoop(
        clock=clock, stop=stop, load_rules=lambda: [rule("one", "1m")], run_round=run_round, reporter=reporter
    )
    assert loop.run() == 1
    assert ran == [1]
    assert len(reporter.rounds) == 1


# Time scale


def test_time_scale_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(watch.TIME_SCALE_VARIABLE, raising=False)
    assert watch.time_scale_from_environment() == 1.0
    monkeypatch.setenv(watch.TIME_SCALE_VARIABLE, "0.001")
    assert watch.time_scale_from_environment() == 0.001


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan", "inf"])
def test_time_scale_rejects_invalid(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(watch.TIME_SCALE_VARIABLE, value)
    with pytest.raises(watch.InputError, match=watch.TIME_SCALE_VARIABLE):
        watch.time_scale_from_environment()


def test_scaled_clock_sleep_returns_when_stopped() -> None:
    stop = threading.Event()
    clock = watch.ScaledClock(stop, scale=1.0)
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    clock.sleep(30)
    assert time.monotonic() - started < 5


def test_scaled_clock_runs_faster() -> None:
    clock = watch.ScaledClock(threading.Event(), scale=0.001)
    before = clock.now()
    clock.sleep(60)
    # Event.wait may end a little before its timeout on some platforms.
    assert clock.now() - before >= timedelta(seconds=55)


# Rounds on a real store


def add_scheduled_rule(cli: Cli, ca_id: str, name: str, schedule: str, paths: list[str]) -> str:
    document = {
        "name": name,
        "type": "client_certificate_v2",
        "schedule": schedule,
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            **FULL_RULE,
            "locations": {"paths": paths},
        },
    }
    path = cli.work / f"{name}.json"
    path.write_text(json.dumps(document))
    code, out, err = cli.run("rules", "add", str(path))
    assert code == 0, err
    return out.strip()


def two_rules(cli: Cli, ca: CertKey) -> tuple[str, str]:
    """Store a rule every 1m that passes and one every 2m whose certificate file is missing."""
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    every_minute = add_scheduled_rule(cli, ca_id, "every-minute", "1m", [cert_path, key_path])
    missing = str(cli.work / "missing.pem")
    every_two = add_scheduled_rule(cli, ca_id, "every-two-minutes", "2m", [missing])
    return every_minute, every_two


def runner(
    cli: Cli, options: WatchOptions | None = None, recorder: watch.Recorder = posturelog.record_results
) -> tuple[RoundRunner, Store, ListReporter]:
    store = Store(cli.home)
    reporter = ListReporter()
    options = options or WatchOptions(hostname=HOSTNAME, serial_number=SERIAL)
    return RoundRunner(store, options, recorder, reporter), store, reporter


def test_round_evaluates_and_logs_each_rule(cli: Cli, ca: CertKey) -> None:
    every_minute, every_two = two_rules(cli, ca)
    round_runner, store, reporter = runner(cli)
    summary = round_runner.run(1, round_runner.load_rules())

    assert summary.rules_run == 2
    assert summary.counts == {"passed": 1, "failed": 1, "not_applicable": 0, "error": 0}
    assert summary.records == 2
    assert summary.collection_errors == 1
    assert [result["rule_id"] for result in summary.document["results"]] == [every_minute, every_two]
    assert summary.document["device"] == {"hostname": HOSTNAME, "serial_number": SERIAL}
    records = posturelog.query(store)
    assert [(record["rule_id"], record["passed"]) for record in records] == [
        (every_minute, True),
        (every_two, False),
    ]
    assert reporter.errors == []


def test_round_policy_error_never_passes(cli: Cli, ca: CertKey) -> None:
    every_minute, _ = two_rules(cli, ca)
    broken = cli.work / "broken"
    broken.mkdir()
    (broken / "broken.rego").write_text(
        "package certposture.conditions.broken\n\nimport rego.v1\n\n"
        "reasons contains reason if {\n\treason := no_such_function(1)\n}\n"
    )
    options = WatchOptions(hostname=HOSTNAME, serial_number=SERIAL, extra_policies=(broken,))
    round_runner, store, reporter = runner(cli, options)
    rules = round_runner.load_rules()
    for number in (1, 2):
        summary = round_runner.run(number, rules)
        assert summary.counts["error"] == 2
        assert summary.counts["passed"] == 0
        assert all(result["passed"] is False for result in summary.document["results"])

    records = posturelog.query(store, rule_id=every_minute)
    assert len(records) == 2
    assert all(record["passed"] is False for record in records)
    # The same error in the second round is not printed again.
    assert len(reporter.errors) == 2
    assert all("no_such_function" in message for message in reporter.errors)


def test_round_reports_log_failure_once(cli: Cli, ca: CertKey) -> None:
    two_rules(cli, ca)

    def failing_recorder(*arguments: Any) -> int:
        raise StoreError("store is read-only, so the posture log cannot be written")

    round_runner, _, reporter = runner(cli, recorder=failing_recorder)
    rules = round_runner.load_rules()
    for number in (1, 2):
        summary = round_runner.run(number, rules)
        assert summary.records == 0
        assert summary.rules_run == 2
    assert reporter.errors == [
        "posture log: the results were not logged: store is read-only, so the posture log cannot be written"
    ]


def test_round_skips_rule_removed_meanwhile(cli: Cli, ca: CertKey) -> None:
    every_minute, every_two = two_rules(cli, ca)
    round_runner, store, _ = runner(cli)
    rules = round_runner.load_rules()
    store.remove_rule(every_two)
    summary = round_runner.run(1, rules)
    assert summary.rules_run == 1
    assert [result["rule_id"] for result in summary.document["results"]] == [every_minute]


def test_round_collects_explicit_paths_once(cli: Cli, ca: CertKey) -> None:
    two_rules(cli, ca)
    leaf_paths = [str(cli.work / "client.pem"), str(cli.work / "client.key")]
    options = WatchOptions(paths=tuple(leaf_paths), hostname=HOSTNAME, serial_number=SERIAL)
    round_runner, _, _ = runner(cli, options)
    summary = round_runner.run(1, round_runner.load_rules())
    # The second rule considers only certificates from its own (missing) path, so it still fails.
    assert summary.counts == {"passed": 1, "failed": 1, "not_applicable": 0, "error": 0}
    assert summary.collection_errors == 0


def test_round_line_format() -> None:
    summary = RoundSummary(3, T0, {}, rules_run=2, records=2, collection_errors=1)
    summary.counts.update(passed=1, failed=1)
    assert watch.format_round_line(summary) == (
        "2026-03-01T12:00:00Z round 3: 2 rule(s) run: 1 passed, 1 failed, 0 not applicable, 0 error; "
        "2 record(s) logged; 1 collection error(s)"
    )


# The command


def test_watch_rejects_at(cli: Cli, ca: CertKey) -> None:
    two_rules(cli, ca)
    code, _, err = cli.run("check", "--watch", "--at", "2026-12-04T19:00:00Z")
    assert code == 2
    assert "--at cannot be used with --watch" in err


def test_watch_rounds_needs_watch(cli: Cli) -> None:
    code, _, err = cli.run("check", "--watch-rounds", "2")
    assert code == 2
    assert "--watch-rounds applies only with --watch" in err


def test_watch_unknown_rule_is_usage_error(cli: Cli, ca: CertKey) -> None:
    two_rules(cli, ca)
    code, _, err = cli.run("check", "--watch", "--rule", "no-such-rule")
    assert code == 2
    assert "not found" in err


def start_watch(cli: Cli, *arguments: str, time_scale: str = FAST_TIME_SCALE) -> subprocess.Popen[str]:
    environment = {**os.environ, watch.TIME_SCALE_VARIABLE: time_scale}
    command = [sys.executable, "-m", "certposture", "--home", str(cli.home), "check", "--watch"]
    command += ["--hostname", HOSTNAME, "--serial-number", SERIAL, *arguments]
    return subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=(cli.work / "stderr.txt").open("w"),
        text=True,
    )


def wait_for_rounds(cli: Cli, process: subprocess.Popen[str], rounds: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(ROUND_LINE.findall((cli.work / "stderr.txt").read_text())) >= rounds:
            return
        assert process.poll() is None, (cli.work / "stderr.txt").read_text()
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no {rounds} rounds within 30 s: {(cli.work / 'stderr.txt').read_text()}")


def test_watch_rounds_logs_expected_records(cli: Cli, ca: CertKey) -> None:
    every_minute, every_two = two_rules(cli, ca)
    process = start_watch(cli, "--watch-rounds", "4", time_scale=COUNTING_TIME_SCALE)
    out, _ = process.communicate(timeout=60)
    err = (cli.work / "stderr.txt").read_text()

    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert [int(number) for number, _, _ in ROUND_LINE.findall(err)] == [1, 2, 3, 4]
    assert [int(run) for _, run, _ in ROUND_LINE.findall(err)] == [2, 1, 2, 1]
    assert "note: stopped after 4 round(s)" in err
    documents = [json.loads(line) for line in out.splitlines()]
    assert [len(document["results"]) for document in documents] == [2, 1, 2, 1]

    store = Store(cli.home)
    assert len(posturelog.query(store, rule_id=every_minute)) == 4
    assert len(posturelog.query(store, rule_id=every_two)) == 2
    assert all(record["passed"] for record in posturelog.query(store, rule_id=every_minute))
    assert posturelog.query(store, rule_id=every_two, failed_only=True) == posturelog.query(
        store, rule_id=every_two
    )


@pytest.mark.parametrize(
    ("signal_number", "exit_code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_watch_stops_on_signal(cli: Cli, ca: CertKey, signal_number: int, exit_code: int) -> None:
    two_rules(cli, ca)
    process = start_watch(cli)
    wait_for_rounds(cli, process, 3)
    process.send_signal(signal_number)
    out, _ = process.communicate(timeout=30)
    err = (cli.work / "stderr.txt").read_text()

    assert process.returncode == exit_code, err
    assert "Traceback" not in err
    name = signal.Signals(signal_number).name
    rounds = ROUND_LINE.findall(err)
    assert f"note: stopped by {name} after {len(rounds)} round(s)" in err
    # Every round that started was finished and reported, and logged one record per rule it ran.
    logged = sum(int(records) for _, _, records in rounds)
    assert logged == sum(int(run) for _, run, _ in rounds)
    assert len(posturelog.query(Store(cli.home))) == logged
    assert len(out.splitlines()) == len(rounds)
