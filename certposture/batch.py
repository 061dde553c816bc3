"""Batch evaluation of a fleet's facts: JSON Lines in, one results line per device out, in input order.

Each input line is one facts document, as ``certposture collect`` prints it
(compact, or indented and then joined onto one line by the tool that built the
file). Each output line is the results document that ``evaluate`` prints for
that device, with ``line`` (the input line number) first and ``errors`` (the
messages of that device's errors) last. A line that cannot be read or
validated gets a record in which every rule has status ``error``, and the
lines after it are evaluated as usual.

The input is read and written as a stream: at most a few chunks of lines are
held at a time, however long the input. With ``jobs`` above 1, chunks go to
worker processes, each of which loads the policies once, and the records are
written in input order. Every device is evaluated at the same time, the time
the batch started or ``--at``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from certposture import posture, posturelog
from certposture.errors import CertpostureError, FactsError, StoreError
from certposture.files import MAX_FACTS_INPUT, emit
from certposture.progress import Progress
from certposture.store import PostureLogRow, Store

if TYPE_CHECKING:
    from certposture.proofcheck import ProofVerifier

logger = logging.getLogger(__name__)

# Lines are sent to worker processes in chunks, so that the cost of passing
# them between processes is paid per chunk. A chunk closes at whichever limit
# it reaches first.
CHUNK_LINES = 64
CHUNK_BYTES = 1024 * 1024
# Chunks in flight per worker: enough to keep each worker busy while the
# parent writes, few enough that memory does not grow with the input.
CHUNKS_PER_JOB = 3
# The fix named when a line is not JSON: most often the documents were pretty-printed.
JSON_LINE_FIX = "put each whole facts document on one line, for example with `jq -c .`"
# More workers than this is a typing mistake, not a machine's core count.
MAX_JOBS = 256
# Posture-log rows are appended in one transaction per this many devices.
POSTURE_LOG_DEVICES = 1000
# The maximum length of a line read as one facts document; longer lines become error records.
MAX_LINE = MAX_FACTS_INPUT
# Error messages printed on stderr before the rest are only counted; every
# error is in its device's record.
SHOWN_ERRORS = 20


@dataclass(frozen=True)
class BatchSettings:
    """The rules, signing certificates, time and policy folders that every process evaluates with.

    With ``require_proof`` (a nonce), every device needs a verified proof of
    possession: ``nonce_problem`` is why the nonce cannot be accepted (decided
    once, before the batch starts), and ``signer_ders`` are the stored signing
    certificates as (id, DER), which every process loads for the check.
    """

    rules: list[dict[str, Any]]
    signing_certificates: list[dict[str, Any]]
    evaluated_at: datetime
    policy_dirs: list[str]
    require_proof: str | None = None
    nonce_problem: str | None = None
    signer_ders: list[tuple[str, bytes]] = field(default_factory=list)

    def proof_verifier(self) -> ProofVerifier | None:
        if self.require_proof is None:
            return None
        from cryptography import x509

        from certposture.proofcheck import ProofVerifier
        from collector.signers import Signer

        signers = [Signer(item_id, x509.load_der_x509_certificate(der)) for item_id, der in self.signer_ders]
        return ProofVerifier(nonce=self.require_proof, nonce_problem=self.nonce_problem, signers=signers)


@dataclass
class LineOutcome:
    """One device's record (a JSON line), its exit code, its error messages and its posture-log rows."""

    line: int
    record: bytes
    exit_code: int
    errors: list[str]
    rows: list[PostureLogRow]
    size: int


@dataclass
class BatchSummary:
    """Counts over the whole batch; ``exit_code`` is the most severe of the devices' codes."""

    devices: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    blank_lines: int = 0
    exit_code: int = posture.EXIT_PASSED
    error_messages: list[str] = field(default_factory=list)
    messages: int = 0
    warning: str | None = None

    def add(self, outcome: LineOutcome) -> None:
        self.devices += 1
        if outcome.exit_code == posture.EXIT_ERROR:
            self.errors += 1
        elif outcome.exit_code == posture.EXIT_FAILED:
            self.failed += 1
        else:
            self.passed += 1
        self.exit_code = max(self.exit_code, outcome.exit_code)
        self.messages += len(outcome.errors)
        for message in outcome.errors:
            if len(self.error_messages) < SHOWN_ERRORS:
                self.error_messages.append(message)


class LineEvaluator:
    """Turns one input line into its record; each worker process keeps one."""

    def __init__(self, settings: BatchSettings) -> None:
        self._rules = settings.rules
        self._posture = posture.PostureEvaluator(
            settings.rules,
            settings.signing_certificates,
            settings.evaluated_at,
            [Path(directory) for directory in settings.policy_dirs],
            verifier=settings.proof_verifier(),
        )

    def evaluate(self, line: int, payload: bytes | str) -> LineOutcome:
        """Evaluate ``payload`` (the line's bytes, or a message saying why it could not be read)."""
        facts = None
        errors: list[CertpostureError] = []
        try:
            if isinstance(payload, str):
                raise FactsError(payload)
            facts = posture.parse_facts(payload, f"line {line}", JSON_LINE_FIX)
            results, errors = self._posture.evaluate(facts)
        except CertpostureError as error:
            errors = [error]
            results = [posture.error_result(rule, error) for rule in self._rules]
        except Exception as error:
            # One device's unexpected failure must not stop the fleet; it becomes that device's error.
            logger.debug("line %d: unexpected error", line, exc_info=True)
            unexpected = CertpostureError(f"line {line}: unexpected {type(error).__name__}: {error}")
            errors = [unexpected]
            results = [posture.error_result(rule, unexpected) for rule in self._rules]
        document = self._posture.document(facts, results)
        messages = list(dict.fromkeys(_with_line(line, str(error)) for error in errors))
        record = orjson.dumps({"line": line, **document, "errors": messages}) + b"\n"
        rows = posturelog.build_rows(document, facts, self._rules)
        code = posture.EXIT_ERROR if errors else posture.exit_code(results)
        size = len(payload) if isinstance(payload, bytes) else 0
        return LineOutcome(line, record, code, messages, rows, size)


def _with_line(line: int, message: str) -> str:
    prefix = f"line {line}: "
    return message if message.startswith(prefix) else prefix + message


def read_lines(
    stream: BinaryIO, max_bytes: int = MAX_FACTS_INPUT
) -> Iterator[tuple[int, bytes | str | None]]:
    """Yield (line number, bytes) for each line; a line over ``max_bytes`` yields a message instead.

    A blank line yields None, so that it is counted but gets no record. A
    line that is too long is read to its end and dropped, never held whole.
    """
    number = 0
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                rest = stream.readline(CHUNK_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield (
                number,
                (
                    f"line {number}: the line is longer than {max_bytes} bytes, the limit for one facts document; "
                    "split the input so that each line holds one device's facts"
                ),
            )
            continue
        if not line.strip():
            yield number, None
            continue
        yield number, line


def run_batch(
    stream: BinaryIO,
    settings: BatchSettings,
    *,
    jobs: int,
    store: Store,
    progress: Progress,
) -> BatchSummary:
    """Evaluate every line of ``stream`` and write the records to standard output in input order.

    A device's rows go to the posture log only once its record is written, so
    that after an interruption the log and the output hold the same devices.
    SIGTERM stops the run like Ctrl-C, after the worker processes are ended
    and the log is written, and raises :class:`Terminated`.
    """
    summary = BatchSummary()
    log = _PostureLogWriter(store)
    pending: list[LineOutcome] = []
    _stop.requested = False
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        for outcome in _outcomes(stream, settings, jobs, summary):
            summary.add(outcome)
            pending.append(outcome)
            progress.update(summary.devices, outcome.size, summary.errors)
            if len(pending) >= CHUNK_LINES:
                _write(pending, log)
        _write(pending, log)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        log.flush()
        progress.finish(summary.devices, summary.errors)
        summary.warning = log.warning
    return summary


def _write(outcomes: list[LineOutcome], log: _PostureLogWriter) -> None:
    """Write the records, then hand their rows to the posture log; a record not written is not logged.

    SIGTERM waits until both are done, so that no record is cut short.
    """
    if not outcomes:
        return
    _stop.writing = True
    try:
        emit(b"".join(outcome.record for outcome in outcomes))
        for outcome in outcomes:
            log.add(outcome)
        outcomes.clear()
    finally:
        _stop.writing = False
    if _stop.requested:
        raise _terminated()


class Terminated(CertpostureError):
    """SIGTERM stopped the batch (exit code 143, as a shell reports a process that SIGTERM ended)."""

    exit_code = 143


class _StopState:
    writing = False
    requested = False


_stop = _StopState()


def _terminated() -> Terminated:
    return Terminated("stopped by SIGTERM; the records written so far are complete and in the posture log")


def _terminate(signum: int, frame: Any) -> None:
    if _stop.writing:
        _stop.requested = True
        return
    raise _terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _outcomes(
    stream: BinaryIO, settings: BatchSettings, jobs: int, summary: BatchSummary
) -> Iterator[LineOutcome]:
    lines = _counting_blanks(read_lines(stream, MAX_LINE), summary)
    if jobs == 1:
        evaluator = LineEvaluator(settings)
        for number, payload in lines:
            yield evaluator.evaluate(number, payload)
        return
    yield from _parallel_outcomes(lines, settings, jobs)


def _counting_blanks(
    lines: Iterator[tuple[int, bytes | str | None]], summary: BatchSummary
) -> Iterator[tuple[int, bytes | str]]:
    for number, payload in lines:
        if payload is None:
            summary.blank_lines += 1
        else:
            yield number, payload


def _chunks(lines: Iterator[tuple[int, bytes | str]]) -> Iterator[list[tuple[int, bytes | str]]]:
    chunk: list[tuple[int, bytes | str]] = []
    size = 0
    for number, payload in lines:
        chunk.append((number, payload))
        size += len(payload)
        if len(chunk) >= CHUNK_LINES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _parallel_outcomes(
    lines: Iterator[tuple[int, bytes | str]], settings: BatchSettings, jobs: int
) -> Iterator[LineOutcome]:
    in_flight: collections.deque[tuple[int, concurrent.futures.Future[list[LineOutcome]]]] = (
        collections.deque()
    )
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=_QuietSpawnContext(),
        initializer=_start_worker,
        initargs=(settings, os.getpid()),
    )
    try:
        for chunk in _chunks(lines):
            in_flight.append((chunk[0][0], pool.submit(_evaluate_chunk, chunk)))
            if len(in_flight) >= jobs * CHUNKS_PER_JOB:
                yield from _collect(in_flight.popleft())
        while in_flight:
            yield from _collect(in_flight.popleft())
    except BaseException:
        # Ctrl-C, SIGTERM, a closed output or a dead worker: end the workers now instead of
        # waiting for their chunks, so that none is left running.
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)


def _end_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    # NOTE: the executor has no public way to stop its processes, so this reads its private _processes
    # table (CPython 3.11). Without it, the workers finish the chunks already sent to them, then exit.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=5)


class _QuietSpawnProcess(multiprocessing.context.SpawnProcess):
    """A spawned worker that ignores SIGINT from its first instruction: the parent alone handles Ctrl-C.

    An ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler, so a Ctrl-C during a worker's imports cannot
    kill it halfway with a traceback.
    """

    def start(self) -> None:
        if not _in_main_thread():
            super().start()
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            super().start()
        finally:
            signal.signal(signal.SIGINT, previous)


class _QuietSpawnContext(multiprocessing.context.SpawnContext):
    # spawn, not fork: the parent has an open SQLite connection, which a forked child must not share.
    Process = _QuietSpawnProcess


def _collect(entry: tuple[int, concurrent.futures.Future[list[LineOutcome]]]) -> list[LineOutcome]:
    first_line, future = entry
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise CertpostureError(
            f"a worker process stopped while evaluating the chunk starting at line {first_line}; "
            f"the records before it were written. Evaluate the lines from {first_line} on again "
            f"(tail -n +{first_line} FILE, whose records then count lines from 1), or with --jobs 1 to see the error"
        ) from None


_worker: LineEvaluator | None = None


def _start_worker(settings: BatchSettings, parent: int) -> None:
    # One evaluator per worker process, built once by the pool's initializer.
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _worker = LineEvaluator(settings)


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed with SIGKILL, say), instead of waiting on a dead pipe."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _evaluate_chunk(chunk: Sequence[tuple[int, bytes | str]]) -> list[LineOutcome]:
    if _worker is None:
        raise RuntimeError("worker process was not initialized")
    return [_worker.evaluate(number, payload) for number, payload in chunk]


class _PostureLogWriter:
    """Appends posture-log rows in batches; after the first failure, writes nothing more and keeps the warning."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._rows: list[PostureLogRow] = []
        self._devices = 0
        self._first_line: int | None = None
        self.warning: str | None = None

    def add(self, outcome: LineOutcome) -> None:
        if self.warning is not None:
            return
        if self._first_line is None:
            self._first_line = outcome.line
        self._rows.extend(outcome.rows)
        self._devices += 1
        if self._devices >= POSTURE_LOG_DEVICES:
            self.flush()

    def flush(self) -> None:
        if self.warning is not None or not self._rows:
            return
        try:
            self._store.append_posture_log(self._rows)
        except StoreError as error:
            logger.debug("posture log not written: %s", error)
            self.warning = f"posture log not written from line {self._first_line} on: {error}"
        self._rows = []
        self._devices = 0
        self._first_line = None
