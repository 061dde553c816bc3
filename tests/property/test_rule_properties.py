"""Rule validation on arbitrary JSON and damaged rules: a valid rule or one-line problems, never a traceback.

The in-process checks call certposture.rules directly. The CLI checks run
``certposture rules validate`` and ``rules add`` through ``certposture.cli.main``
against a store that contains one signing certificate.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from certposture.cli import main
from certposture.errors import InputError
from certposture.rules import parse_rules_document, validate_rules
from tests.certgen import CertKey
from tests.property import property_settings
from tests.property.checks import assume_no_key_header
from tests.property.mutations import json_values, mutated_bytes

CERTIFICATE_ID = "corp-device-ca"
SOURCE = "rules.json"

# Text without "$", so that a variable appears only where a template strategy puts one. orjson
# rejects lone surrogates, so the characters are limited to those UTF-8 can encode.
_PLAIN_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="$"), max_size=12)
_PATH_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=8
).filter(lambda segment: segment not in {".", ".."})


# Field names, mostly plain, sometimes made of control characters, which must not reach a terminal.
_FIELD_NAMES = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc"]), min_size=1, max_size=3),
)


def certificate_exists(certificate_id: str) -> bool:
    return certificate_id == CERTIFICATE_ID


def templates(min_size: int = 0) -> st.SearchStrategy[str]:
    """Values of ``cn`` and of SANs: plain text mixed with the variables ${serial_number} and ${hostname}."""
    parts = st.one_of(_PLAIN_TEXT, st.sampled_from(["${serial_number}", "${hostname}"]))
    return st.lists(parts, max_size=4).map("".join).filter(lambda text: len(text) >= min_size)


@st.composite
def valid_rules(draw: st.DrawFn) -> dict[str, Any]:
    """A rule that follows every documented constraint, with a random choice of the optional fields."""
    operating_system = draw(st.sampled_from(["linux", "mac", "windows"]))
    rule_input: dict[str, Any] = {
        "certificate_id": CERTIFICATE_ID,
        "operating_system": operating_system,
        "check_private_key": draw(st.booleans()),
    }
    if draw(st.booleans()):
        rule_input["cn"] = draw(templates())
    if draw(st.booleans()):
        rule_input["extended_key_usage"] = draw(
            st.lists(st.sampled_from(["clientAuth", "emailProtection"]), unique=True)
        )
    if draw(st.booleans()):
        rule_input["subject_alternative_names"] = draw(st.lists(templates(min_size=1), max_size=3))
    if draw(st.booleans()):
        if operating_system == "linux":
            paths = st.lists(_PATH_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
            rule_input["locations"] = {"paths": draw(st.lists(paths, max_size=3))}
        else:
            stores = ["system"] if operating_system == "mac" else ["system", "user"]
            rule_input["locations"] = {"trust_stores": draw(st.lists(st.sampled_from(stores), unique=True))}

    rule: dict[str, Any] = {"name": draw(st.text(min_size=1, max_size=20)), "type": "client_certificate_v2"}
    durations = st.from_regex(r"[1-9][0-9]{0,8}[smhd]", fullmatch=True)
    optional = {
        "id": st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
        "description": st.text(max_size=20),
        "schedule": durations,
        "expiration": st.one_of(st.just(""), durations),
        "match": st.just([{"platform": operating_system}]),
    }
    for field, values in optional.items():
        if draw(st.booleans()):
            rule[field] = draw(values)
    rule["input"] = rule_input
    return rule


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Yield the path of every value inside a JSON document, the document itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _value_at(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


@st.composite
def mutated_rules(draw: st.DrawFn) -> Any:
    """A valid rule after 1 to 3 edits: a value replaced, a field removed or added, a value wrapped in a list."""
    document: Any = copy.deepcopy(draw(valid_rules()))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(document))))
        edit = draw(st.sampled_from(["replace", "remove", "add field", "wrap in list"]))
        value = _value_at(document, path)
        if edit == "add field" and isinstance(value, dict):
            value[draw(_FIELD_NAMES)] = draw(json_values(max_leaves=5))
            continue
        if not path:
            document = draw(json_values()) if edit == "replace" else [document]
            continue
        parent = _value_at(document, path[:-1])
        if edit == "replace":
            parent[path[-1]] = draw(json_values(max_leaves=5))
        elif edit == "remove":
            del parent[path[-1]]
        else:
            # "wrap in list", and "add field" on a value that is not an object.
            parent[path[-1]] = [value]
    return document


def rule_documents() -> st.SearchStrategy[Any]:
    return st.one_of(
        valid_rules(),
        mutated_rules(),
        st.lists(st.one_of(valid_rules(), mutated_rules()), min_size=1, max_size=3),
        json_values(),
    )


# In-process validation


def assert_one_line_problems(problems: list[str]) -> None:
    for problem in problems:
        assert isinstance(problem, str), problem
        assert problem.strip(), "a problem must not be empty"
        # Values appear as repr() in problems, so a field name must not bring in a line break,
        # an escape sequence or any other character that str.isprintable rejects.
        assert problem.isprintable(), f"problem has unprintable characters: {problem!r}"


def validate_document(document: Any) -> tuple[list[dict[str, Any]], list[str]] | None:
    """Validate a rule document as ``rules add`` does; return None when it is no rule document at all."""
    raw = orjson.dumps(document)
    assume_no_key_header(raw)
    try:
        documents = parse_rules_document(raw, SOURCE)
    except InputError as error:
        assert "\n" not in str(error), f"error spans several lines: {error}"
        return None
    return validate_rules(documents, certificate_exists)


@given(rule=valid_rules())
@property_settings(max_examples=200)
def test_rules_valid_rule_accepted(rule: dict[str, Any]) -> None:
    rules, problems = validate_rules([rule], certificate_exists)
    assert problems == []
    (normalized,) = rules
    if "id" in rule:
        assert normalized["id"] == rule["id"]
    # A normalized rule is stored and later validated again, so normalizing it must change nothing.
    assert validate_rules([normalized], certificate_exists) == ([normalized], [])


@given(document=rule_documents())
@example(document={"bad\nfield": None})
@property_settings(max_examples=300)
def test_rules_validation_arbitrary_documents(document: Any) -> None:
    outcome = validate_document(document)
    if outcome is None:
        return
    rules, problems = outcome
    assert_one_line_problems(problems)
    if not problems:
        for rule in rules:
            assert validate_rules([rule], certificate_exists) == ([rule], [])


# The CLI, in process


@dataclass(frozen=True)
class CliRun:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*arguments: str) -> CliRun:
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stderr = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_code = main(list(arguments))
        stdout.flush()
    output = stdout.buffer.getvalue().decode("utf-8")
    return CliRun(exit_code, output, stderr.getvalue())


@pytest.fixture(scope="module")
def home_template(tmp_path_factory: pytest.TempPathFactory, ca: CertKey) -> Path:
    """A store that contains the signing certificate ``CERTIFICATE_ID`` and no rule."""
    folder = tmp_path_factory.mktemp("rules-cli")
    home = folder / "home"
    ca.write_cert(folder / "ca.pem")
    added = run_cli("--home", str(home), "ca", "add", "--id", CERTIFICATE_ID, str(folder / "ca.pem"))
    assert added.exit_code == 0, added.stderr
    return home


def rule_files() -> st.SearchStrategy[bytes]:
    """Rule files: JSON of rule documents, damaged JSON of a valid rule, and arbitrary bytes."""
    return st.one_of(
        rule_documents().map(orjson.dumps),
        valid_rules().map(orjson.dumps).flatmap(mutated_bytes),
        st.binary(max_size=200),
    )


def assert_diagnostics(run: CliRun) -> None:
    """Check the CLI's contract for rule files: exit 0 or 2, one line per error, no traceback."""
    assert run.exit_code in {0, 2}, run
    assert "Traceback" not in run.stderr, run.stderr
    if run.exit_code == 2:
        lines = run.stderr.splitlines()
        assert lines, "exit code 2 without an error message"
        for line in lines:
            assert line.startswith("error: "), f"diagnostic line without 'error: ': {line!r}"
    control = [character for character in run.stderr if not character.isprintable() and character != "\n"]
    assert not control, f"control characters reach the terminal: {control!r} in {run.stderr!r}"


def expected_exit_code(raw: bytes) -> int:
    """Return the exit code the rule file must give, from the in-process validation."""
    try:
        documents = parse_rules_document(raw, SOURCE)
    except InputError:
        return 2
    _, problems = validate_rules(documents, certificate_exists)
    return 2 if problems else 0


@given(raw=rule_files())
# An escape sequence in a field name, and a carriage return, before the last problem.
@example(raw=b'{"\\u001b[2J":null,"\\r":null,"":null}')
@property_settings(max_examples=100)
def test_rules_validate_cli(home_template: Path, raw: bytes) -> None:
    assume_no_key_header(raw)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / SOURCE
        path.write_bytes(raw)
        run = run_cli("--home", str(home_template), "rules", "validate", str(path))
    assert_diagnostics(run)
    assert run.stdout == ""
    assert run.exit_code == expected_exit_code(raw)
    if run.exit_code == 0:
        assert run.stderr.endswith(" rule(s) valid\n"), run.stderr
        assert len(run.stderr.splitlines()) == 1, run.stderr


@given(raw=rule_files())
@property_settings(max_examples=40)
def test_rules_add_cli(home_template: Path, raw: bytes) -> None:
    assume_no_key_header(raw)
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        shutil.copytree(home_template, home)
        path = Path(scratch) / SOURCE
        path.write_bytes(raw)
        run = run_cli("--home", str(home), "rules", "add", str(path))
        listed = run_cli("--home", str(home), "rules", "list")
    # The messages come from the validation that test_rules_validate_cli checks, so this test
    # checks only what add stores.
    assert run.exit_code in {0, 2}, run
    assert "Traceback" not in run.stderr, run.stderr
    assert run.exit_code == expected_exit_code(raw)
    stored = orjson.loads(listed.stdout)
    if run.exit_code == 2:
        assert run.stdout == ""
        assert stored == [], "a rejected file must store no rule"
    else:
        assert run.stdout.splitlines() == [rule["id"] for rule in stored]
        for rule in stored:
            assert validate_rules([rule], certificate_exists) == ([rule], [])
