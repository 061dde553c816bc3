"""Run every Rego unit test under policies/ as its own pytest case."""

from __future__ import annotations

from pathlib import Path

import pytest

from certposture.regotest import RegoTest, RegoTestOutcome, discover_tests, run_test

POLICY_ROOT = Path(__file__).resolve().parent.parent / "policies"
REGO_TESTS = discover_tests([POLICY_ROOT])


def _describe_failure(outcome: RegoTestOutcome) -> str:
    if outcome.error is not None:
        detail = f"evaluation failed: {outcome.error}"
    elif outcome.value is None:
        detail = "the rule is undefined (or null)"
    else:
        detail = f"the rule evaluated to {outcome.value!r}, not true"
    prints = "\n".join(outcome.prints) or "(no print output)"
    return f"{outcome.test.rule_path} in {outcome.test.test_file}: {detail}\nprint output:\n{prints}"


def test_rego_tests_discovered() -> None:
    assert REGO_TESTS, f"no test_* rules found in *_test.rego files under {POLICY_ROOT}"


@pytest.mark.parametrize("rego_test", REGO_TESTS, ids=[test.rule_path for test in REGO_TESTS])
def test_rego(rego_test: RegoTest) -> None:
    outcome = run_test(rego_test)

    if not outcome.passed:
        pytest.fail(_describe_failure(outcome), pytrace=False)
