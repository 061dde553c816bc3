"""Explanation report: every candidate certificate of every rule, each condition with its expected and actual values.

It reads a results document evaluated with ``explain`` on, in which each
candidate carries ``conditions``. This is the report to read when a device
fails a rule it should pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from certposture.report import printable

_STATUS_LABELS = {"passed": "passed", "failed": "FAILED", "not_checked": "not checked"}
_NOT_CHECKED_NOTES = {
    "cn": "the rule sets no cn",
    "extended_key_usage": "the rule requires no extended key usage",
    "private_key": "check_private_key is false",
    "subject_alternative_names": "the rule lists no subject alternative names",
}


def render_explanation(document: dict[str, Any]) -> str:
    """Render a results document evaluated with ``explain`` on, for people."""
    device = document.get("device", {})
    lines = [
        f"device {device.get('hostname') or '?'} (serial {device.get('serial_number') or 'unknown'}), "
        f"evaluated at {document.get('evaluated_at')}"
    ]
    for result in document["results"]:
        lines.append("")
        lines.extend(_rule_lines(result))
    return "\n".join(printable(line) for line in lines) + "\n"


def _rule_lines(result: dict[str, Any]) -> Iterator[str]:
    name = result.get("rule_name") or result["rule_id"]
    yield f"rule {name!r} (id {result['rule_id']}): {result['status'].upper()}"
    for reason in result.get("reasons", []):
        yield f"  {reason['code']}: {reason['message']}"
        if reason["code"] == "no_certificate":
            yield f"    searched: {_scope_text(reason.get('expected'))}"
    candidates = result.get("candidates", [])
    if candidates:
        yield f"  {len(candidates)} candidate certificate(s):"
    for candidate in candidates:
        yield from _candidate_lines(candidate)
    errors = result.get("errors", [])
    if errors:
        yield f"  {len(errors)} collection error(s) in the rule's locations, which may hide a certificate:"
        for error in errors:
            yield f"    {error['location']} ({error['step']}): {error['message']}"


def _candidate_lines(candidate: dict[str, Any]) -> Iterator[str]:
    source = candidate.get("source", {})
    label = f", label {source['label']!r}" if source.get("label") else ""
    verdict = "meets every condition" if candidate.get("passed") else "does not meet every condition"
    yield f"  - {candidate.get('subject') or '(empty subject)'}: {verdict}"
    yield f"    sha256 {candidate['fingerprint_sha256']}, {source.get('type')} {source.get('location')}{label}"
    reasons_by_condition: dict[str, list[dict[str, Any]]] = {}
    for reason in candidate.get("reasons", []):
        reasons_by_condition.setdefault(reason["condition"], []).append(reason)
    for condition in candidate.get("conditions", []):
        name = condition["condition"]
        status = _STATUS_LABELS.get(condition["status"], condition["status"])
        if condition["status"] == "not_checked":
            note = _NOT_CHECKED_NOTES.get(name, "the rule does not ask for it")
            yield f"    {status:<11} {name} ({note})"
            continue
        yield f"    {status:<11} {name}"
        yield f"                  expected: {_value_text(condition.get('expected'))}"
        yield f"                  actual:   {_value_text(condition.get('actual'))}"
        for reason in reasons_by_condition.pop(name, []):
            yield f"                  {reason['code']}: {reason['message']}"
    # Reasons whose condition has no record, which an extra condition may report under another name.
    for reasons in reasons_by_condition.values():
        for reason in reasons:
            yield f"    FAILED      {reason['condition']}: {reason['code']}: {reason['message']}"


def _scope_text(scope: Any) -> str:
    if not isinstance(scope, dict):
        return _value_text(scope)
    if scope.get("source") == "pem":
        return f"PEM and DER files under {_value_text(scope.get('paths'))}"
    if scope.get("source") == "nssdb":
        return "the NSS database the collector read"
    return f"{scope.get('source')} stores {_value_text(scope.get('trust_stores'))}"


def _value_text(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value) if value else "(none)"
    return orjson.dumps(_reading_order(value)).decode()


# Rego returns object keys sorted; these come first, in this order, so that
# not_before precedes not_after and a status precedes its location.
_FIRST_KEYS = ("not_before", "not_after", "present", "status", "certificate_id", "issuer", "name", "dns")


def _reading_order(value: Any) -> Any:
    if isinstance(value, dict):
        keys = [key for key in _FIRST_KEYS if key in value] + [key for key in value if key not in _FIRST_KEYS]
        return {key: _reading_order(value[key]) for key in keys}
    if isinstance(value, list):
        return [_reading_order(item) for item in value]
    return value
