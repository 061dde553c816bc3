"""Session-wide pytest hooks."""

from __future__ import annotations

import pytest

from tests.opa_support import opa_status


def pytest_report_header(config: pytest.Config) -> str:
    """Say whether the OPA differential tests can run, and why not when they cannot."""
    return opa_status().header
