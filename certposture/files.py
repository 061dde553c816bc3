"""Reading command input and writing command output safely.

Inputs are read only from regular files or standard input, and never past a
size limit, so a mistyped path such as ``/dev/zero`` fails at once. Output
files are replaced atomically, through symbolic links, and only when they are
regular files.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from certposture.errors import CertpostureError, InputError

# Signing certificates and rule files are a few KiB.
MAX_SMALL_INPUT = 1024 * 1024
# A facts document grows by about 1.5 KiB per certificate, so this admits tens
# of thousands of certificates.
MAX_FACTS_INPUT = 64 * 1024 * 1024


class OutputError(CertpostureError):
    """Standard output cannot be written (exit code 3); an unwritable ``-o`` file is an InputError."""


def read_input(source: str, max_bytes: int) -> bytes:
    """Read a regular file, or standard input for ``-``, of at most ``max_bytes`` bytes."""
    handle, size = open_input(source)
    if size is not None and size > max_bytes:
        handle.close()
        raise InputError(f"{source} is {size} bytes, larger than {max_bytes}; check the path")
    if source == "-":
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InputError(f"standard input is larger than {max_bytes} bytes; pass a smaller document")
        if not data:
            raise InputError("standard input is empty; if it comes from a pipe, check the command before it")
        return data
    with handle:
        try:
            return handle.read(max_bytes + 1)[:max_bytes]
        except OSError as error:
            raise InputError(f"cannot read {source}: {error.strerror}; check the path") from None


def open_input(source: str) -> tuple[BinaryIO, int | None]:
    """Open a regular file, or standard input for ``-``, for reading; return it and the file's size.

    The size is None for standard input. Raises InputError for an empty name,
    a terminal on standard input, a missing file, a folder or a special file.
    """
    if source == "":
        raise InputError("input file name is empty; give a FILE, or - for standard input")
    if source == "-":
        if sys.stdin is None:
            raise InputError("standard input is closed; pipe data in or give a FILE")
        if sys.stdin.isatty():
            raise InputError("reading from standard input, but it is a terminal; pipe data in or give a FILE")
        return sys.stdin.buffer, None

    try:
        # O_NONBLOCK keeps open() from waiting for a writer when the path is a FIFO.
        # Windows has no O_NONBLOCK, and no FIFOs in its file system to wait on.
        descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise InputError(f"{source} is a directory; give a file") from None
    except OSError as error:
        raise InputError(f"cannot read {source}: {error.strerror}; check the path") from None
    info = os.fstat(descriptor)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = f"{source} is a directory; give a file"
    elif not stat.S_ISREG(info.st_mode):
        problem = f"{source} is not a regular file; give a file"
    if problem is not None:
        os.close(descriptor)
        raise InputError(problem)
    return os.fdopen(descriptor, "rb"), info.st_size


def write_atomically(path: str, data: bytes) -> None:
    """Replace the regular file at ``path`` (following symbolic links) with ``data`` in one step.

    A reader never sees a half-written file. A path naming a device, FIFO or
    directory is rejected, because replacing it would remove it.
    """
    if path == "":
        raise InputError("output file name is empty; give a FILE or leave out -o to write to standard output")
    target = Path(os.path.realpath(path))
    # A new file gets 0666 less the umask, as open() would give it. A replaced file keeps its
    # permission bits, without setuid or setgid, so that its readers can still read it.
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    try:
        info = target.stat()
    except FileNotFoundError:
        pass
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror}; check the path") from None
    else:
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"cannot write {path}: it exists and is not a regular file; give a file path")
        mode = stat.S_IMODE(info.st_mode) & 0o777

    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(temporary, target)
        temporary = None
    except OSError as error:
        raise InputError(
            f"cannot write {path}: {error.strerror}; check the folder exists and is writable"
        ) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                Path(temporary).unlink()


def emit(data: bytes) -> None:
    """Write ``data`` to standard output; a closed or failing output raises :class:`OutputError`."""
    if sys.stdout is None:
        # Python sets sys.stdout to None when the process starts with file descriptor 1 closed.
        raise OutputError("standard output is closed, so the output cannot be written; run without >&-")
    try:
        # BufferedWriter.write can return a short count when a signal handler ran during a
        # partial write to a pipe (CPython 3.11), so write until every byte is out.
        remaining = data
        while remaining:
            written = sys.stdout.buffer.write(remaining)
            if not written:
                raise OutputError("standard output accepted no bytes, so the output cannot be written")
            remaining = remaining[written:]
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        raise OutputError("standard output was closed before the output was written (broken pipe)") from None
    except OSError as error:
        _discard_stdout()
        raise OutputError(f"cannot write to standard output: {error.strerror}") from None


def _discard_stdout() -> None:
    # Later flushes at interpreter exit would raise again, so point stdout at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
