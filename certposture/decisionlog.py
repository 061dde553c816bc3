"""OPA-style decision log: one JSON event per evaluation, appended to a JSON Lines file.

An event has the fields of OPA's decision log events (OPA v1 documentation,
"Decision Logs"): ``decision_id``, ``path``, ``input``, ``result``,
``timestamp``, ``labels``, ``metrics`` and, when a mask removed a value,
``erased``. Masks are JSON pointers under ``/input`` or ``/result``, as in
OPA's ``system.log.mask`` rules. The pointer of each removed value is listed
in ``erased``. A pointer that names no value is not listed.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from certposture import __version__
from certposture.engine import policy_input
from certposture.errors import CertpostureError, InputError
from collector.facts import Facts

DECISION_PATH = "certposture/posture/results"
DEVICE_MASKS = ("/input/device/hostname", "/input/device/serial_number")

_ARRAY_INDEX = re.compile(r"^(0|[1-9][0-9]*)\Z")


class DecisionLogError(CertpostureError):
    """The decision log file cannot be written (exit code 3); the results are still printed."""


def mask_pointers(masks: Sequence[str], mask_device: bool) -> list[str]:
    """Validate the ``--mask`` pointers, add the device ones for ``--mask-device`` and drop duplicates."""
    pointers = [*masks, *(DEVICE_MASKS if mask_device else ())]
    for pointer in pointers:
        _split_pointer(pointer)
    return list(dict.fromkeys(pointers))


def _split_pointer(pointer: str) -> list[str]:
    """Split a JSON pointer (RFC 6901) into its reference tokens; raise InputError unless it starts with /input or /result."""
    if pointer.split("/")[:2] not in (["", "input"], ["", "result"]):
        raise InputError(
            f"--mask {pointer!r} is not a JSON pointer under /input or /result; "
            "write it as /input/device/serial_number"
        )
    tokens = pointer.split("/")[1:]
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise InputError(
                f"--mask {pointer!r} has a '~' that is not ~0 or ~1; write ~0 for '~' and ~1 for '/'"
            )
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def build_event(
    facts: Facts | None,
    results: list[dict[str, Any]],
    masks: Sequence[str] = (),
    metrics: dict[str, int] | None = None,
    timestamp_ns: int | None = None,
    proof_verification: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one decision event with the masks applied.

    ``input`` is what the policies read: the facts without ``proofs`` and,
    with ``--require-proof``, the ``proof_verification`` verdicts, so that the
    event can be replayed on OPA. It is left out when the facts could not be
    read, as OPA leaves it out of a query without input. ``timestamp_ns`` defaults to the current
    wall-clock time in nanoseconds since the epoch.
    """
    document: dict[str, Any] = {}
    if facts is not None:
        document["input"] = policy_input(facts, proof_verification)
    document["result"] = orjson.loads(orjson.dumps(results))
    erased = [pointer for pointer in masks if _remove(document, _split_pointer(pointer))]

    event: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "path": DECISION_PATH,
        **document,
        "timestamp": format_rfc3339_nano(time.time_ns() if timestamp_ns is None else timestamp_ns),
        "labels": {"app": "certposture", "version": __version__},
    }
    if metrics:
        event["metrics"] = metrics
    if erased:
        event["erased"] = erased
    return event


def _remove(document: Any, tokens: list[str]) -> bool:
    """Remove the value at ``tokens`` from ``document``; return False when there is none."""
    parent = document
    for token in tokens[:-1]:
        parent = _child(parent, token)
        if parent is None:
            return False
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and _ARRAY_INDEX.match(last) and int(last) < len(parent):
        del parent[int(last)]
        return True
    return False


def _child(value: Any, token: str) -> Any:
    if isinstance(value, dict):
        return value.get(token)
    if isinstance(value, list) and _ARRAY_INDEX.match(token) and int(token) < len(value):
        return value[int(token)]
    return None


def format_rfc3339_nano(timestamp_ns: int) -> str:
    """Format a time in UTC as Go's time.RFC3339Nano layout does, dropping trailing zeros of the fraction.

    OPA's decision events carry Go time.Time values, which encode to JSON in that layout.
    """
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    fraction = f"{nanoseconds:09d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def append_event(path: str, event: dict[str, Any]) -> None:
    """Append ``event`` as one line to the regular file ``path``, creating it with mode 0600.

    The line is written with one O_APPEND write, so earlier events are never
    overwritten. When the file does not end in a newline (a line cut short by
    a crash), a newline is written first, so each event stays on its own line.
    """
    if path == "":
        raise InputError("--decision-log is empty; give a file to append decision events to")
    line = orjson.dumps(event) + b"\n"
    # O_NONBLOCK keeps open() from waiting for a reader when the path is a FIFO.
    flags = os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
    readable = True
    try:
        try:
            descriptor = os.open(path, os.O_RDWR | flags, 0o600)
        except PermissionError:
            # A file we may append to but not read: skip the check of its last byte.
            descriptor = os.open(path, os.O_WRONLY | flags, 0o600)
            readable = False
    except OSError as error:
        raise DecisionLogError(
            f"cannot append to decision log {path}: {error.strerror}; check the folder exists and is writable"
        ) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise DecisionLogError(
                f"cannot append to decision log {path}: it is not a regular file; give a file"
            )
        if readable and info.st_size > 0 and os.pread(descriptor, 1, info.st_size - 1) != b"\n":
            line = b"\n" + line
        while line:
            written = os.write(descriptor, line)
            line = line[written:]
    except OSError as error:
        raise DecisionLogError(f"cannot append to decision log {path}: {error.strerror}") from None
    finally:
        os.close(descriptor)
