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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import regorus
import yaml

from certposture.engine import describe_engine_error
from certposture.errors import CertpostureError, InputError
from certposture.files import read_input

TEST_RULE_PREFIX = "test_"
SKIPPED_RULE_PREFIX = "todo_test_"
TEST_FILE_SUFFIX = "_test.rego"

STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_ERROR = "error"
STATUS_SKIP = "skip"
STATUSES = (STATUS_PASS, STATUS_FAIL, STATUS_ERROR, STATUS_SKIP)

# Size limits per file. Policies are a few KiB, and data documents may be exported inventories.
MAX_REGO_FILE = 16 * 1024 * 1024
MAX_DATA_FILE = 64 * 1024 * 1024

# eval_rule_as_json returns this JSON string for an undefined rule. A rule whose value is
# the string "<undefined>" reads as undefined too, and either way the test fails.
_UNDEFINED_JSON = '"<undefined>"'
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RegoLoadError(CertpostureError):
    """A Rego or data file is missing, unreadable, invalid or does not compile (exit code 1, as ``opa test``)."""

    exit_code = 1


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
        self, engine: Any, files: tuple[str, ...], tests: tuple[RegoTest, ...], test_files: frozenset[str]
    ) -> None:
        self._engine = engine
        self.files = files
        self.tests = tests
        self.test_files = test_files
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

    def run(self, tests: Iterable[RegoTest], *, coverage: bool = False) -> RegoTestRun:
        """Run ``tests`` in order. With ``coverage``, also measure line coverage of the files without tests."""
        self._engine.set_enable_coverage(coverage)
        if coverage:
            self._engine.clear_coverage_data()
        results = tuple(self.run_test(test) for test in tests)
        report = self._coverage_report() if coverage else None
        return RegoTestRun(results, report)

    def _coverage_report(self) -> CoverageReport:
        # get_coverage_report_as_json: {"files": [{"path", "code", "covered": [line...], "not_covered": [...]}]}
        raw = json.loads(self._engine.get_coverage_report_as_json())
        by_file = {entry["path"]: entry for entry in raw.get("files", [])}
        files = []
        for name in self.files:
            if name in self.test_files:
                continue
            entry = by_file.get(name, {})
            covered = sorted(set(entry.get("covered", [])))
            not_covered = sorted(set(entry.get("not_covered", [])) - set(covered))
            files.append(FileCoverage(name, tuple(covered), tuple(not_covered)))
        return CoverageReport(tuple(files))


def load_suite(paths: Sequence[Path], data_files: Sequence[Path] = ()) -> RegoTestSuite:
    """Load the ``.rego`` files of ``paths`` and the data documents of ``data_files`` into one engine.

    Folders are searched recursively for ``*.rego``, and a file named directly
    must end in ``.rego``. Raises :class:`RegoLoadError` when a path is missing,
    a folder contains no Rego file, a file cannot be read or parsed, a data
    document is invalid or cannot be merged, or the policies do not compile.
    """
    engine = regorus.Engine()
    files = _rego_files(paths)
    for file in files:
        text = _read_text(Path(file), MAX_REGO_FILE)
        try:
            engine.add_policy(file, text)
        except RuntimeError as error:
            raise RegoLoadError(f"{describe_engine_error(error)}; fix the Rego syntax") from None
    for data_file in data_files:
        _add_data(engine, data_file)

    try:
        # Evaluating a constant makes regorus check every loaded module for errors such as
        # unsafe variables, as opa test compiles the modules before running tests. An unknown
        # function is still found only when a test calls it.
        engine.eval_query("true")
    except RuntimeError as error:
        raise RegoLoadError(f"{describe_engine_error(error)}; the policies do not compile") from None

    tests, test_files = _discover(engine, files)
    return RegoTestSuite(engine, tuple(files), tests, test_files)


def _rego_files(paths: Sequence[Path]) -> list[str]:
    """Return the Rego files to load as display names, each real file once, in the order given."""
    seen: set[Path] = set()
    files: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(candidate for candidate in path.rglob("*.rego") if candidate.is_file())
            if not found:
                raise RegoLoadError(
                    f"no .rego files found under {path}; give a folder that contains Rego files"
                )
        elif path.exists() and path.suffix == ".rego":
            found = [path]
        elif path.exists():
            raise RegoLoadError(
                f"{path} is not a .rego file; pass Rego files or folders, and data documents with --data"
            )
        else:
            raise RegoLoadError(f"path {path} not found; check the path")
        for file in found:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                files.append(str(file))
    return files


def _read_text(path: Path, max_bytes: int) -> str:
    try:
        raw = read_input(str(path), max_bytes)
    except InputError as error:
        raise RegoLoadError(str(error)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RegoLoadError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _add_data(engine: Any, path: Path) -> None:
    document = load_data_document(path)
    try:
        text = json.dumps(document, allow_nan=False, default=_yaml_scalar_to_json)
    except (TypeError, ValueError) as error:
        raise RegoLoadError(
            f"data file {path} contains a value that JSON cannot represent: {error}"
        ) from None
    try:
        engine.add_data_json(text)
    except RuntimeError as error:
        raise RegoLoadError(
            f"data file {path} cannot be merged into data: {describe_engine_error(error)}; "
            "remove the conflicting value from one of the data files"
        ) from None


def load_data_document(path: Path) -> dict[str, Any]:
    """Parse a JSON or YAML data file whose top level is an object.

    ``.json`` files are parsed as JSON and ``.yaml``/``.yml`` files as YAML.
    Any other file is parsed as JSON when it is valid JSON, else as YAML.
    """
    text = _read_text(path, MAX_DATA_FILE)
    suffix = path.suffix.lower()
    if suffix == ".json":
        document = _parse_json(path, text)
    elif suffix in (".yaml", ".yml"):
        document = _parse_yaml(path, text)
    else:
        try:
            document = _parse_json(path, text)
        except RegoLoadError:
            document = _parse_yaml(path, text)
    if not isinstance(document, dict):
        raise RegoLoadError(
            f"data file {path} contains a {type(document).__name__}, not an object; "
            "the top level of a data document must be an object"
        )
    return document


def _parse_json(path: Path, text: str) -> Any:
    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as error:
        raise RegoLoadError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
    except ValueError as error:
        raise RegoLoadError(f"{path}: invalid JSON: {error}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise RegoLoadError(f"{where}: invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise RegoLoadError(f"{path}: invalid YAML: {error}") from None


def _yaml_scalar_to_json(value: Any) -> str:
    # YAML reads unquoted dates as date objects; JSON (and OPA's YAML loader) keeps them as text.
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} value {value!r}")


def _discover(engine: Any, files: Sequence[str]) -> tuple[tuple[RegoTest, ...], frozenset[str]]:
    """Find the test rules in the engine's modules and the files that contain them."""
    modules = {module["source"]["file"]: module["ast"] for module in json.loads(engine.get_ast_as_json())}
    definitions: dict[tuple[str, str], list[tuple[SourceLocation, bool]]] = {}
    test_files = {file for file in files if file.endswith(TEST_FILE_SUFFIX)}

    for file in files:
        module = modules[file]
        package = _render_reference(module["package"]["refr"])
        for rule in module["rules"]:
            named = _plain_rule_name(rule)
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


def _plain_rule_name(rule: dict[str, Any]) -> tuple[str, int, bool] | None:
    """Return the name, line and default flag of a complete rule with a plain name, else None.

    regorus AST: ``{"Spec": {"head": {"Compr": {"refr": ...}}}}`` for ``name if ...``
    and ``name := value``; ``{"Default": {"refr": ...}}`` for ``default name := value``.
    Functions have a ``Func`` head, partial sets a ``Set`` head, and partial
    objects and dotted heads a ``refr`` other than ``Var``.
    """
    if "Spec" in rule:
        head = rule["Spec"]["head"]
        refr = head["Compr"]["refr"] if "Compr" in head else None
        line = rule["Spec"]["span"]["line"]
        is_default = False
    elif "Default" in rule:
        refr = rule["Default"]["refr"]
        line = rule["Default"]["span"]["line"]
        is_default = True
    else:
        return None
    if refr is None or "Var" not in refr:
        return None
    name: str = refr["Var"]["value"]
    return name, int(line), is_default


def _render_reference(refr: dict[str, Any]) -> str:
    """Render a package reference from the AST as Rego text, for example ``data.a.b["c-d"]``."""
    parts: list[str] = []
    node = refr
    while True:
        if "Var" in node:
            parts.append(node["Var"]["value"])
            break
        if "RefDot" in node:
            parts.append(node["RefDot"]["field"][1])
            node = node["RefDot"]["refr"]
        elif "RefBrack" in node and "String" in node["RefBrack"]["index"]:
            parts.append(node["RefBrack"]["index"]["String"]["value"])
            node = node["RefBrack"]["refr"]
        else:
            raise RegoLoadError(f"package reference {json.dumps(refr)[:200]} is not supported")
    text = "data"
    for part in reversed(parts):
        text += f".{part}" if _IDENTIFIER.fullmatch(part) else f"[{json.dumps(part)}]"
    return text
