"""Run the platform tools that macOS and Windows sources read (``security``, ``ioreg``, ``powershell``).

Tools are looked up on PATH, run without a shell and without standard
input, and stopped after a timeout. Every way a tool can fail becomes a
``CommandError`` whose message names the command, so the caller can record
it as a collection error and go on with the other locations.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

# A keychain or certificate store with thousands of certificates prints a few
# MiB of PEM; output beyond this cap means the tool is not behaving as expected.
MAX_OUTPUT = 64 * 1024 * 1024

DEFAULT_TIMEOUT = 60.0


class CommandError(Exception):
    """A tool that was missing, failed, timed out or printed too much; ``message`` names the command."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command
        self.message = message


Runner = Callable[[Sequence[str]], bytes]
"""Runs a command and returns its standard output, raising ``CommandError`` on any failure."""


def command_text(argv: Sequence[str]) -> str:
    """Quote a command line for messages."""
    return shlex.join(argv)


def run_command(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Run ``argv`` and return its standard output.

    Raises ``CommandError`` when the tool is not found, cannot be started,
    exits with a non-zero status, runs longer than ``timeout`` seconds or
    prints more than ``MAX_OUTPUT`` bytes.
    """
    text = command_text(argv)
    logger.debug("running %s", text)
    try:
        completed = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise CommandError(text, f"{argv[0]} was not found on PATH (running {text})") from None
    except PermissionError:
        raise CommandError(text, f"{argv[0]} is not executable: permission denied (running {text})") from None
    except subprocess.TimeoutExpired:
        raise CommandError(text, f"{text} timed out after {timeout:g} s") from None
    except OSError as exc:
        raise CommandError(text, f"{text} could not be started: {exc.strerror or exc}") from None

    if completed.returncode != 0:
        raise CommandError(
            text, f"{text} exited with status {completed.returncode}{_stderr_summary(completed.stderr)}"
        )
    if len(completed.stdout) > MAX_OUTPUT:
        raise CommandError(text, f"{text} printed more than {MAX_OUTPUT} bytes; its output was not read")
    return completed.stdout


def _stderr_summary(stderr: bytes) -> str:
    """Return the first non-empty line of a tool's stderr, as ``: line``, or nothing."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.strip():
            return f": {line.strip()[:300]}"
    return ""
