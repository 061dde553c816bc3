"""Domain exceptions; each carries the CLI exit code it maps to."""

from __future__ import annotations


class CertpostureError(Exception):
    """Base class. The message is one line that names the value and the fix."""

    exit_code = 3


class InputError(CertpostureError):
    """The user's input is invalid: a bad file, value or id (exit code 2)."""

    exit_code = 2


class NotFoundError(InputError):
    """An id given by the user is not in the store."""


class StoreError(CertpostureError):
    """The store cannot be opened, read or written (exit code 3)."""


class PolicyError(CertpostureError):
    """Policy loading or evaluation failed; decisions fail closed (exit code 3)."""


class FactsError(CertpostureError):
    """A facts document cannot be read or is invalid (exit code 3)."""
