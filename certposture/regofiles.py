"""Find and read the Rego and data files that the Rego test runner loads, and define :class:`RegoLoadError`.

certposture.engine imports certposture.regoast, which raises RegoLoadError,
so this module must not import certposture.engine.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from certposture.errors import CertpostureError, InputError
from certposture.files import read_input

MIB = 1024 * 1024
# regorus rejects a policy file larger than 1 MiB, so a larger one is reported before it is parsed.
MAX_REGO_FILE = 1 * MIB


class RegoLoadError(CertpostureError):
    """A Rego or data file is missing, unreadable, invalid or does not compile (exit code 1, as ``opa test``)."""

    exit_code = 1


def rego_file_too_large(path: Path, size: int) -> str:
    return (
        f"{path} is {size} bytes, larger than the 1 MiB that regorus accepts for one policy file; "
        "split the policy into smaller files"
    )


def rego_files(paths: Sequence[Path]) -> list[str]:
    """Return the Rego files to load as display names, each real file once, in the order given."""
    seen: set[Path] = set()
    files: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(candidate for candidate in path.rglob("*.rego") if candidate.is_file())
            if not found:
                raise RegoLoadError(
                    f"no .rego files found under {path}; give a folder that contains Rego files"
                )
        elif path.exists() and path.suffix == ".rego":
            found = [path]
        elif path.exists():
            raise RegoLoadError(
                f"{path} is not a .rego file; pass Rego files or folders, and data documents with --data"
            )
        else:
            raise RegoLoadError(f"path {path} not found; check the path")
        for file in found:
            _check_file_name(file, path)
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                files.append(str(file))
    return files


def _check_file_name(file: Path, root: Path) -> None:
    """Reject a file name that is not valid UTF-8, which regorus and the JSON output cannot carry."""
    try:
        str(file).encode("utf-8")
    except UnicodeEncodeError:
        # os.fsdecode turned the invalid bytes into lone surrogates, which are shown as \xNN escapes.
        escaped = os.fsencode(file).decode("utf-8", "backslashreplace")
        raise RegoLoadError(
            f"{escaped}: the file name is not valid UTF-8; rename the file or move it out of {root}"
        ) from None


def read_text(path: Path, max_bytes: int, too_large: Callable[[Path, int], str]) -> str:
    """Read a UTF-8 text file of at most ``max_bytes``. ``too_large(path, size)`` words the error for a larger one."""
    try:
        info = os.stat(path)
    except OSError:
        info = None  # read_input reports a missing or unreadable file
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
        raise RegoLoadError(too_large(path, info.st_size))
    try:
        # One byte more than the limit shows a file that grew after the check above.
        raw = read_input(str(path), max_bytes + 1)
    except InputError as error:
        raise RegoLoadError(str(error)) from None
    if len(raw) > max_bytes:
        raise RegoLoadError(too_large(path, len(raw)))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RegoLoadError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
