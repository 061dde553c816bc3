"""Re-run posture rules on their schedules: ``certposture check --watch``.

Each rule runs every ``schedule`` (default 5m, minimum 1m). A round runs the
rules that are due: it collects facts from each rule's locations, evaluates the
rule, appends the results to the posture log, prints one summary line to stderr
and prints the results to stdout. The store is read again before every round
and at least once a minute, so rules added or removed while watching are
picked up. The loop stops after SIGINT or SIGTERM, once the current round has
finished. A second signal acts at once: SIGINT aborts with exit code 130 and
SIGTERM ends the process.

The scheduling loop (:class:`WatchLoop`) takes its clock and its round runner
as arguments so that tests can drive it with a fake clock.
:func:`watch_check` wires the real clock, the store, signals and stdout and
stderr for the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

import orjson

from certposture import posture, posturelog
from certposture.engine import extra_policy_dirs
from certposture.errors import CertpostureError, InputError, NotFoundError
from certposture.files import emit
from certposture.report import printable, render_results_table
from certposture.store import Store
from collector.facts import Facts, format_utc
from collector.sources.pem import DEFAULT_LIMITS, PemLimits

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE = timedelta(minutes=5)
MINIMUM_SCHEDULE = timedelta(minutes=1)
# The store is read at least this often, so that added and removed rules take effect.
STORE_REFRESH = timedelta(minutes=1)

TIME_SCALE_VARIABLE = "CERTPOSTURE_WATCH_TIME_SCALE"

EXIT_STOPPED = 0
EXIT_INTERRUPTED = 130

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Stored schedules passed the stricter check of rules.py; this one only splits number and unit.
_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])\Z")
STATUSES = ("passed", "failed", "not_applicable", "error")

Rule = dict[str, Any]
Recorder = Callable[[Store, dict[str, Any], Facts | None, Sequence[Rule]], int]


# Schedules


def parse_duration(value: str) -> timedelta:
    """Parse a rule duration such as ``30s``, ``5m``, ``12h`` or ``1d`` (the format rules.py validates)."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use a number and a unit s, m, h or d, such as 5m")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def rule_interval(rule: Rule) -> tuple[timedelta, str | None]:
    """Return how often ``rule`` runs, and a warning when its schedule was raised to the minimum."""
    schedule = rule.get("schedule")
    if not schedule:
        return DEFAULT_SCHEDULE, None
    try:
        interval = parse_duration(schedule) if isinstance(schedule, str) else None
    except (ValueError, OverflowError):
        interval = None
    if interval is None:
        # Only a rule edited by hand in the store gets here; it keeps running, on the default schedule.
        return DEFAULT_SCHEDULE, (
            f"rule {rule.get('id')} has schedule {schedule!r}, which is not a duration; it runs every 5m"
        )
    if interval < MINIMUM_SCHEDULE:
        return MINIMUM_SCHEDULE, (
            f"rule {rule['id']} has schedule {schedule}, below the minimum of 1m; it runs every 1m"
        )
    return interval, None


@dataclass
class _Entry:
    interval: timedelta
    next_due: datetime


class Scheduler:
    """The next due time of each rule.

    A rule is due when first seen, then every interval after that time. When a
    round ends after one or more later due times have passed, those runs are
    skipped rather than run in a burst, so a rule never runs twice in a row
    to catch up.
    """

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._entries: dict[str, _Entry] = {}
        self._warned: set[tuple[str, str]] = set()

    def due(self, rules: Sequence[Rule], now: datetime) -> list[Rule]:
        """Update the schedule from the stored ``rules`` and return those due at ``now``, in store order."""
        current: dict[str, _Entry] = {}
        for rule in rules:
            interval = self._interval(rule)
            entry = self._entries.get(rule["id"])
            if entry is None or entry.interval != interval:
                # A new rule, or one stored again with another schedule, runs at once.
                entry = _Entry(interval, now)
            current[rule["id"]] = entry
        self._entries = current
        return [rule for rule in rules if current[rule["id"]].next_due <= now]

    def mark_run(self, rules: Sequence[Rule], finished: datetime) -> None:
        """Move each rule's due time one interval on, past ``finished`` (when the round ended)."""
        for rule in rules:
            entry = self._entries.get(rule["id"])
            if entry is None:
                continue
            entry.next_due += entry.interval
            if entry.next_due <= finished:
                skipped = math.floor((finished - entry.next_due) / entry.interval) + 1
                entry.next_due += skipped * entry.interval
                logger.info("rule %s skips %d run(s) because the round ran past them", rule["id"], skipped)

    def next_due(self) -> datetime | None:
        """Return the earliest due time, or None when no rule is scheduled."""
        return min((entry.next_due for entry in self._entries.values()), default=None)

    def _interval(self, rule: Rule) -> timedelta:
        interval, warning = rule_interval(rule)
        if warning is not None:
            key = (rule["id"], str(rule.get("schedule")))
            if key not in self._warned:
                self._warned.add(key)
                self._warn(warning)
        return interval


# Clocks


class Clock(Protocol):
    """Schedule time for :class:`WatchLoop`."""

    def now(self) -> datetime:
        """Return the current schedule time, timezone-aware."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of schedule time, returning early once the loop's stop event is set."""
        ...


class ScaledClock:
    """The monotonic clock, with schedule time running ``1 / scale`` times as fast as real time.

    With scale 1 (outside tests) schedule time is real time. Waiting uses
    :meth:`threading.Event.wait`, so a signal handler that sets ``stop`` ends a wait at once.
    """

    def __init__(self, stop: threading.Event, scale: float = 1.0) -> None:
        self._stop = stop
        self._scale = scale
        self._origin = datetime.now(UTC)
        self._origin_monotonic = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._origin_monotonic) / self._scale
        return self._origin + timedelta(seconds=elapsed)

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds * self._scale)


def time_scale_from_environment() -> float:
    """Read CERTPOSTURE_WATCH_TIME_SCALE, a testing aid: 0.001 makes a 1m schedule last 60 ms."""
    value = os.environ.get(TIME_SCALE_VARIABLE)
    if value is None or value == "":
        return 1.0
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(
            f"{TIME_SCALE_VARIABLE}={value!r} is not a positive number; unset it, or give a factor such as 0.001"
        )
    return scale


# Reporting


@dataclass
class RoundSummary:
    """The results, counts and record count of one round."""

    number: int
    evaluated_at: datetime
    document: dict[str, Any]
    rules_run: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    records: int = 0
    collection_errors: int = 0


class Reporter(Protocol):
    """Receives the output of the watch loop."""

    def round_finished(self, summary: RoundSummary) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


def format_round_line(summary: RoundSummary) -> str:
    """Format the stderr line of a round: time, round number, rules run, counts per status, records logged."""
    counts = summary.counts
    line = (
        f"{format_utc(summary.evaluated_at)} round {summary.number}: {summary.rules_run} rule(s) run: "
        f"{counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not_applicable']} not applicable, {counts['error']} error; "
        f"{summary.records} record(s) logged"
    )
    if summary.collection_errors:
        line += f"; {summary.collection_errors} collection error(s)"
    return line


class StreamReporter:
    """Writes round lines and diagnostics to ``diagnostics`` and each round's results to stdout.

    ``json`` prints each round's results document as one line (JSON Lines);
    ``table`` prints the results table of each round.
    """

    def __init__(self, output_format: str, diagnostics: TextIO) -> None:
        self._format = output_format
        self._diagnostics = diagnostics

    def round_finished(self, summary: RoundSummary) -> None:
        if self._format == "table":
            emit(render_results_table(summary.document).encode())
        else:
            emit(orjson.dumps(summary.document) + b"\n")
        self._write(format_round_line(summary))

    def warning(self, message: str) -> None:
        self._write(f"warning: {printable(message)}")

    def error(self, message: str) -> None:
        self._write(f"error: {printable(message)}")

    def note(self, message: str) -> None:
        self._write(f"note: {printable(message)}")

    def _write(self, line: str) -> None:
        print(line, file=self._diagnostics, flush=True)


# Rounds


@dataclass(frozen=True)
class WatchOptions:
    """The ``check`` options that apply to every round."""

    rule_id: str | None = None
    paths: tuple[str, ...] = ()
    nssdbs: tuple[str, ...] = ()
    trust_stores: tuple[str, ...] = ()
    hostname: str | None = None
    serial_number: str | None = None
    extra_policies: tuple[Path, ...] = ()
    pem_limits: PemLimits = DEFAULT_LIMITS


class RoundRunner:
    """Runs one round: collect, evaluate and log each due rule, then report the round.

    Every due rule is evaluated on its own, so an error in one rule does not
    touch the others, and a rule that cannot be evaluated is reported as
    ``error`` and never as passed. Facts come from each rule's own locations,
    or from ``--path`` and ``--nssdb`` when given, collected once per round.
    An error message is printed when it first appears. It is not printed again
    while the same error repeats in later rounds, but the round line still counts it.
    """

    def __init__(self, store: Store, options: WatchOptions, recorder: Recorder, reporter: Reporter) -> None:
        self._store = store
        self._options = options
        self._recorder = recorder
        self._reporter = reporter
        self._last_errors: dict[str, str] = {}

    def load_rules(self) -> list[Rule]:
        if self._options.rule_id is not None:
            return [self._store.get_rule(self._options.rule_id)]
        return self._store.list_rules()

    def run(self, number: int, rules: Sequence[Rule]) -> RoundSummary:
        """Run the due ``rules`` as round ``number``.

        Raises InputError when a collect option is invalid (such as an empty
        ``--hostname``), since every later round would fail the same way.
        """
        evaluated_at = datetime.now(UTC).replace(microsecond=0)
        summary = RoundSummary(number, evaluated_at, {})
        device: dict[str, str | None] = {"hostname": None, "serial_number": None}
        results: list[dict[str, Any]] = []

        shared: Facts | CertpostureError | None = None
        if self._options.paths or self._options.nssdbs or self._options.trust_stores:
            shared = self._try_collect(None)
            if isinstance(shared, Facts):
                summary.collection_errors = len(shared.errors)

        for rule in rules:
            collected = shared if shared is not None else self._try_collect(rule["id"])
            if isinstance(collected, NotFoundError):
                logger.info("rule %s was removed while watching; it no longer runs", rule["id"])
                continue
            summary.rules_run += 1
            facts: Facts | None = None
            if isinstance(collected, CertpostureError):
                document = self._error_document(rule, evaluated_at, collected)
            else:
                facts = collected
                if shared is None:
                    summary.collection_errors += len(facts.errors)
                document = self._evaluate(rule, facts, evaluated_at)
            if document is None:
                summary.counts["error"] += 1
                continue

            results.extend(document["results"])
            if facts is not None:
                device = document["device"]
            for result in document["results"]:
                summary.counts[result["status"]] = summary.counts.get(result["status"], 0) + 1
            summary.records += self._record(rule, document, facts)

        summary.document = {"evaluated_at": format_utc(evaluated_at), "device": device, "results": results}
        return summary

    def _try_collect(self, rule_id: str | None) -> Facts | CertpostureError:
        try:
            return posture.collect_facts(
                self._store,
                rule_id=rule_id,
                paths=self._options.paths,
                nssdbs=self._options.nssdbs,
                trust_stores=self._options.trust_stores,
                hostname=self._options.hostname,
                serial_number=self._options.serial_number,
                pem_limits=self._options.pem_limits,
            )
        except NotFoundError as error:
            return error
        except InputError:
            raise
        except CertpostureError as error:
            return error

    def _evaluate(self, rule: Rule, facts: Facts, evaluated_at: datetime) -> dict[str, Any] | None:
        try:
            document, errors = posture.evaluate_facts(
                self._store,
                facts,
                at=evaluated_at,
                rule_id=rule["id"],
                extra_policies=self._options.extra_policies,
            )
        except CertpostureError as error:
            return self._error_document(rule, evaluated_at, error)
        if errors:
            self._error(f"rule {rule['id']}", "; ".join(dict.fromkeys(str(error) for error in errors)))
        else:
            self._last_errors.pop(f"rule {rule['id']}", None)
        return document

    def _error_document(
        self, rule: Rule, evaluated_at: datetime, error: CertpostureError
    ) -> dict[str, Any] | None:
        """Build the results of a rule that could not be evaluated: status ``error``, as evaluate reports it."""
        self._error(f"rule {rule['id']}", str(error))
        try:
            document, _ = posture.evaluate_facts(
                self._store, None, at=evaluated_at, rule_id=rule["id"], facts_error=error
            )
        except CertpostureError as store_error:
            # The store cannot return the rule (damaged, or the rule was just removed).
            logger.debug("rule %s: no error result: %s", rule["id"], store_error)
            return None
        return document

    def _record(self, rule: Rule, document: dict[str, Any], facts: Facts | None) -> int:
        try:
            records = self._recorder(self._store, document, facts, [rule])
        except CertpostureError as error:
            self._error("posture log", f"the results were not logged: {error}")
            return 0
        self._last_errors.pop("posture log", None)
        return records

    def _error(self, subject: str, message: str) -> None:
        if self._last_errors.get(subject) != message:
            self._reporter.error(f"{subject}: {message}")
        self._last_errors[subject] = message


# The loop


class WatchLoop:
    """Scheduling loop: wake when a rule is due (and at least once a minute) and run the due rules as one round.

    The loop ends when ``stop`` is set, after the round in progress, or after
    ``max_rounds`` rounds. A round runs only when at least one rule is due.
    An error while reading the rules is reported when its message first
    appears, and the loop reads the rules again a minute later.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        stop: threading.Event,
        load_rules: Callable[[], list[Rule]],
        run_round: Callable[[int, Sequence[Rule]], RoundSummary],
        reporter: Reporter,
        max_rounds: int | None = None,
    ) -> None:
        self._clock = clock
        self._stop = stop
        self._load_rules = load_rules
        self._run_round = run_round
        self._reporter = reporter
        self._max_rounds = max_rounds
        self._scheduler = Scheduler(reporter.warning)
        self._load_error: str | None = None
        self._warned_empty = False
        self.rounds = 0

    def run(self) -> int:
        """Run until stopped; return the number of rounds run."""
        while not self._stop.is_set():
            rules = self._rules()
            if rules is not None:
                due = self._scheduler.due(rules, self._clock.now())
                if due:
                    self.rounds += 1
                    summary = self._run_round(self.rounds, due)
                    self._scheduler.mark_run(due, self._clock.now())
                    self._reporter.round_finished(summary)
                    if self._max_rounds is not None and self.rounds >= self._max_rounds:
                        break
            self._clock.sleep(self._seconds_to_sleep(rules is not None))
        return self.rounds

    def _rules(self) -> list[Rule] | None:
        try:
            rules = self._load_rules()
        except CertpostureError as error:
            message = str(error)
            if message != self._load_error:
                self._reporter.error(f"{message} (watching continues; the store is read again every minute)")
            self._load_error = message
            return None
        if self._load_error is not None:
            self._reporter.note("the rules can be read again; watching resumes")
            self._load_error = None
        if not rules and not self._warned_empty:
            self._reporter.warning(
                "no rules stored; add one with `certposture rules add FILE` (the store is read every minute)"
            )
        self._warned_empty = not rules
        return rules

    def _seconds_to_sleep(self, rules_loaded: bool) -> float:
        wake = self._clock.now() + STORE_REFRESH
        next_due = self._scheduler.next_due() if rules_loaded else None
        if next_due is not None:
            wake = min(wake, next_due)
        return max(0.0, (wake - self._clock.now()).total_seconds())


# CLI entry point


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Set ``stop`` on the first SIGINT or SIGTERM; the next one acts as it did before (Ctrl-C aborts)."""
    received: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in watched}

    def handle(number: int, frame: FrameType | None) -> None:
        received.append(number)
        stop.set()
        for restored, handler in previous.items():
            signal.signal(restored, handler)

    for number in watched:
        signal.signal(number, handle)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def watch_check(
    store: Store,
    *,
    rule_id: str | None,
    paths: Sequence[str],
    nssdbs: Sequence[str],
    hostname: str | None,
    serial_number: str | None,
    at: str | None,
    policies: Sequence[str],
    output_format: str,
    max_rounds: int | None,
    trust_stores: Sequence[str] = (),
    pem_limits: PemLimits = DEFAULT_LIMITS,
    recorder: Recorder = posturelog.record_results,
) -> int:
    """Run ``check --watch`` until SIGINT or SIGTERM (or ``max_rounds`` rounds); return the exit code.

    The exit code is 0 after SIGTERM or ``max_rounds`` rounds and 130 after SIGINT.
    Invalid options raise InputError, at the latest in the first round.
    """
    if at is not None:
        raise InputError("--at cannot be used with --watch, because each round evaluates at the time it runs")
    scale = time_scale_from_environment()
    options = WatchOptions(
        rule_id=rule_id,
        paths=tuple(paths),
        nssdbs=tuple(nssdbs),
        trust_stores=tuple(trust_stores),
        hostname=hostname,
        serial_number=serial_number,
        extra_policies=tuple(extra_policy_dirs(policies)),
        pem_limits=pem_limits,
    )
    reporter = StreamReporter(output_format, sys.stderr)
    runner = RoundRunner(store, options, recorder, reporter)
    if rule_id is not None:
        # An unknown --rule is a usage error now, but a rule removed later only ends its runs.
        runner.load_rules()

    stop = threading.Event()
    with _stop_on_signals(stop) as received:
        loop = WatchLoop(
            clock=ScaledClock(stop, scale),
            stop=stop,
            load_rules=runner.load_rules,
            run_round=runner.run,
            reporter=reporter,
            max_rounds=max_rounds,
        )
        rounds = loop.run()

    if received:
        name = signal.Signals(received[0]).name
        reporter.note(f"stopped by {name} after {rounds} round(s)")
        return EXIT_INTERRUPTED if received[0] == signal.SIGINT else EXIT_STOPPED
    reporter.note(f"stopped after {rounds} round(s)")
    return EXIT_STOPPED
