"""Run every Rego unit test under policies/ as its own pytest case, through the runner of ``certposture test``.

The shipped policies (policies/certposture) run on their own. Each folder under
policies/examples contains an extra condition, which changes the posture results
that the shipped tests check. So each folder is loaded with the shipped policies,
and only the tests in its own files run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certposture.regotest import STATUS_PASS, STATUS_SKIP, RegoTest, RegoTestResult, RegoTestSuite, load_suite
from certposture.testreport import describe_problem

POLICY_ROOT = Path(__file__).resolve().parent.parent / "policies"
SHIPPED = POLICY_ROOT / "certposture"
EXAMPLES = POLICY_ROOT / "examples"


def _cases() -> list[tuple[RegoTestSuite, RegoTest]]:
    shipped = load_suite([SHIPPED])
    cases = [(shipped, test) for test in shipped.tests]
    examples = sorted(path for path in EXAMPLES.iterdir() if path.is_dir()) if EXAMPLES.is_dir() else []
    for example in examples:
        suite = load_suite([example, SHIPPED])
        cases.extend(
            (suite, test) for test in suite.tests if Path(test.location.file).is_relative_to(example)
        )
    return cases


CASES = _cases()


def _describe_failure(result: RegoTestResult) -> str:
    test = result.test
    prints = "\n".join(result.prints) or "(no print output)"
    return (
        f"{test.full_name} ({test.location}): {result.status}: {describe_problem(result)}\n"
        f"print output:\n{prints}"
    )


def test_rego_tests_discovered() -> None:
    assert CASES, f"no test_* rules found in the .rego files under {POLICY_ROOT}"


def test_every_test_file_runs() -> None:
    test_files = {str(path) for path in POLICY_ROOT.rglob("*_test.rego")}
    run_files = {test.location.file for _, test in CASES}

    assert test_files - run_files == set(), "these test files are under no folder that test_rego.py runs"


@pytest.mark.parametrize(("suite", "rego_test"), CASES, ids=[test.full_name for _, test in CASES])
def test_rego(suite: RegoTestSuite, rego_test: RegoTest) -> None:
    result = suite.run_test(rego_test)

    if result.status == STATUS_SKIP:
        pytest.skip(f"{rego_test.full_name} is a todo_test_ rule")
    if result.status != STATUS_PASS:
        pytest.fail(_describe_failure(result), pytrace=False)
