"""Run the platform tools that macOS and Windows sources read (``security``, ``ioreg``, ``powershell``).

Tools are looked up on PATH, run without a shell and without standard
input, and stopped after a timeout. Every way a tool can fail becomes a
``CommandError`` whose message names the command, so the caller can record
it as a collection error and go on with the other locations.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

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

    The tool is looked up in the absolute directories of PATH only, so a
    relative PATH entry or the current directory (which Windows would
    otherwise search) cannot supply it. Raises ``CommandError`` when the tool
    is not found, cannot be started, exits with a non-zero status, runs
    longer than ``timeout`` seconds or prints more than ``MAX_OUTPUT`` bytes.
    Output is read as it arrives and the tool is stopped once it passes the
    cap, so a runaway tool cannot fill memory.
    """
    text = command_text(argv)
    executable = find_executable(argv[0])
    if executable is None:
        raise CommandError(text, f"{argv[0]} was not found on PATH (running {text})")
    logger.debug("running %s as %s", text, executable)
    try:
        process = subprocess.Popen(
            [executable, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so that a timeout stops the tool's children too.
            start_new_session=os.name == "posix",
        )
    except PermissionError:
        raise CommandError(text, f"{argv[0]} is not executable: permission denied (running {text})") from None
    except OSError as exc:
        raise CommandError(text, f"{text} could not be started: {exc.strerror or exc}") from None

    assert process.stdout is not None and process.stderr is not None
    stdout = _CappedReader(process.stdout, MAX_OUTPUT + 1, lambda: _stop(process))
    stderr = _CappedReader(process.stderr, _STDERR_KEPT, None)
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise CommandError(text, f"{text} timed out after {timeout:g} s") from None
    finally:
        stdout.join(_PIPE_WAIT)
        stderr.join(_PIPE_WAIT)

    if stdout.overflowed:
        raise CommandError(text, f"{text} printed more than {MAX_OUTPUT} bytes; its output was not read")
    if returncode != 0:
        raise CommandError(text, f"{text} exited with status {returncode}{_stderr_summary(stderr.data)}")
    return stdout.data


def find_executable(name: str) -> str | None:
    """Return the absolute path of ``name`` in the absolute directories of PATH, or None."""
    if os.path.isabs(name):
        return name if _is_executable(name) else None
    extensions = [""]
    if os.name == "nt" and not os.path.splitext(name)[1]:
        extensions = os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD").split(os.pathsep)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isabs(directory):
            continue
        for extension in extensions:
            candidate = os.path.join(directory, name + extension)
            if _is_executable(candidate):
                return candidate
    return None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


# Enough of a tool's stderr for the first line of its message.
_STDERR_KEPT = 64 * 1024

# Seconds to wait for the pipes to close once the tool has exited or been killed. A
# process that left the tool's group can hold them open; its output is then not waited for.
_PIPE_WAIT = 5.0


class _CappedReader:
    """Read a pipe on a thread, keeping at most ``limit`` bytes; call ``on_overflow`` when more arrive.

    Bytes past the limit are read and dropped, so that a tool writing to the
    pipe never blocks on it and can still be stopped.
    """

    def __init__(self, pipe: IO[bytes], limit: int, on_overflow: Callable[[], None] | None) -> None:
        self._pipe = pipe
        self._limit = limit
        self._on_overflow = on_overflow
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflowed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._pipe:
            while chunk := self._pipe.read(65536):
                if self._size < self._limit:
                    self._chunks.append(chunk[: self._limit - self._size])
                    self._size += min(len(chunk), self._limit - self._size)
                if self._size >= self._limit and not self.overflowed:
                    self.overflowed = True
                    if self._on_overflow is not None:
                        self._on_overflow()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the tool and, on POSIX, every process in its group."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError) as exc:
        logger.debug("stopping %s: %s", process.args, exc)
    process.wait()


def _stderr_summary(stderr: bytes) -> str:
    """Return the first non-empty line of a tool's stderr, as ``: line``, or nothing."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.strip():
            return f": {line.strip()[:300]}"
    return ""
