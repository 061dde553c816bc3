"""Reporters: one function per output format, all reading the same results document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

FORMATS = ("json", "table")


def render_json(document: Any) -> str:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def render_results_table(document: dict[str, Any]) -> str:
    """Render a results document for people: one block per rule, one line per reason, then a summary."""
    lines = []
    device = document.get("device", {})
    lines.append(
        printable(
            f"device {device.get('hostname') or '?'} (serial {device.get('serial_number') or 'unknown'}), "
            f"evaluated at {document.get('evaluated_at')}"
        )
    )
    rows = [("RULE", "STATUS", "DETAIL")]
    for result in document["results"]:
        details = list(_result_details(result))
        rows.append((result.get("rule_name") or result["rule_id"], result["status"].upper(), details[0]))
        rows.extend(("", "", detail) for detail in details[1:])
    lines.extend(_align(rows))

    counts: dict[str, int] = {}
    for result in document["results"]:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    summary = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in sorted(counts.items()))
    lines.append(f"{len(document['results'])} rule(s): {summary or 'none'}")
    return "\n".join(lines) + "\n"


def _result_details(result: dict[str, Any]) -> list[str]:
    details = []
    subjects = {
        candidate["fingerprint_sha256"]: candidate.get("subject", "")
        for candidate in result.get("candidates", [])
    }
    for fingerprint in result.get("matched_certificates", []):
        details.append(f"matched {subjects.get(fingerprint) or fingerprint} ({fingerprint[:16]}…)")
    for reason in result.get("reasons", []):
        # Skipped because each candidate's own reasons follow and are more specific than this summary.
        if reason["code"] != "no_matching_certificate":
            details.append(f"{reason['code']}: {reason['message']}")
    if result["status"] != "passed":
        for candidate in result.get("candidates", []):
            location = candidate.get("source", {}).get("location", "")
            for reason in candidate.get("reasons", []):
                details.append(
                    f"{candidate.get('subject', '')} [{location}] {reason['code']}: {reason['message']}"
                )
        for error in result.get("errors", []):
            details.append(f"collection error at {error['location']} ({error['step']}): {error['message']}")
    return details or [""]


def render_records_table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    rows = [tuple(column.upper() for column in columns)]
    rows.extend(tuple(_cell(record.get(column)) for column in columns) for record in records)
    return "\n".join(_align(rows)) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def printable(text: str) -> str:
    """Escape control characters so that certificate text cannot move the cursor or recolor a terminal."""
    return "".join(
        character if character.isprintable() else character.encode("unicode_escape").decode("ascii")
        for character in text
    )


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines
