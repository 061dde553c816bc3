"""Posture log: one record per rule result of every evaluation, kept in the store.

The fields follow Cloudflare's device posture results log (Logpush dataset
``device_posture_results``) in snake case: ``timestamp`` (Timestamp),
``rule_id`` (PolicyID), ``rule_name`` (PostureCheckName), ``rule_type``
(PostureCheckType), ``passed`` (PostureEvaluatedResult), ``expected``
(PostureExpectedJSON), ``received`` (PostureReceivedJSON), ``device_name``
(DeviceName), ``serial_number`` (DeviceSerialNumber), ``os_version``
(OSVersion) and ``client_version`` (ClientVersion).

Records are built from the results document and the facts, which never hold
private key material, so neither do the records.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from certposture import __version__
from certposture.errors import InputError
from certposture.store import PostureLogRow, Store
from collector.facts import Facts

RECORD_FIELDS = (
    "timestamp",
    "rule_id",
    "rule_name",
    "rule_type",
    "passed",
    "expected",
    "received",
    "device_name",
    "serial_number",
    "os_version",
    "client_version",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"^([0-9]+)([smhd])\Z")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def build_records(
    document: dict[str, Any], facts: Facts | None, rules: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Build one record per result of ``document``; ``rules`` supply each rule's input as ``expected``.

    ``facts`` is None when the facts could not be read, and the device fields are then null.
    """
    rule_inputs = {rule["id"]: rule.get("input") for rule in rules}
    device = facts.device if facts is not None else None
    collector_version = facts.collector.version if facts is not None else "unknown"
    records = []
    for result in document["results"]:
        records.append(
            {
                "timestamp": document["evaluated_at"],
                "rule_id": result["rule_id"],
                "rule_name": result.get("rule_name"),
                "rule_type": result.get("type"),
                "passed": result["passed"] is True,
                "expected": rule_inputs.get(result["rule_id"]),
                "received": _received(result),
                "device_name": device.hostname if device is not None else None,
                "serial_number": device.serial_number if device is not None else None,
                "os_version": device.os.version if device is not None else None,
                "client_version": f"certposture/{__version__} collector/{collector_version}",
            }
        )
    return records


def _received(result: dict[str, Any]) -> dict[str, Any]:
    """Summarize what the device had: the matched certificates, else each candidate's reason codes."""
    candidates = {candidate["fingerprint_sha256"]: candidate for candidate in result.get("candidates", [])}
    matched = [
        _certificate_summary(fingerprint, candidates.get(fingerprint, {}))
        for fingerprint in result.get("matched_certificates", [])
    ]
    failing = []
    if not matched:
        # Every candidate, not one per fingerprint: copies of a certificate in two files are two candidates.
        for candidate in result.get("candidates", []):
            summary = _certificate_summary(candidate["fingerprint_sha256"], candidate)
            summary["reasons"] = [reason["code"] for reason in candidate.get("reasons", [])]
            failing.append(summary)
    return {
        "status": result["status"],
        "matched_certificates": matched,
        "candidates": failing,
        "reasons": [reason["code"] for reason in result.get("reasons", [])],
        "collection_errors": len(result.get("errors", [])),
    }


def _certificate_summary(fingerprint: str, candidate: dict[str, Any]) -> dict[str, Any]:
    return {
        "fingerprint_sha256": fingerprint,
        "subject": candidate.get("subject"),
        "location": (candidate.get("source") or {}).get("location"),
    }


def record_results(
    store: Store, document: dict[str, Any], facts: Facts | None, rules: Sequence[dict[str, Any]]
) -> int:
    """Append one record per result to the store's posture log and return how many were appended.

    Raises StoreError when the store is read-only or cannot be written, and
    the caller decides whether that fails the evaluation.
    """
    rows = build_rows(document, facts, rules)
    if not rows:
        return 0
    store.append_posture_log(rows)
    return len(rows)


def build_rows(
    document: dict[str, Any], facts: Facts | None, rules: Sequence[dict[str, Any]]
) -> list[PostureLogRow]:
    """Build the posture-log rows of ``document``, one per result, ready for ``Store.append_posture_log``."""
    return [
        PostureLogRow(
            timestamp_us=_epoch_microseconds(_parse_timestamp(record["timestamp"])),
            rule_id=record["rule_id"],
            device_name=record["device_name"],
            passed=record["passed"],
            record=orjson.dumps(record).decode(),
        )
        for record in build_records(document, facts, rules)
    ]


def query(
    store: Store,
    rule_id: str | None = None,
    device: str | None = None,
    since: datetime | None = None,
    failed_only: bool = False,
) -> list[dict[str, Any]]:
    """Return the records that match every filter given, oldest evaluation time first.

    ``device`` matches the device name, comparing the ASCII letters
    case-insensitively. ``since`` keeps records evaluated at or after it.
    ``failed_only`` keeps records whose ``passed`` is false, which are those
    with status failed, error or not_applicable.
    """
    return store.select_posture_log(
        rule_id=rule_id,
        device_name=device,
        since_us=_epoch_microseconds(since) if since is not None else None,
        failed_only=failed_only,
    )


def parse_duration(text: str, option: str = "--since", example: str = "12h") -> timedelta:
    """Parse a duration such as 30m, 12h or 7d (units s, m, h, d) for ``logs --since`` or ``option``.

    Messages quote at most 40 characters of ``text``.
    """
    match = _DURATION.match(text)
    if match is None:
        raise InputError(
            f"{option} {text[:40]!r} is not a duration; write a whole number and a unit s, m, h or d, "
            f"such as {example}"
        )
    amount, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(**{_DURATION_UNITS[unit]: amount})
    except OverflowError:
        raise InputError(f"{option} {text[:40]!r} is too long; give at most 999999999d") from None


def since_time(duration: timedelta, now: datetime | None = None) -> datetime | None:
    """Return the time ``duration`` before ``now``, or None (no lower bound) when it precedes year 1."""
    try:
        return (now or datetime.now(UTC)) - duration
    except OverflowError:
        return None


def _parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _epoch_microseconds(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)
