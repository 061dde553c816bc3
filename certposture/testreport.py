"""Reporters for ``certposture test``: one function per output format, all reading a :class:`RegoTestRun`.

``pretty`` is for people, ``json`` has one fixed shape whatever the options,
and ``junit`` is JUnit XML for CI systems.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from certposture.regotest import (
    STATUS_ERROR,
    STATUS_FAIL,
    STATUS_PASS,
    STATUS_SKIP,
    CoverageReport,
    RegoTestResult,
    RegoTestRun,
)
from certposture.report import printable

TEST_FORMATS = ("pretty", "json", "junit")
JSON_SCHEMA_VERSION = 1

_STATUS_LABELS = {STATUS_PASS: "PASS", STATUS_FAIL: "FAIL", STATUS_ERROR: "ERROR", STATUS_SKIP: "SKIPPED"}


def describe_problem(result: RegoTestResult) -> str:
    """Return one line saying why a test did not pass, or an empty string for a passed or skipped test."""
    if result.status == STATUS_ERROR:
        return f"error: {result.error}"
    if result.status != STATUS_FAIL:
        return ""
    if not result.defined:
        return "the rule is undefined"
    return f"the rule is {orjson.dumps(result.value).decode()}, not true"


def format_duration(nanoseconds: int) -> str:
    """Format a duration the way ``opa test`` does: µs below 1 ms, ms below 1 s, else s."""
    if nanoseconds < 1_000_000:
        return f"{nanoseconds / 1_000:.0f}µs"
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1_000_000:.1f}ms"
    return f"{nanoseconds / 1_000_000_000:.2f}s"


def format_line_ranges(lines: Sequence[int]) -> str:
    """Join sorted line numbers, folding runs into ranges: ``[3, 4, 5, 9]`` becomes ``3-5, 9``."""
    parts: list[str] = []
    index = 0
    while index < len(lines):
        end = index
        while end + 1 < len(lines) and lines[end + 1] == lines[end] + 1:
            end += 1
        parts.append(str(lines[index]) if end == index else f"{lines[index]}-{lines[end]}")
        index = end + 1
    return ", ".join(parts) or "none"


# pretty


def render_pretty(run: RegoTestRun, *, verbose: bool) -> str:
    """Render one block per failed or erroring test (every test with ``verbose``), a summary line and coverage.

    A block is ``file:line: full_name: STATUS (duration)``, then the reason
    and the test's print output, indented. Print output of passing tests
    shows only with ``verbose``.
    """
    lines: list[str] = []
    for result in run.results:
        if verbose or result.status in (STATUS_FAIL, STATUS_ERROR):
            lines.extend(_pretty_block(result))
    if lines:
        lines.append("")
    lines.append(_summary_line(run))
    if run.coverage is not None:
        lines.append("")
        lines.extend(_pretty_coverage(run.coverage))
    return "\n".join(printable(line) for line in lines) + "\n"


def _pretty_block(result: RegoTestResult) -> list[str]:
    test = result.test
    label = _STATUS_LABELS[result.status]
    timing = (
        "" if result.status == STATUS_SKIP or test.duplicated else f" ({format_duration(result.duration_ns)})"
    )
    block = [f"{test.location}: {test.full_name}: {label}{timing}"]
    problem = describe_problem(result)
    if problem:
        block.append(f"  {problem}")
    if result.prints:
        block.append("  print output:")
        block.extend(f"    {line}" for line in result.prints)
    return block


def _summary_line(run: RegoTestRun) -> str:
    total = len(run.results)
    parts = [f"PASS: {run.counts[STATUS_PASS]}/{total}"]
    for status in (STATUS_FAIL, STATUS_ERROR, STATUS_SKIP):
        if run.counts[status]:
            parts.append(f"{_STATUS_LABELS[status]}: {run.counts[status]}/{total}")
    return ", ".join(parts)


def _pretty_coverage(coverage: CoverageReport) -> list[str]:
    lines = ["coverage of the files without tests:"]
    for file in coverage.files:
        counted = len(file.covered) + len(file.not_covered)
        lines.append(f"  {file.file}: {file.percentage:.2f}% ({len(file.covered)} of {counted} lines)")
        lines.append(f"    covered: {format_line_ranges(file.covered)}")
        lines.append(f"    not covered: {format_line_ranges(file.not_covered)}")
    counted = coverage.covered_count + coverage.not_covered_count
    lines.append(f"  total: {coverage.percentage:.2f}% ({coverage.covered_count} of {counted} lines)")
    return lines


# json


def render_json(run: RegoTestRun) -> str:
    """Render the run as the JSON document that README.md documents; every key is always present."""
    document = {
        "schema_version": JSON_SCHEMA_VERSION,
        "tests": [_json_test(result) for result in run.results],
        "summary": {"total": len(run.results), **run.counts},
        "coverage": _json_coverage(run.coverage) if run.coverage is not None else None,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def _json_test(result: RegoTestResult) -> dict[str, Any]:
    test = result.test
    return {
        "package": test.package,
        "name": test.name,
        "full_name": test.full_name,
        "file": test.location.file,
        "line": test.location.line,
        "status": result.status,
        "duration_ns": result.duration_ns,
        "defined": result.defined,
        "value": result.value,
        "prints": list(result.prints),
        "error": result.error,
    }


def _json_coverage(coverage: CoverageReport) -> dict[str, Any]:
    return {
        "files": [
            {
                "file": file.file,
                "covered": list(file.covered),
                "not_covered": list(file.not_covered),
                "covered_count": len(file.covered),
                "not_covered_count": len(file.not_covered),
                "percentage": round(file.percentage, 2),
            }
            for file in coverage.files
        ],
        "covered_count": coverage.covered_count,
        "not_covered_count": coverage.not_covered_count,
        "percentage": round(coverage.percentage, 2),
    }


# junit


def render_junit(run: RegoTestRun) -> str:
    """Render JUnit XML: one ``testsuite`` per Rego package, one ``testcase`` per test, times in seconds."""
    root = ET.Element("testsuites", name="certposture test")
    _set_counts(root, run.results)
    for package, results in _by_package(run.results).items():
        suite = ET.SubElement(root, "testsuite", name=package)
        _set_counts(suite, results)
        for result in results:
            _junit_case(suite, result)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _by_package(results: Iterable[RegoTestResult]) -> dict[str, list[RegoTestResult]]:
    grouped: dict[str, list[RegoTestResult]] = {}
    for result in results:
        grouped.setdefault(result.test.package, []).append(result)
    return grouped


def _set_counts(element: ET.Element, results: Sequence[RegoTestResult]) -> None:
    element.set("tests", str(len(results)))
    element.set("failures", str(sum(result.status == STATUS_FAIL for result in results)))
    element.set("errors", str(sum(result.status == STATUS_ERROR for result in results)))
    element.set("skipped", str(sum(result.status == STATUS_SKIP for result in results)))
    element.set("time", _seconds(sum(result.duration_ns for result in results)))


def _junit_case(suite: ET.Element, result: RegoTestResult) -> None:
    test = result.test
    case = ET.SubElement(
        suite,
        "testcase",
        name=test.name,
        classname=test.package,
        file=test.location.file,
        line=str(test.location.line),
        time=_seconds(result.duration_ns),
    )
    problem = describe_problem(result)
    if result.status == STATUS_FAIL:
        ET.SubElement(case, "failure", message=_xml_text(problem), type="fail").text = _xml_text(problem)
    elif result.status == STATUS_ERROR:
        ET.SubElement(case, "error", message=_xml_text(problem), type="error").text = _xml_text(problem)
    elif result.status == STATUS_SKIP:
        ET.SubElement(case, "skipped", message=f"{test.name} is a todo_test_ rule")
    if result.prints:
        ET.SubElement(case, "system-out").text = _xml_text("\n".join(result.prints))


def _seconds(nanoseconds: int) -> str:
    return f"{nanoseconds / 1_000_000_000:.6f}"


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters or lone surrogates, even escaped,
    # so they are written as Python escapes.
    return "".join(
        character if _xml_allowed(ord(character)) else character.encode("unicode_escape").decode("ascii")
        for character in text
    )


def _xml_allowed(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )
