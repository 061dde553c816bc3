"""Session-wide pytest hooks."""

from __future__ import annotations

import pytest

from tests import secrets_scan
from tests.opa_support import opa_status


def pytest_configure(config: pytest.Config) -> None:
    """Start the secrets scan before test modules import ``certposture.cli.main`` and the key helpers."""
    secrets_scan.install(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    secrets_scan.uninstall(config)


def pytest_report_header(config: pytest.Config) -> str:
    """Say whether the OPA differential tests can run, and why not when they cannot."""
    return opa_status().header
