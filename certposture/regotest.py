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
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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

MIB = 1024 * 1024
# regorus rejects a policy file larger than 1 MiB, so a larger one is reported before it is parsed.
MAX_REGO_FILE = 1 * MIB
# Data documents may be exported inventories, so they may be larger than policies.
MAX_DATA_FILE = 64 * MIB
# regorus parses data with serde_json, which rejects objects and arrays nested 128 levels deep
# (measured with gordon-to-regorus 0.13.0), so deeper documents are rejected before parsing ends.
MAX_DATA_DEPTH = 127

# eval_rule_as_json returns this JSON string for an undefined rule. A rule whose value is
# the string "<undefined>" reads as undefined too, and either way the test fails.
_UNDEFINED_JSON = '"<undefined>"'
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# regorus reports a call to a function it cannot resolve with this message (gordon-to-regorus 0.13.0).
_UNKNOWN_FUNCTION_MESSAGE = "could not find function"


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
        # regorus lists only the files in which it evaluated at least one expression. Every line of
        # a file it left out is not covered, so that file counts as 0%, not as a file without lines.
        raw = json.loads(self._engine.get_coverage_report_as_json())
        by_file = {entry["path"]: entry for entry in raw.get("files", [])}
        files = []
        for name in self.files:
            if name in self.test_files:
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
    files = _rego_files(paths)
    for file in files:
        text = _read_text(Path(file), MAX_REGO_FILE, _rego_file_too_large)
        try:
            engine.add_policy(file, text)
        except RuntimeError as error:
            raise RegoLoadError(_describe_policy_error(error)) from None
    for data_file in data_files:
        _add_data(engine, data_file)

    try:
        # Evaluating a constant makes regorus check every loaded module for errors such as
        # unsafe variables, as opa test compiles the modules before running tests. regorus
        # resolves function names only during evaluation, so _check_function_calls finds
        # calls to unknown functions.
        engine.eval_query("true")
    except RuntimeError as error:
        raise RegoLoadError(f"{_engine_message(error)}; the policies do not compile") from None

    modules = {module["source"]["file"]: module for module in json.loads(engine.get_ast_as_json())}
    _check_function_calls(modules, files)
    tests, test_files = _discover(modules, files)
    coverable = {
        file: tuple(sorted(_coverable_lines(modules[file]["ast"])))
        for file in files
        if file not in test_files
    }
    return RegoTestSuite(engine, tuple(files), tests, test_files, coverable)


def _engine_message(error: BaseException) -> str:
    """Return the regorus message as ``file:line:col: message`` without a final period, ready for "; fix"."""
    return describe_engine_error(error).rstrip().removesuffix(".")


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
    message = _engine_message(error)
    for fragment, fix in _POLICY_LIMIT_FIXES:
        if fragment in message:
            return f"{message}; {fix}"
    return f"{message}; fix the Rego syntax"


def _rego_file_too_large(path: Path, size: int) -> str:
    return (
        f"{path} is {size} bytes, larger than the 1 MiB that regorus accepts for one policy file; "
        "split the policy into smaller files"
    )


def _data_file_too_large(path: Path, size: int) -> str:
    return f"{path} is {size} bytes, larger than the 64 MiB limit for data files; use a smaller data file"


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
            _check_file_name(file, path)
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                files.append(str(file))
    return files


def _check_file_name(file: Path, root: Path) -> None:
    """Reject a file name that is not valid UTF-8, which regorus and the JSON output cannot carry."""
    try:
        str(file).encode("utf-8")
    except UnicodeEncodeError:
        # os.fsdecode turned the invalid bytes into lone surrogates, which are shown as \xNN escapes.
        escaped = os.fsencode(file).decode("utf-8", "backslashreplace")
        raise RegoLoadError(
            f"{escaped}: the file name is not valid UTF-8; rename the file or move it out of {root}"
        ) from None


def _read_text(path: Path, max_bytes: int, too_large: Callable[[Path, int], str]) -> str:
    """Read a UTF-8 text file of at most ``max_bytes``. ``too_large(path, size)`` words the error for a larger one."""
    try:
        info = os.stat(path)
    except OSError:
        info = None  # read_input reports a missing or unreadable file
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
        raise RegoLoadError(too_large(path, info.st_size))
    try:
        # One byte more than the limit shows a file that grew after the check above.
        raw = read_input(str(path), max_bytes + 1)
    except InputError as error:
        raise RegoLoadError(str(error)) from None
    if len(raw) > max_bytes:
        raise RegoLoadError(too_large(path, len(raw)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RegoLoadError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _add_data(engine: Any, path: Path) -> None:
    document = load_data_document(path)
    if _nesting_depth(document) > MAX_DATA_DEPTH:
        raise RegoLoadError(_too_deep(str(path)))
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
            f"data file {path} cannot be merged into data: {_engine_message(error)}; "
            "remove the conflicting value from one of the data files"
        ) from None


def load_data_document(path: Path) -> dict[str, Any]:
    """Parse a JSON or YAML data file whose top level is an object.

    ``.json`` files are parsed as JSON and ``.yaml``/``.yml`` files as YAML.
    Any other file is parsed as JSON when it is valid JSON, else as YAML.
    YAML aliases are rejected, and so is YAML nested deeper than :data:`MAX_DATA_DEPTH`.
    """
    text = _read_text(path, MAX_DATA_FILE, _data_file_too_large)
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
    except RecursionError:
        # The json module gives up at about 1000 levels, far deeper than regorus accepts.
        raise RegoLoadError(_too_deep(str(path))) from None
    except ValueError as error:
        raise RegoLoadError(f"{path}: invalid JSON: {_first_clause(error)}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        # _DataYamlLoader is a SafeLoader, so no tag can construct arbitrary Python objects.
        return yaml.load(text, Loader=_DataYamlLoader)
    except _YamlAliasError as error:
        raise RegoLoadError(
            f"{_yaml_position(path, error.mark)}: YAML alias *{error.anchor} is not supported in data files, "
            "because expanding aliases can turn a small file into a huge document; "
            "write the value out in full"
        ) from None
    except _YamlTooDeepError as error:
        raise RegoLoadError(_too_deep(_yaml_position(path, error.mark))) from None
    except yaml.MarkedYAMLError as error:
        raise RegoLoadError(
            f"{_yaml_position(path, error.problem_mark)}: invalid YAML: {error.problem}"
        ) from None
    except yaml.YAMLError as error:
        raise RegoLoadError(f"{path}: invalid YAML: {error}") from None


def _yaml_position(path: Path, mark: yaml.Mark | None) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _too_deep(where: str) -> str:
    return (
        f"{where}: objects and arrays are nested more than {MAX_DATA_DEPTH} levels deep, "
        "more than regorus accepts; flatten the data document"
    )


def _first_clause(error: Exception) -> str:
    # Python's own advice, such as "use sys.set_int_max_str_digits()", does not apply to a data file.
    return str(error).split(";")[0]


class _YamlAliasError(Exception):
    def __init__(self, anchor: str, mark: yaml.Mark) -> None:
        super().__init__(anchor)
        self.anchor = anchor
        self.mark = mark


class _YamlTooDeepError(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("too deep")
        self.mark = mark


class _DataYamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects aliases, limits nesting and reports invalid scalars with their position.

    Composing nodes one level at a time stops a deeply nested file at
    :data:`MAX_DATA_DEPTH` instead of at Python's recursion limit, and
    rejecting aliases stops "billion laughs" documents before they expand.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            alias = self._next_event()
            raise _YamlAliasError(str(alias.anchor), alias.start_mark)
        if not self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DATA_DEPTH:
            raise _YamlTooDeepError(self._next_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            # Out-of-range dates and integers with more than 4300 digits raise these.
            raise yaml.constructor.ConstructorError(
                None, None, _first_clause(error), node.start_mark
            ) from None


def _nesting_depth(document: Any) -> int:
    """Return how many objects and arrays are nested in ``document``, counting the document itself.

    Walks iteratively, so a deep document cannot exhaust Python's stack, and
    stops once the depth exceeds :data:`MAX_DATA_DEPTH`.
    """
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DATA_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _yaml_scalar_to_json(value: Any) -> str:
    # YAML reads unquoted dates as date objects; JSON (and OPA's YAML loader) keeps them as text.
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} value {value!r}")


def _discover(
    modules: dict[str, dict[str, Any]], files: Sequence[str]
) -> tuple[tuple[RegoTest, ...], frozenset[str]]:
    """Find the test rules in the modules (from ``get_ast_as_json``, by file) and the files that contain them."""
    definitions: dict[tuple[str, str], list[tuple[SourceLocation, bool]]] = {}
    test_files = {file for file in files if file.endswith(TEST_FILE_SUFFIX)}

    for file in files:
        module = modules[file]["ast"]
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
    parts = _reference_parts(refr)
    if parts is None:
        raise RegoLoadError(f"package reference {json.dumps(refr)[:200]} is not supported")
    text = "data"
    for part in parts:
        text += f".{part}" if _IDENTIFIER.fullmatch(part) else f"[{json.dumps(part)}]"
    return text


def _reference_parts(refr: dict[str, Any]) -> tuple[str, ...] | None:
    """Return the names of a reference such as ``a.b["c-d"]`` as ``("a", "b", "c-d")``.

    Returns None for a reference with a computed part, such as ``a[x]``.
    """
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
            return None
    return tuple(reversed(parts))


# Unknown functions


def _check_function_calls(modules: dict[str, dict[str, Any]], files: Sequence[str]) -> None:
    """Raise :class:`RegoLoadError` for the first call to a function that neither a module nor regorus defines.

    A name resolves as regorus resolves it: ``data.x.f`` as written, ``a.f``
    through an import of ``data.x`` as ``a``, and any other name relative to
    the caller's package. A name that no module defines is checked against
    the builtins of regorus. Rego has no syntax for a call with a computed
    name, so every call is checked.
    """
    functions = _defined_functions(modules.values())
    for file in files:
        module = modules[file]
        package = _reference_parts(module["ast"]["package"]["refr"]) or ()
        aliases = _import_aliases(module)
        calls = sorted(_calls(module["ast"]), key=lambda call: _position(_leftmost_span(call["fcn"])))
        for call in calls:
            name = _reference_parts(call["fcn"])
            if name is None:
                continue  # not reached for parsed Rego; regorus would report it when evaluating
            candidates = [package + name]
            if name[0] == "data":
                candidates = [name[1:]]
            elif name[0] in aliases:
                candidates.append(aliases[name[0]] + name[1:])
            if any(candidate in functions for candidate in candidates) or _is_builtin(name):
                continue
            span = _leftmost_span(call["fcn"])
            described_name = ".".join(name)
            if name[0] in aliases:
                described_name += f", imported from data.{'.'.join(aliases[name[0]] + name[1:])},"
            raise RegoLoadError(
                f"{file}:{span['line']}:{span['col']}: function {described_name} is not defined in the loaded files "
                "and is not a regorus builtin; correct the name, or load the file that defines it"
            )


def _defined_functions(modules: Iterable[dict[str, Any]]) -> set[tuple[str, ...]]:
    """Return the paths (without ``data``) of every function and every default rule in ``modules``.

    regorus also calls a default rule like a function, so default rules count as defined.
    """
    functions = set()
    for module in modules:
        package = _reference_parts(module["ast"]["package"]["refr"]) or ()
        for rule in module["ast"]["rules"]:
            if "Default" in rule:
                refr = rule["Default"]["refr"]
            elif "Func" in rule.get("Spec", {}).get("head", {}):
                refr = rule["Spec"]["head"]["Func"]["refr"]
            else:
                continue
            parts = _reference_parts(refr)
            if parts is not None:
                functions.add(package + parts)
    return functions


def _import_aliases(module: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Map each name that an ``import data....`` binds in ``module`` to the imported path without ``data``."""
    source: bytes = module["source"]["contents"].encode("utf-8")
    aliases = {}
    for item in module["ast"]["imports"]:
        target = _reference_parts(item["refr"])
        if target is None or target[0] != "data" or len(target) < 2:
            continue
        alias = item.get("as")
        # The AST keeps only the span of an "as" name; its start and end are byte offsets.
        name = source[alias["start"] : alias["end"]].decode("utf-8") if alias else target[-1]
        aliases[name] = target[1:]
    return aliases


def _calls(tree: Any) -> Iterator[dict[str, Any]]:
    """Yield every ``Call`` expression anywhere in an AST fragment, in no particular order."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "Call" in node and isinstance(node["Call"], dict):
                yield node["Call"]
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _position(span: dict[str, int]) -> tuple[int, int]:
    return span["line"], span["col"]


def _leftmost_span(refr: dict[str, Any]) -> dict[str, int]:
    """Return the span of the first name of a reference, where a reader looks for it."""
    fields = next(iter(refr.values()))
    while "refr" in fields:
        fields = next(iter(fields["refr"].values()))
    span: dict[str, int] = fields["span"]
    return span


_builtin_names: dict[tuple[str, ...], bool] = {}


def _is_builtin(name: tuple[str, ...]) -> bool:
    """Return whether ``name`` is a builtin function of regorus, querying regorus once per name.

    The Python package of regorus lists no builtins, so a query calls the
    function with an undefined argument. regorus looks the name up before it
    looks at the arguments, and skips a builtin whose argument is undefined.
    Any result other than "could not find function" counts as a builtin, so a
    change of that message in regorus can only let an unknown name through to
    evaluation, where the test that calls it reports the error.
    """
    if name == ("print",):
        return True
    if not all(_IDENTIFIER.fullmatch(part) for part in name):
        return True
    if name not in _builtin_names:
        probe = regorus.Engine()
        probe.set_gather_prints(True)
        try:
            probe.eval_query(f"{'.'.join(name)}(input)")
            known = True
        except RuntimeError as error:
            known = _UNKNOWN_FUNCTION_MESSAGE not in str(error)
        _builtin_names[name] = known
    return _builtin_names[name]


# Coverage

# Child expressions per expression kind, as regorus's traverse() visits them. A call's
# function name is not an expression that is evaluated, so only its arguments count.
_EXPRESSION_CHILDREN = {
    "Array": ("items",),
    "Set": ("items",),
    "Call": ("params",),
    "UnaryExpr": ("expr",),
    "RefDot": ("refr",),
    "RefBrack": ("refr", "index"),
    "BinExpr": ("lhs", "rhs"),
    "BoolExpr": ("lhs", "rhs"),
    "ArithExpr": ("lhs", "rhs"),
    "AssignExpr": ("lhs", "rhs"),
    "OrExpr": ("lhs", "rhs"),
    "Membership": ("key", "value", "collection"),
}
_COMPREHENSIONS = ("ArrayCompr", "SetCompr", "ObjectCompr")


def _coverable_lines(module: dict[str, Any]) -> set[int]:
    """Return the lines that regorus's coverage report would list for ``module`` (its AST).

    These are the lines of rule values, partial set keys, default values and
    body expressions, as regorus 0.13.0 collects them in
    ``Interpreter::get_coverage_report``. regorus reports them only for a file
    it evaluated, so this gives the lines of a file that no test reached.
    """
    lines: set[int] = set()
    for rule in module["rules"]:
        if "Default" in rule:
            _add_expression_lines(rule["Default"]["value"], lines)
            continue
        spec = rule["Spec"]
        head_kind, head = next(iter(spec["head"].items()))
        if head_kind in ("Compr", "Func") and head.get("assign"):
            _add_expression_lines(head["assign"]["value"], lines)
        elif head_kind == "Set" and head.get("key"):
            _add_expression_lines(head["key"], lines)
        for body in spec["bodies"]:
            _add_query_lines(body["query"], lines)
    return lines


def _add_query_lines(query: dict[str, Any], lines: set[int]) -> None:
    # As in regorus, "some x" declarations, the key of "some k, v in" and "with" modifiers are not counted.
    for statement in query["stmts"]:
        kind, literal = next(iter(statement["literal"].items()))
        if kind == "SomeIn":
            _add_expression_lines(literal["value"], lines)
            _add_expression_lines(literal["collection"], lines)
        elif kind in ("Expr", "NotExpr"):
            _add_expression_lines(literal["expr"], lines)
        elif kind == "Every":
            _add_expression_lines(literal["domain"], lines)
            _add_query_lines(literal["query"], lines)


def _add_expression_lines(expression: dict[str, Any], lines: set[int]) -> None:
    pending = [expression]
    while pending:
        kind, node = next(iter(pending.pop().items()))
        if kind in _COMPREHENSIONS:
            # regorus counts the comprehension's body, not its term or the comprehension itself.
            _add_query_lines(node["query"], lines)
            continue
        lines.add(int(node["span"]["line"]))
        if kind == "Object":
            for _, key, value in node["fields"]:
                pending.extend((key, value))
            continue
        for child_field in _EXPRESSION_CHILDREN.get(kind, ()):
            child = node.get(child_field)
            if isinstance(child, list):
                pending.extend(child)
            elif child is not None:
                pending.append(child)
