"""``certposture test``: discovery, statuses, filters, data files, output formats, coverage and exit codes."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from certposture.cli import main
from certposture.engine import examples_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "regotest"
MIXED = FIXTURES / "mixed"
COVERAGE = FIXTURES / "coverage"
DATA = FIXTURES / "data"

MIXED_TEST = str(MIXED / "mixed_test.rego")
SPLIT_A = str(MIXED / "split_a_test.rego")
SPLIT_B = str(MIXED / "split_b_test.rego")

# Every test of the mixed folder and its status; the function, partial set and
# dotted rules named test_* are not tests and must not appear.
MIXED_STATUSES = {
    "data.fixture.mixed_test.test_admin_allowed": "pass",
    "data.fixture.mixed_test.test_guest_allowed": "fail",
    "data.fixture.mixed_test.test_label_is_false": "fail",
    "data.fixture.mixed_test.test_division_by_zero": "error",
    "data.fixture.mixed_test.test_object_get_on_string": "error",
    "data.fixture.mixed_test.test_with_default": "pass",
    "data.fixture.mixed_test.todo_test_later": "skip",
    "data.fixture.mixed_test.test_twice_in_one_file": "error",
    "data.fixture.split_test.test_in_two_files": "error",
    "data.fixture.split_test.test_uses_helper_from_other_file": "pass",
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["test", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, "--format", "json", *args)
    assert out, f"no JSON output; stderr: {err}"
    document: dict[str, Any] = json.loads(out)
    return code, document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {test["full_name"]: test for test in document["tests"]}


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {test["full_name"]: test["status"] for test in document["tests"]}


# Discovery and statuses


def test_mixed_folder_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(MIXED))

    assert statuses(document) == MIXED_STATUSES
    assert list(statuses(document)) == list(MIXED_STATUSES), "tests are not in source order"
    assert document["summary"] == {"total": 10, "pass": 3, "fail": 2, "error": 4, "skip": 1}
    assert code == 2


def test_runtime_error_without_backtrace(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    tests = by_name(document)

    division = tests["data.fixture.mixed_test.test_division_by_zero"]["error"]
    object_get = tests["data.fixture.mixed_test.test_object_get_on_string"]["error"]
    assert division == f"{MIXED_TEST}:21:7: divide by zero"
    assert object_get.startswith(f"{MIXED_TEST}:25:17: `object.get` expects object argument")
    assert "backtrace" not in json.dumps(document).lower()


def test_duplicate_in_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    duplicate = by_name(document)["data.fixture.mixed_test.test_twice_in_one_file"]

    assert duplicate["status"] == "error"
    assert f"({MIXED_TEST}:34, {MIXED_TEST}:36)" in duplicate["error"]
    assert duplicate["duration_ns"] == 0


def test_duplicate_across_files(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    duplicate = by_name(document)["data.fixture.split_test.test_in_two_files"]

    assert duplicate["status"] == "error"
    assert f"({SPLIT_A}:8, {SPLIT_B}:7)" in duplicate["error"]


def test_default_is_not_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    with_default = by_name(document)["data.fixture.mixed_test.test_with_default"]

    assert with_default["status"] == "pass"
    assert with_default["line"] == 30, "the location is the non-default definition"


def test_package_split_across_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, SPLIT_B, SPLIT_A, "--run", "helper")

    assert statuses(document) == {"data.fixture.split_test.test_uses_helper_from_other_file": "pass"}
    assert code == 0


def test_file_given_twice_loaded_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(MIXED), MIXED_TEST, "--run", "admin_allowed")

    assert statuses(document) == {"data.fixture.mixed_test.test_admin_allowed": "pass"}
    assert code == 0


def test_tests_in_any_file_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "rules.rego").write_text("package anyname\n\nimport rego.v1\n\ntest_here if true\n")

    code, document = run_json(capsys, str(tmp_path))

    assert statuses(document) == {"data.anyname.test_here": "pass"}
    assert code == 0


def test_quoted_package_segment(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "odd_test.rego").write_text('package odd["with-dash"]\n\nimport rego.v1\n\ntest_x if true\n')

    code, document = run_json(capsys, str(tmp_path))

    assert statuses(document) == {'data.odd["with-dash"].test_x': "pass"}
    assert code == 0


# Exit codes


def test_passing_and_skipped_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(MIXED), "--run", "admin_allowed|with_default|todo_test_later")

    assert statuses(document) == {
        "data.fixture.mixed_test.test_admin_allowed": "pass",
        "data.fixture.mixed_test.test_with_default": "pass",
        "data.fixture.mixed_test.todo_test_later": "skip",
    }
    assert code == 0


def test_failure_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_json(capsys, str(MIXED), "--run", "test_guest_allowed")

    assert code == 2


def test_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_json(capsys, str(MIXED), "--run", "test_division_by_zero")

    assert code == 2


def test_parse_error_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.rego"
    broken.write_text("package broken\n\nallow if {\n\tinput.x ==\n}\n")

    code, out, err = run(capsys, str(tmp_path))

    assert code == 1
    assert out == ""
    assert err.startswith(f"error: {broken}:5:1: expecting expression")
    assert len(err.splitlines()) == 1
    assert "backtrace" not in err.lower()
    assert "stack" not in err.lower()


def test_compile_error_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "unsafe_test.rego").write_text("package unsafe\n\nimport rego.v1\n\ntest_x if y == 1\n")

    code, out, err = run(capsys, str(tmp_path))

    assert code == 1
    assert out == ""
    assert f"{tmp_path / 'unsafe_test.rego'}:5:11:" in err
    assert "unsafe" in err
    assert "stack" not in err.lower()


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda base: base / "absent", "not found"),
        (lambda base: base, "no .rego files found under"),
        (lambda base: base / "policy.json", "is not a .rego file"),
    ],
    ids=["missing", "empty-folder", "not-rego"],
)
def test_path_problem_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_path: Any, message: str
) -> None:
    (tmp_path / "policy.json").write_text("{}")
    path = make_path(tmp_path)

    code, out, err = run(capsys, str(path))

    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert str(path) in err
    assert len(err.splitlines()) == 1


def test_unreadable_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "binary_test.rego").write_bytes(b"package x\n\xff\xfe\n")

    code, _, err = run(capsys, str(tmp_path))

    assert code == 1
    assert "is not UTF-8" in err


def test_no_path_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)

    assert code == 1
    assert err == "error: no PATH given; give Rego files or folders, or --with-shipped\n"


def test_bad_format_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(MIXED), "--format", "xml")

    assert code == 1
    assert err == "error: --format 'xml' is not a format; choose one of: pretty, json, junit\n"


def test_typer_usage_error_keeps_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(MIXED), "--no-such-option")

    assert code == 2
    assert "--no-such-option" in err


# --run


def test_run_matches_full_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(MIXED), "--run", r"^data\.fixture\.split_test\.")

    assert set(statuses(document)) == {
        "data.fixture.split_test.test_in_two_files",
        "data.fixture.split_test.test_uses_helper_from_other_file",
    }
    assert code == 2


def test_run_searches_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED), "--run", "guest")

    assert list(statuses(document)) == ["data.fixture.mixed_test.test_guest_allowed"]


def test_run_without_match(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(MIXED), "--run", "^test_")

    assert code == 0
    assert out == "PASS: 0/0\n"
    assert err == "note: no test name matches --run '^test_'\n"


def test_invalid_run_regex_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(MIXED), "--run", "test_(")

    assert code == 1
    assert out == ""
    assert err.startswith("error: --run 'test_(' is not a valid regular expression (")
    assert len(err.splitlines()) == 1


# Zero tests


def test_no_tests_exits_0_with_note(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "policy.rego").write_text("package only_policy\n\nimport rego.v1\n\nallow := true\n")

    code, out, err = run(capsys, str(tmp_path))

    assert code == 0
    assert out == "PASS: 0/0\n"
    assert err == f"note: no tests found in {tmp_path}; test rules are named test_*\n"


def test_no_tests_fail_on_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "policy.rego").write_text("package only_policy\n\nimport rego.v1\n\nallow := true\n")

    code, _, err = run(capsys, str(tmp_path), "--fail-on-empty")

    assert code == 1
    assert err.startswith(f"error: no tests found in {tmp_path}")


# Data documents


def test_without_data_tests_fail(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(DATA))

    assert set(statuses(document).values()) == {"fail"}
    assert code == 2


def test_data_json_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(
        capsys, str(DATA), "--data", str(DATA / "limits.json"), "--data", str(DATA / "owners.yaml")
    )

    assert statuses(document) == {
        "data.fixture.data_test.test_limit_from_json": "pass",
        "data.fixture.data_test.test_owner_from_yaml": "pass",
        "data.fixture.data_test.test_yaml_date_read_as_text": "pass",
    }
    assert code == 0


def test_data_format_by_content(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    json_file = shutil.copy(DATA / "limits.json", tmp_path / "limits.data")
    yaml_file = shutil.copy(DATA / "owners.yaml", tmp_path / "owners.conf")

    code, document = run_json(capsys, str(DATA), "--data", str(json_file), "--data", str(yaml_file))

    assert set(statuses(document).values()) == {"pass"}
    assert code == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", '{"limits": ', "bad.json:1:12: invalid JSON"),
        ("bad.yaml", "owners: [unclosed\n", "bad.yaml:2:1: invalid YAML"),
        ("list.json", "[1, 2]", "contains a list, not an object"),
        ("nan.json", '{"x": NaN}', "NaN is not valid JSON"),
        ("binary.yaml", "key: !!binary aGVsbG8=\n", "contains a value that JSON cannot represent"),
    ],
)
def test_bad_data_file_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)

    code, out, err = run(capsys, str(DATA), "--data", str(tmp_path / name))

    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_missing_data_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(DATA), "--data", str(tmp_path / "absent.json"))

    assert code == 1
    assert f"cannot read {tmp_path / 'absent.json'}" in err


def test_conflicting_data_files_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"limits": {"max_days": 30}}')

    code, _, err = run(
        capsys, str(DATA), "--data", str(DATA / "limits.json"), "--data", str(tmp_path / "other.json")
    )

    assert code == 1
    assert f"data file {tmp_path / 'other.json'} cannot be merged into data" in err


# Print output and the pretty format


def test_prints_shown_for_failures_only(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, str(MIXED))

    assert f"{MIXED_TEST}:14: checking guest" in out
    assert "checking admin" not in out
    assert "test_admin_allowed" not in out


def test_verbose_shows_every_test_and_print(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, str(MIXED), "-v")

    assert f"{MIXED_TEST}:9: checking admin" in out
    assert f"{MIXED_TEST}:14: checking guest" in out
    assert re.search(r"mixed_test\.rego:8: data\.fixture\.mixed_test\.test_admin_allowed: PASS \(\d", out)
    assert f"{MIXED_TEST}:32: data.fixture.mixed_test.todo_test_later: SKIPPED\n" in out


def test_pretty_failure_block(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, str(MIXED), "--run", "guest|label")

    lines = out.splitlines()
    assert re.fullmatch(
        rf"{re.escape(MIXED_TEST)}:13: data\.fixture\.mixed_test\.test_guest_allowed: FAIL \([\d.]+(µs|ms|s)\)",
        lines[0],
    )
    assert lines[1:4] == [
        "  the rule is undefined",
        "  print output:",
        f"    {MIXED_TEST}:14: checking guest",
    ]
    assert lines[5] == "  the rule is false, not true"


def test_pretty_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, str(MIXED))

    assert out.splitlines()[-1] == "PASS: 3/10, FAIL: 2/10, ERROR: 4/10, SKIPPED: 1/10"


# JSON and JUnit


def test_json_test_fields(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    tests = by_name(document)

    assert set(document) == {"schema_version", "tests", "summary", "coverage"}
    assert document["coverage"] is None
    guest = tests["data.fixture.mixed_test.test_guest_allowed"]
    assert guest["package"] == "data.fixture.mixed_test"
    assert guest["name"] == "test_guest_allowed"
    assert guest["file"] == MIXED_TEST
    assert guest["line"] == 13
    assert guest["defined"] is False
    assert guest["value"] is None
    assert guest["prints"] == [f"{MIXED_TEST}:14: checking guest"]
    assert guest["error"] is None
    assert isinstance(guest["duration_ns"], int)
    assert guest["duration_ns"] > 0


def test_json_false_value(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED))
    label = by_name(document)["data.fixture.mixed_test.test_label_is_false"]

    assert label["defined"] is True
    assert label["value"] is False


def test_json_shape_same_with_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    _, plain = run_json(capsys, str(MIXED))
    _, verbose = run_json(capsys, str(MIXED), "-v")

    def without_durations(document: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**test, "duration_ns": 0} for test in document["tests"]]

    assert without_durations(plain) == without_durations(verbose)


def test_junit_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(MIXED), "--format", "junit")
    root = ET.fromstring(out)

    assert code == 2
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "10",
        "2",
        "4",
        "1",
    )
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert set(suites) == {"data.fixture.mixed_test", "data.fixture.split_test"}
    mixed = suites["data.fixture.mixed_test"]
    assert (mixed.get("tests"), mixed.get("failures"), mixed.get("errors"), mixed.get("skipped")) == (
        "8",
        "2",
        "3",
        "1",
    )
    split = suites["data.fixture.split_test"]
    assert (split.get("tests"), split.get("failures"), split.get("errors"), split.get("skipped")) == (
        "2",
        "0",
        "1",
        "0",
    )
    assert float(root.get("time", "x")) >= 0


def test_junit_testcase_children(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, str(MIXED), "--format", "junit")
    cases = {case.get("name"): case for case in ET.fromstring(out).iter("testcase")}

    assert len(cases) == 10
    admin = cases["test_admin_allowed"]
    assert [child.tag for child in admin] == ["system-out"]
    assert admin.findtext("system-out") == f"{MIXED_TEST}:9: checking admin"
    guest = cases["test_guest_allowed"]
    assert guest.find("failure") is not None
    assert guest.get("classname") == "data.fixture.mixed_test"
    assert guest.get("file") == MIXED_TEST
    assert guest.get("line") == "13"
    assert float(guest.get("time", "x")) > 0
    division = cases["test_division_by_zero"].find("error")
    assert division is not None
    assert "divide by zero" in division.get("message", "")
    assert cases["todo_test_later"].find("skipped") is not None
    assert cases["test_twice_in_one_file"].find("error") is not None


# Coverage


def test_coverage_lines_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(COVERAGE), "--coverage")

    assert code == 0
    assert document["coverage"] == {
        "files": [
            {
                "file": str(COVERAGE / "access.rego"),
                "covered": [5, 8, 12],
                "not_covered": [13, 16, 17],
                "covered_count": 3,
                "not_covered_count": 3,
                "percentage": 50.0,
            }
        ],
        "covered_count": 3,
        "not_covered_count": 3,
        "percentage": 50.0,
    }


def test_coverage_lines_pretty(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(COVERAGE), "--coverage")

    assert code == 0
    assert out.splitlines()[-5:] == [
        "coverage of the files without tests:",
        f"  {COVERAGE / 'access.rego'}: 50.00% (3 of 6 lines)",
        "    covered: 5, 8, 12",
        "    not covered: 13, 16-17",
        "  total: 50.00% (3 of 6 lines)",
    ]


def test_coverage_skips_test_files(capsys: pytest.CaptureFixture[str]) -> None:
    _, document = run_json(capsys, str(MIXED), "--coverage")

    assert [file["file"] for file in document["coverage"]["files"]] == [str(MIXED / "policy.rego")]


def test_threshold_below_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(COVERAGE), "--threshold", "50.1")

    assert code == 2
    assert "total: 50.00% (3 of 6 lines)" in out, "--threshold implies --coverage"
    assert err == (
        "error: coverage 50.00% is below --threshold 50.1%; add tests for the lines listed as not covered\n"
    )


def test_threshold_met_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(COVERAGE), "--threshold", "50")

    assert code == 0
    assert err == ""


@pytest.mark.parametrize("value", ["abc", "100.5", "-1", "nan"])
def test_invalid_threshold_exits_1(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, out, err = run(capsys, str(COVERAGE), "--threshold", value)

    assert code == 1
    assert out == ""
    assert err.startswith(f"error: --threshold '{value}' is ")
    assert "percentage from 0 to 100" in err


# Shipped policies


def test_with_shipped_loads_shipped_policies_not_their_tests(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, "--with-shipped", str(examples_dir() / "min_rsa_key_size"))

    assert code == 0
    files = {test["file"] for test in document["tests"]}
    assert files == {str(examples_dir() / "min_rsa_key_size" / "min_rsa_key_size_test.rego")}
    assert document["summary"]["pass"] == len(document["tests"]) > 0


def test_example_without_shipped_policies_fails_to_find_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(examples_dir() / "min_rsa_key_size"))

    assert code == 2
    assert document["summary"]["pass"] < len(document["tests"])
