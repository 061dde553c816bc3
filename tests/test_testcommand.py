"""``certposture test``: discovery, statuses, filters, data files, output formats, coverage and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from certposture.cli import main
from certposture.engine import examples_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "regotest"
MIXED = FIXTURES / "mixed"
COVERAGE = FIXTURES / "coverage"
UNTESTED = FIXTURES / "untested"
CONSTRUCTS = FIXTURES / "constructs"
CALLS = FIXTURES / "calls"
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


def test_engine_message_period_dropped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # regorus ends this message with a period, which must not run into the "; fix ..." part.
    (tmp_path / "twice.rego").write_text("package twice\n\nimport rego.v1\n\nx if {\n\ty := 1\n\ty := 2\n}\n")

    code, _, err = run(capsys, str(tmp_path))

    assert code == 1
    assert err.endswith("used before definition below; the policies do not compile\n")
    assert ".;" not in err


def test_undefined_function_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "broken.rego").write_text("package broken\n\nimport rego.v1\n\nbroken if undefined_fn(1)\n")
    (tmp_path / "broken_test.rego").write_text(
        "package broken_test\n\nimport rego.v1\n\ntest_broken if data.broken.broken\n"
    )

    code, out, err = run(capsys, str(tmp_path))

    assert code == 1
    assert out == ""
    assert err == (
        f"error: {tmp_path / 'broken.rego'}:5:11: function undefined_fn is not defined in the loaded files "
        "and is not a regorus builtin; correct the name, or load the file that defines it\n"
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        ("data.fixture.calls.lib.missing(1)", "data.fixture.calls.lib.missing"),
        ("library.missing(1)", "library.missing, imported from data.fixture.calls.lib.missing,"),
        ("sub.missing(1)", "sub.missing"),
        ("string.reverse(1)", "string.reverse"),
        ("data.fixture.calls.lib.plain(1)", "data.fixture.calls.lib.plain"),
    ],
    ids=["full-path", "import-alias", "package-relative", "not-a-builtin", "rule-not-function"],
)
def test_undefined_function_forms(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, call: str, name: str
) -> None:
    (tmp_path / "lib.rego").write_text("package fixture.calls.lib\n\nimport rego.v1\n\nplain := 1\n")
    (tmp_path / "caller_test.rego").write_text(
        "package fixture.calls.main\n\nimport rego.v1\n\nimport data.fixture.calls.lib as library\n\n"
        f"test_call if {call}\n"
    )

    code, _, err = run(capsys, str(tmp_path))

    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'caller_test.rego'}:7:14: function {name} is not defined")


def test_first_undefined_call_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "two.rego").write_text(
        "package two\n\nimport rego.v1\n\na if first_missing(1)\n\nb if second_missing(1)\n"
    )

    _, _, err = run(capsys, str(tmp_path))

    assert f"{tmp_path / 'two.rego'}:5:6: function first_missing " in err


def test_defined_functions_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(CALLS))

    assert document["summary"] == {"total": 10, "pass": 10, "fail": 0, "error": 0, "skip": 0}
    assert code == 0


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        (
            "long_line.rego",
            'x := "' + "a" * 2000 + '"',
            ":3:7: line exceeds maximum column width of 1024; "
            "regorus accepts lines of code shorter than 1024 columns, so break the line",
        ),
        (
            "many_lines.rego",
            "# comment\n" * 20001,
            " exceeds maximum allowed line count 20000; "
            "regorus accepts at most 20000 lines per policy file, so split the policy into smaller files",
        ),
    ],
    ids=["columns", "lines"],
)
def test_regorus_policy_limits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, line: str, message: str
) -> None:
    (tmp_path / name).write_text(f"package limits\n\n{line}\n")

    code, _, err = run(capsys, str(tmp_path))

    assert code == 1
    assert err == f"error: {tmp_path / name}{message}\n"


def test_policy_larger_than_1_mib(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules = "".join(f"rule_{index} := {index}\n" for index in range(120_000))
    (tmp_path / "large.rego").write_text(f"package large\n\n{rules}")
    size = (tmp_path / "large.rego").stat().st_size
    assert size > 1024 * 1024

    code, _, err = run(capsys, str(tmp_path))

    assert code == 1
    assert err == (
        f"error: {tmp_path / 'large.rego'} is {size} bytes, larger than the 1 MiB that regorus accepts "
        "for one policy file; split the policy into smaller files\n"
    )


def test_policy_of_exactly_1_mib_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    head = "package large\n\nimport rego.v1\n\ntest_ok if true\n"
    (tmp_path / "large_test.rego").write_text(head + "#" * (1024 * 1024 - len(head) - 1) + "\n")
    assert (tmp_path / "large_test.rego").stat().st_size == 1024 * 1024

    code, out, err = run(capsys, str(tmp_path))

    assert (code, out, err) == (0, "PASS: 1/1\n", "")


def test_non_utf8_file_name_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "ok_test.rego").write_text("package ok\n\nimport rego.v1\n\ntest_ok if true\n")
    try:
        (tmp_path / os.fsdecode(b"\xff\xfe.rego")).write_text("package odd\n")
    except OSError:
        pytest.skip("the file system of tmp_path rejects file names that are not UTF-8")

    code, out, err = run(capsys, str(tmp_path))

    assert code == 1
    assert out == ""
    assert err == (
        f"error: {tmp_path}/\\xff\\xfe.rego: the file name is not valid UTF-8; "
        f"rename the file or move it out of {tmp_path}\n"
    )


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


def _nested_json(levels: int) -> str:
    # An object holding arrays: `levels` objects and arrays in all.
    return '{"a": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


@pytest.mark.parametrize(
    ("name", "content", "position"),
    [
        ("deep.json", _nested_json(5001), ""),
        ("just_too_deep.json", _nested_json(128), ""),
        ("deep.yaml", "a: " + "[" * 100_000, ":1:130"),
        ("deep_block.yaml", "a:\n" + "".join("  " * level + "-\n" for level in range(1, 200)), ":128:255"),
    ],
    ids=["json-5000", "json-128", "yaml-flow-100000", "yaml-block"],
)
def test_deeply_nested_data_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: str, position: str
) -> None:
    (tmp_path / name).write_text(content)

    code, out, err = run(capsys, str(DATA), "--data", str(tmp_path / name))

    assert code == 1
    assert out == ""
    assert err == (
        f"error: {tmp_path / name}{position}: objects and arrays are nested more than 127 levels deep, "
        "more than regorus accepts; flatten the data document\n"
    )


def test_data_nested_127_levels_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text(_nested_json(127))

    code, _, err = run(capsys, str(DATA), "--data", str(tmp_path / "deep.json"))

    assert err == ""
    assert code == 2, "the data tests fail, because deep.json holds none of their values"


def test_yaml_alias_bomb_rejected_fast(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Five levels of nine aliases each expand to 9**5 (59049) strings: small enough that a
    # regression loads it without exhausting memory, unlike the 8 levels of a real attack.
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]" for level in range(1, 6)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")

    started = time.monotonic()
    code, out, err = run(capsys, str(DATA), "--data", str(tmp_path / "bomb.yaml"))

    assert time.monotonic() - started < 5
    assert code == 1
    assert out == ""
    assert err == (
        f"error: {tmp_path / 'bomb.yaml'}:2:10: YAML alias *a0 is not supported in data files, because "
        "expanding aliases can turn a small file into a huge document; write the value out in full\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: " + "9" * 5000 + "\n", ":1:4: invalid YAML: Exceeds the limit (4300 digits) for integer string"),
        ("a: 1\nb: 2020-13-45\n", ":2:4: invalid YAML: month must be in 1..12"),
    ],
    ids=["integer-digits", "date"],
)
def test_invalid_yaml_value_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "values.yaml").write_text(content)

    code, _, err = run(capsys, str(DATA), "--data", str(tmp_path / "values.yaml"))

    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'values.yaml'}{message}")
    assert "sys.set_int_max_str_digits" not in err
    assert len(err.splitlines()) == 1


def test_data_file_larger_than_64_mib(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)  # sparse, so the test writes no 64 MiB

    code, _, err = run(capsys, str(DATA), "--data", str(huge))

    assert code == 1
    assert err == (
        f"error: {huge} is 67108865 bytes, larger than the 64 MiB limit for data files; "
        "use a smaller data file\n"
    )


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


def test_untested_file_counts_as_not_covered(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run_json(capsys, str(UNTESTED), "--coverage")

    assert code == 0
    untested = document["coverage"]["files"][1]
    assert untested == {
        "file": str(UNTESTED / "untested.rego"),
        "covered": [],
        "not_covered": [8, 9, 13],
        "covered_count": 0,
        "not_covered_count": 3,
        "percentage": 0.0,
    }
    assert document["coverage"]["percentage"] == 25.0


def test_untested_file_fails_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(UNTESTED), "--threshold", "90")

    assert code == 2
    assert f"  {UNTESTED / 'untested.rego'}: 0.00% (0 of 3 lines)" in out
    assert "  total: 25.00% (1 of 4 lines)" in out
    assert err.startswith("error: coverage 25.00% is below --threshold 90%")


def test_coverage_without_tests(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "lib.rego").write_text("package lib\n\nimport rego.v1\n\nf(x) := x + 1\n\nallow if input.a\n")

    code, out, err = run(capsys, str(tmp_path), "--coverage")

    assert code == 0
    assert f"  {tmp_path / 'lib.rego'}: 0.00% (0 of 2 lines)" in out
    assert err == f"note: no tests found in {tmp_path}; test rules are named test_*\n"


def test_coverage_note_only_test_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "only_test.rego").write_text("package only_test\n\nimport rego.v1\n\ntest_x if true\n")

    code, out, err = run(capsys, str(tmp_path), "--coverage")

    assert code == 0
    assert out.endswith("coverage of the files without tests:\n  total: 100.00% (0 of 0 lines)\n")
    assert err == "note: coverage measured no line, because every loaded file contains tests\n"


def test_coverage_note_no_coverable_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "only_test.rego").write_text("package only_test\n\nimport rego.v1\n\ntest_x if true\n")
    (tmp_path / "empty.rego").write_text("package empty\n")

    code, out, err = run(capsys, str(tmp_path), "--coverage")

    assert code == 0
    assert f"  {tmp_path / 'empty.rego'}: 100.00% (0 of 0 lines)" in out
    assert err == (
        "note: coverage measured no line, because the files without tests contain no rule value "
        "or body to evaluate\n"
    )


def test_unevaluated_lines_match_regorus(capsys: pytest.CaptureFixture[str]) -> None:
    # regorus lists the coverable lines of a file it evaluated, and certposture computes them
    # for a file it did not. Both must be the same lines, for every kind of rule in the fixture.
    _, evaluated = run_json(capsys, str(CONSTRUCTS), "--coverage")
    _, unevaluated = run_json(capsys, str(CONSTRUCTS), "--coverage", "--run", "test_unrelated")

    reported = evaluated["coverage"]["files"][0]
    computed = unevaluated["coverage"]["files"][0]
    assert reported["covered"], "the fixture's tests must evaluate part of constructs.rego"
    assert reported["not_covered"], "the fixture's tests must leave part of constructs.rego unevaluated"
    assert computed["covered"] == []
    assert computed["not_covered"] == sorted(reported["covered"] + reported["not_covered"])


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


def test_example_without_shipped_policies_fails_to_compile(capsys: pytest.CaptureFixture[str]) -> None:
    # The example calls reason(), which the shipped policies define.
    example = examples_dir() / "min_rsa_key_size"

    code, out, err = run(capsys, str(example))

    assert code == 1
    assert out == ""
    assert err.startswith(
        f"error: {example / 'min_rsa_key_size.rego'}:21:18: function reason, "
        "imported from data.certposture.client_certificate.reason, is not defined"
    )


def test_with_shipped_coverage_counts_own_files_only(capsys: pytest.CaptureFixture[str]) -> None:
    example = examples_dir() / "min_rsa_key_size"

    code, document = run_json(capsys, "--with-shipped", "--threshold", "90", str(example))

    assert code == 0
    files = [entry["file"] for entry in document["coverage"]["files"]]
    assert files == [str(example / "min_rsa_key_size.rego")]
    assert document["coverage"]["percentage"] == 100.0


def test_with_shipped_applies_policy_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "override.rego").write_text("package certposture.posture\n\ndefault results := []\n")
    (tmp_path / "override_test.rego").write_text(
        "package override_test\n\ntest_empty if data.certposture.posture.results == []\n"
    )

    code, out, err = run(capsys, "--with-shipped", str(tmp_path))

    assert code == 1
    assert out == ""
    assert "adds rules to the shipped package data.certposture.posture" in err
