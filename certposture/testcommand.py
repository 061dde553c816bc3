"""The ``certposture test`` command: run Rego unit tests in-process, with the exit codes of ``opa test``.

cli.py registers :func:`test_command`. Exit codes: 0 when every test passed
(skipped tests allowed), 2 when a test failed or had an error or coverage is
below ``--threshold``, 1 when a file cannot be loaded or an argument value is
invalid. Typer's own usage errors keep the CLI-wide exit code 2, and an
unwritable standard output the CLI-wide exit code 3.

cli.py imports this module to build its command tree, so the Rego runner and
regorus are imported inside the functions that run tests.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certposture.errors import CertpostureError, PolicyError
from certposture.report import printable

if TYPE_CHECKING:
    from certposture.regotest import CoverageReport

EXIT_PASSED = 0
EXIT_LOAD_ERROR = 1
EXIT_TESTS_FAILED = 2


class TestArgumentError(CertpostureError):
    """An argument value of ``certposture test`` is invalid (exit code 1, as ``opa test``)."""

    # The name starts with Test, so without this pytest would collect the class wherever a test imports it.
    __test__ = False
    exit_code = EXIT_LOAD_ERROR


def test_command(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PATH",
            show_default=False,
            help="Rego file, or folder searched recursively for *.rego; all are loaded into one engine.",
        ),
    ] = None,
    with_shipped: Annotated[
        bool,
        typer.Option(
            "--with-shipped",
            help="Also load the shipped policies (not their tests), for testing extra conditions against them.",
        ),
    ] = False,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            metavar="FILE",
            show_default=False,
            help="JSON or YAML file whose top-level object is merged into data; repeatable.",
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run", metavar="REGEX", help="Run only tests whose full name (data.pkg.test_x) matches REGEX."
        ),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", metavar="FORMAT", help="Output format: pretty, json or junit.")
    ] = "pretty",
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="List every test with its duration and print output."),
    ] = False,
    coverage: Annotated[
        bool, typer.Option("--coverage", help="Report line coverage of the loaded files without tests.")
    ] = False,
    threshold: Annotated[
        str | None,
        typer.Option(
            metavar="PERCENT",
            help="Exit 2 when total coverage is below PERCENT (0-100); implies --coverage.",
        ),
    ] = None,
    fail_on_empty: Annotated[bool, typer.Option("--fail-on-empty", help="Exit 1 when no test runs.")] = False,
) -> None:
    """Run the Rego unit tests (test_* rules) of PATHs in-process, like opa test.

    Exit code 0: every test passed (skipped todo_test_* rules allowed).
    Exit code 2: a test failed or had an error, or coverage is below --threshold.
    Exit code 1: a file cannot be loaded (missing, unreadable, invalid Rego,
    JSON or YAML), a policy does not compile, or an argument value is invalid.
    A call to a function that no loaded file defines and that is not a
    regorus builtin is a compile error.
    An unknown option or a missing option value exits 2, and an unwritable
    standard output exits 3, as in every certposture command.
    """
    from certposture.files import emit
    from certposture.regotest import load_suite
    from certposture.testreport import TEST_FORMATS, render_json, render_junit, render_pretty

    if output_format not in TEST_FORMATS:
        raise TestArgumentError(
            f"--format {output_format!r} is not a format; choose one of: {', '.join(TEST_FORMATS)}"
        )
    minimum = _parse_threshold(threshold) if threshold is not None else None
    pattern = _compile_run_pattern(run) if run is not None else None
    shipped = _shipped_files() if with_shipped else []
    roots = _roots(paths or [], shipped)

    suite = load_suite(roots, [Path(file) for file in data or []])
    if shipped:
        _check_against_shipped([Path(path) for path in paths or []])
    selected = suite.select(pattern)
    # The shipped policies are loaded for the tests to call, and are not the code under test.
    result = suite.run(
        selected, coverage=coverage or minimum is not None, coverage_exclude={str(file) for file in shipped}
    )

    if output_format == "json":
        emit(render_json(result).encode())
    elif output_format == "junit":
        emit(render_junit(result).encode())
    else:
        emit(render_pretty(result, verbose=verbose).encode())

    code = EXIT_TESTS_FAILED if result.failed else EXIT_PASSED
    if not selected:
        code = _report_no_tests(suite.tests != (), run, [str(root) for root in roots], fail_on_empty)
    if result.coverage is not None:
        code = max(code, _check_coverage(result.coverage, minimum, output_format))
    raise typer.Exit(code)


def _parse_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TestArgumentError(
            f"--threshold {text!r} is not a number; give a percentage from 0 to 100, such as 80 or 92.5"
        ) from None
    if math.isnan(value) or not 0 <= value <= 100:
        raise TestArgumentError(f"--threshold {text!r} is out of range; give a percentage from 0 to 100")
    return value


def _compile_run_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as error:
        raise TestArgumentError(
            f"--run {text!r} is not a valid regular expression ({error}); "
            "escape characters such as ( [ * with a backslash"
        ) from None


def _check_against_shipped(paths: list[Path]) -> None:
    """Apply the checks of --policy to the policy files under test, so that test and evaluate agree."""
    from certposture.engine import check_policies
    from certposture.regofiles import RegoLoadError

    try:
        check_policies(paths)
    except PolicyError as error:
        raise RegoLoadError(str(error)) from None


def _shipped_files() -> list[Path]:
    from certposture.engine import policy_files, shipped_policy_dir
    from certposture.regofiles import RegoLoadError

    try:
        return policy_files([shipped_policy_dir()])
    except PolicyError as error:
        raise RegoLoadError(str(error)) from None


def _roots(paths: list[str], shipped: list[Path]) -> list[Path]:
    for path in paths:
        if path == "":
            raise TestArgumentError("a PATH is empty; give a Rego file or folder")
    roots = [*(Path(path) for path in paths), *shipped]
    if not roots:
        raise TestArgumentError("no PATH given; give Rego files or folders, or --with-shipped")
    return roots


def _report_no_tests(found_any: bool, run: str | None, roots: list[str], fail_on_empty: bool) -> int:
    """Explain on stderr why no test ran and return the exit code: 0, or 1 with ``--fail-on-empty``."""
    if found_any:
        message = f"no test name matches --run {run!r}"
    else:
        message = f"no tests found in {', '.join(roots)}; test rules are named test_*"
    if fail_on_empty:
        typer.echo(f"error: {printable(message)} (--fail-on-empty)", err=True)
        return EXIT_LOAD_ERROR
    typer.echo(f"note: {printable(message)}", err=True)
    return EXIT_PASSED


def _check_coverage(coverage: CoverageReport, minimum: float | None, output_format: str) -> int:
    """Compare total coverage with ``minimum``; return exit code 2 when it is lower, else 0."""
    total = coverage.percentage
    if not coverage.files:
        typer.echo("note: coverage measured no line, because every loaded file contains tests", err=True)
    elif coverage.covered_count + coverage.not_covered_count == 0:
        typer.echo(
            "note: coverage measured no line, because the files without tests contain no rule value "
            "or body to evaluate",
            err=True,
        )
    if output_format == "junit":
        # JUnit XML has no place for coverage, so the total goes to stderr.
        typer.echo(f"note: coverage {total:.2f}% of the files without tests", err=True)
    if minimum is not None and total < minimum:
        typer.echo(
            f"error: coverage {total:.2f}% is below --threshold {minimum:g}%; "
            "add tests for the lines listed as not covered",
            err=True,
        )
        return EXIT_TESTS_FAILED
    return EXIT_PASSED
