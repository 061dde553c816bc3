"""Discover and run Rego unit tests in-process with regorus, as ``opa test`` does.

Every given ``.rego`` file is loaded into one engine, so a test can refer to
every package and the tests of one package may be split across files. A test is a
complete rule with a plain name that starts with ``test_``, in any file.
Functions, partial set and object rules and rules with a dotted head are never
tests. Rules named ``todo_test_*`` are reported as skipped and not evaluated.

A test passes only when it evaluates to ``true``. ``false``, any other value
and an undefined rule fail, and an evaluation error is an error. Two
definitions of one test name in one package are an error too, because the
engine would merge them into a single rule and one of them would never run on
its own. A ``default`` definition next to one other definition is allowed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regorus

from certposture.engine import describe_engine_error
from certposture.regoast import check_function_calls, coverable_lines, plain_rule_name, render_reference
from certposture.regodata import add_data, engine_message
from certposture.regofiles import MAX_REGO_FILE, RegoLoadError, read_text, rego_file_too_large, rego_files

TEST_RULE_PREFIX = "test_"
SKIPPED_RULE_PREFIX = "todo_test_"
TEST_FILE_SUFFIX = "_test.rego"

STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_ERROR = "error"
STATUS_SKIP = "skip"
STATUSES = (STATUS_PASS, STATUS_FAIL, STATUS_ERROR, STATUS_SKIP)

# eval_rule_as_json returns this JSON string for an undefined rule. A rule whose value is
# the string "<undefined>" reads as undefined too, and either way the test fails.
_UNDEFINED_JSON = '"<undefined>"'


@dataclass(frozen=True)
class SourceLocation:
    """A file as it was named on the command line or found in a folder, and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class RegoTest:
    """One test rule: where it is defined and whether it is skipped.

    ``definitions`` lists every non-default definition when there are several,
    which makes the test an error instead of running it.
    """

    package: str
    name: str
    location: SourceLocation
    skipped: bool = False
    definitions: tuple[SourceLocation, ...] = ()

    @property
    def full_name(self) -> str:
        """Rule reference, for example ``data.certposture.posture_test.test_success_passed``."""
        return f"{self.package}.{self.name}"

    @property
    def duplicated(self) -> bool:
        return len(self.definitions) > 1


@dataclass(frozen=True)
class RegoTestResult:
    """Outcome of one test.

    ``value`` is the rule's value as JSON data (Rego sets become arrays), or
    None when the rule is undefined (``defined`` is then False) or was not
    evaluated. ``duration_ns`` covers the evaluation only.
    """

    test: RegoTest
    status: str
    duration_ns: int = 0
    value: Any = None
    defined: bool = False
    prints: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class FileCoverage:
    """Lines of one policy file that the tests evaluated, and those they did not."""

    file: str
    covered: tuple[int, ...]
    not_covered: tuple[int, ...]

    @property
    def percentage(self) -> float:
        return coverage_percentage(len(self.covered), len(self.not_covered))


@dataclass(frozen=True)
class CoverageReport:
    """Line coverage of the loaded files that contain no tests, in load order."""

    files: tuple[FileCoverage, ...]

    @property
    def covered_count(self) -> int:
        return sum(len(file.covered) for file in self.files)

    @property
    def not_covered_count(self) -> int:
        return sum(len(file.not_covered) for file in self.files)

    @property
    def percentage(self) -> float:
        return coverage_percentage(self.covered_count, self.not_covered_count)


@dataclass(frozen=True)
class RegoTestRun:
    """Results of the tests that ran, in discovery order, and the coverage when it was measured."""

    results: tuple[RegoTestResult, ...]
    coverage: CoverageReport | None = None
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        object.__setattr__(self, "counts", counts)

    @property
    def failed(self) -> bool:
        """True when a test failed or had an error; skipped tests do not count."""
        return self.counts[STATUS_FAIL] > 0 or self.counts[STATUS_ERROR] > 0


def coverage_percentage(covered: int, not_covered: int) -> float:
    """Return covered lines as a percentage of all lines; a file without coverable lines is 100% covered."""
    total = covered + not_covered
    return 100.0 if total == 0 else covered * 100.0 / total


class RegoTestSuite:
    """Rego files and data documents loaded into one engine, and the tests found in them.

    Build one with :func:`load_suite`.
    """

    def __init__(
        self,
        engine: Any,
        files: tuple[str, ...],
        tests: tuple[RegoTest, ...],
        test_files: frozenset[str],
        coverable_lines: dict[str, tuple[int, ...]],
    ) -> None:
        self._engine = engine
        self.files = files
        self.tests = tests
        self.test_files = test_files
        self.coverable_lines = coverable_lines
        engine.set_gather_prints(True)

    def select(self, pattern: re.Pattern[str] | None) -> list[RegoTest]:
        """Return the tests whose full name contains a match of ``pattern`` (``re.search``), or all of them."""
        if pattern is None:
            return list(self.tests)
        return [test for test in self.tests if pattern.search(test.full_name)]

    def run_test(self, test: RegoTest) -> RegoTestResult:
        """Evaluate one test and collect the output of its ``print`` calls."""
        if test.skipped:
            return RegoTestResult(test, STATUS_SKIP)
        if test.duplicated:
            places = ", ".join(str(location) for location in test.definitions)
            return RegoTestResult(
                test,
                STATUS_ERROR,
                error=(
                    f"{test.name} is defined {len(test.definitions)} times in package {test.package} "
                    f"({places}); the engine would merge the definitions into one test, "
                    "so give each test its own name"
                ),
            )

        started = time.perf_counter_ns()
        try:
            raw = self._engine.eval_rule_as_json(test.full_name)
        except RuntimeError as error:
            duration = time.perf_counter_ns() - started
            prints = tuple(self._engine.take_prints())
            return RegoTestResult(
                test, STATUS_ERROR, duration, prints=prints, error=describe_engine_error(error)
            )
        duration = time.perf_counter_ns() - started
        prints = tuple(self._engine.take_prints())

        if raw.strip() == _UNDEFINED_JSON:
            return RegoTestResult(test, STATUS_FAIL, duration, prints=prints)
        value = json.loads(raw)
        status = STATUS_PASS if value is True else STATUS_FAIL
        return RegoTestResult(test, status, duration, value=value, defined=True, prints=prints)

    def run(
        self, tests: Iterable[RegoTest], *, coverage: bool = False, coverage_exclude: Collection[str] = ()
    ) -> RegoTestRun:
        """Run ``tests`` in order.

        With ``coverage``, also measure line coverage of the files without
        tests, other than the files named in ``coverage_exclude``.
        """
        self._engine.set_enable_coverage(coverage)
        if coverage:
            self._engine.clear_coverage_data()
        results = tuple(self.run_test(test) for test in tests)
        report = self._coverage_report(coverage_exclude) if coverage else None
        return RegoTestRun(results, report)

    def _coverage_report(self, exclude: Collection[str]) -> CoverageReport:
        # get_coverage_report_as_json: {"files": [{"path", "code", "covered": [line...], "not_covered": [...]}]}
        # regorus lists only the files in which it evaluated at least one expression. Every line of
        # a file it left out is not covered, so that file counts as 0%, not as a file without lines.
        raw = json.loads(self._engine.get_coverage_report_as_json())
        by_file = {entry["path"]: entry for entry in raw.get("files", [])}
        files = []
        for name in self.files:
            if name in self.test_files or name in exclude:
                continue
            entry = by_file.get(name)
            if entry is None:
                covered: set[int] = set()
                not_covered = set(self.coverable_lines.get(name, ()))
            else:
                covered = set(entry.get("covered", []))
                not_covered = set(entry.get("not_covered", [])) - covered
            files.append(FileCoverage(name, tuple(sorted(covered)), tuple(sorted(not_covered))))
        return CoverageReport(tuple(files))


def load_suite(paths: Sequence[Path], data_files: Sequence[Path] = ()) -> RegoTestSuite:
    """Load the ``.rego`` files of ``paths`` and the data documents of ``data_files`` into one engine.

    Folders are searched recursively for ``*.rego``, and a file named directly
    must end in ``.rego``. Raises :class:`RegoLoadError` when a path is missing,
    a folder contains no Rego file, a file cannot be read or parsed, a data
    document is invalid or cannot be merged, or the policies do not compile.
    """
    engine = regorus.Engine()
    files = rego_files(paths)
    for file in files:
        text = read_text(Path(file), MAX_REGO_FILE, rego_file_too_large)
        try:
            engine.add_policy(file, text)
        except RuntimeError as error:
            raise RegoLoadError(_describe_policy_error(error)) from None
    for data_file in data_files:
        add_data(engine, data_file)

    try:
        # Evaluating a constant makes regorus check every loaded module for errors such as
        # unsafe variables, as opa test compiles the modules before running tests. regorus
        # resolves function names only during evaluation, so check_function_calls finds
        # calls to unknown functions.
        engine.eval_query("true")
    except RuntimeError as error:
        raise RegoLoadError(f"{engine_message(error)}; the policies do not compile") from None

    modules = {module["source"]["file"]: module for module in json.loads(engine.get_ast_as_json())}
    check_function_calls(modules, files)
    tests, test_files = _discover(modules, files)
    coverable = {
        file: tuple(sorted(coverable_lines(modules[file]["ast"]))) for file in files if file not in test_files
    }
    return RegoTestSuite(engine, tuple(files), tests, test_files, coverable)


# Fixes for the per-file limits that regorus 0.13.0 sets when it parses a policy (its defaults,
# which the posture engine uses too), keyed by a fragment of the regorus message.
_POLICY_LIMIT_FIXES = (
    (
        "maximum allowed policy file size",
        "regorus accepts policy files of at most 1 MiB, so split the policy into smaller files",
    ),
    (
        "maximum column width",
        "regorus accepts lines of code shorter than 1024 columns, so break the line",
    ),
    (
        "maximum allowed line count",
        "regorus accepts at most 20000 lines per policy file, so split the policy into smaller files",
    ),
)


def _describe_policy_error(error: BaseException) -> str:
    message = engine_message(error)
    for fragment, fix in _POLICY_LIMIT_FIXES:
        if fragment in message:
            return f"{message}; {fix}"
    return f"{message}; fix the Rego syntax"


def _discover(
    modules: dict[str, dict[str, Any]], files: Sequence[str]
) -> tuple[tuple[RegoTest, ...], frozenset[str]]:
    """Find the test rules in the modules (from ``get_ast_as_json``, by file) and the files that contain them."""
    definitions: dict[tuple[str, str], list[tuple[SourceLocation, bool]]] = {}
    test_files = {file for file in files if file.endswith(TEST_FILE_SUFFIX)}

    for file in files:
        module = modules[file]["ast"]
        package = render_reference(module["package"]["refr"])
        for rule in module["rules"]:
            named = plain_rule_name(rule)
            if named is None:
                continue
            name, line, is_default = named
            if name.startswith((TEST_RULE_PREFIX, SKIPPED_RULE_PREFIX)):
                definitions.setdefault((package, name), []).append((SourceLocation(file, line), is_default))
                test_files.add(file)

    tests = []
    for (package, name), places in definitions.items():
        skipped = name.startswith(SKIPPED_RULE_PREFIX)
        bodies = [location for location, is_default in places if not is_default]
        location = bodies[0] if bodies else places[0][0]
        duplicates = tuple(bodies) if len(bodies) > 1 and not skipped else ()
        tests.append(RegoTest(package, name, location, skipped, duplicates))
    return tuple(tests), frozenset(test_files)
