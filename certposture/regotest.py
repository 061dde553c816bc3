"""Discover and run Rego unit tests with regorus.

A test is a rule whose name starts with ``test_`` (the prefix ``opa test`` uses)
in a ``*_test.rego`` file. It passes only when it evaluates to ``true``. An
undefined rule, ``false``, any other value and an evaluation error are failures.
Each test runs in a fresh engine that contains every non-test policy file plus
its own test file, so tests in different files cannot see each other's helpers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

from certposture.engine import describe_engine_error
from certposture.errors import PolicyError

TEST_FILE_SUFFIX = "_test.rego"
TEST_RULE_PREFIX = "test_"


@dataclass(frozen=True)
class RegoTest:
    """One ``test_*`` rule and the files its engine loads."""

    package: str
    name: str
    test_file: Path
    policy_files: tuple[Path, ...]

    @property
    def rule_path(self) -> str:
        """Full rule path, for example ``data.certposture.posture_test.test_success_passed``."""
        return f"{self.package}.{self.name}"


@dataclass(frozen=True)
class RegoTestOutcome:
    """Outcome of one test run. ``value`` is None when the rule is undefined (or null)."""

    test: RegoTest
    passed: bool
    value: Any
    prints: tuple[str, ...]
    error: str | None


def discover_tests(paths: Iterable[Path]) -> list[RegoTest]:
    """Find the ``test_*`` rules in the ``.rego`` files of ``paths`` (files, or folders searched recursively).

    Raises :class:`PolicyError` when a file cannot be parsed, so a broken test
    file fails loudly instead of contributing no tests.
    """
    rego_files: dict[Path, None] = {}
    for path in paths:
        for file in sorted(path.rglob("*.rego")) if path.is_dir() else [path]:
            rego_files[file] = None
    policies = tuple(file for file in rego_files if not file.name.endswith(TEST_FILE_SUFFIX))
    test_files = [file for file in rego_files if file.name.endswith(TEST_FILE_SUFFIX)]

    tests: list[RegoTest] = []
    for test_file in test_files:
        engine, package = _load_engine(policies, test_file)
        for name in _test_rule_names(engine, test_file):
            tests.append(RegoTest(package=package, name=name, test_file=test_file, policy_files=policies))
    return tests


def run_test(test: RegoTest) -> RegoTestOutcome:
    """Evaluate one test rule in a fresh engine, gathering the output of ``print`` calls."""
    engine, _ = _load_engine(test.policy_files, test.test_file)
    engine.set_gather_prints(True)
    value: Any = None
    error: str | None = None
    try:
        value = engine.eval_rule(test.rule_path)
    except RuntimeError as exc:
        error = describe_engine_error(exc)
    prints = tuple(engine.take_prints())
    return RegoTestOutcome(
        test, passed=error is None and value is True, value=value, prints=prints, error=error
    )


def _load_engine(policies: Iterable[Path], test_file: Path) -> tuple[Any, str]:
    """Load ``policies`` and then ``test_file`` into a new engine, and return it with the test file's package path."""
    engine = regorus.Engine()
    package = ""
    for path in [*policies, test_file]:
        try:
            # add_policy_from_file returns the package path, for example "data.certposture.posture_test".
            package = engine.add_policy_from_file(str(path))
        except RuntimeError as error:
            raise PolicyError(f"Rego file {path} cannot be loaded: {describe_engine_error(error)}") from None
    return engine, package


def _test_rule_names(engine: Any, test_file: Path) -> list[str]:
    """Return the distinct ``test_*`` rule names of a file, in source order.

    Only complete rules with a plain name count. Functions, partial sets and
    objects, and rules with a dotted head are never run as tests.
    """
    names: list[str] = []
    for module in _modules_of(engine, test_file):
        for rule in module["ast"]["rules"]:
            name = _plain_rule_name(rule)
            if name is not None and name.startswith(TEST_RULE_PREFIX) and name not in names:
                names.append(name)
    return names


def _modules_of(engine: Any, test_file: Path) -> list[dict[str, Any]]:
    modules: list[dict[str, Any]] = json.loads(engine.get_ast_as_json())
    return [module for module in modules if module["source"]["file"] == str(test_file)]


def _plain_rule_name(rule: dict[str, Any]) -> str | None:
    # regorus AST: {"Spec": {"head": {"Compr": {"refr": ...}}}} for `name if ...`
    # and `name := value`; {"Default": {"refr": ...}} for `default name := value`.
    if "Spec" in rule:
        head = rule["Spec"]["head"]
        refr = head["Compr"]["refr"] if "Compr" in head else None
    elif "Default" in rule:
        refr = rule["Default"]["refr"]
    else:
        refr = None
    if refr is None or "Var" not in refr:
        return None
    name: str = refr["Var"]["value"]
    return name
