"""The posture check itself: pick locations from rules, collect, evaluate, and map results to an exit code."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from certposture import engine
from certposture.errors import CertpostureError, FactsError, InputError
from certposture.store import Store
from collector.collect import Locations, collect
from collector.facts import Facts, format_utc
from collector.signers import Signer
from collector.sources.nssdb import DEFAULT_NSSDB

logger = logging.getLogger(__name__)

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 3


def locations_for_rules(rules: Sequence[dict[str, Any]]) -> Locations:
    """Union of the Linux locations the rules name; a Linux rule without paths means the system NSS database."""
    paths: list[str] = []
    nssdbs: list[str] = []
    for rule in rules:
        rule_input = rule.get("input", {})
        if rule_input.get("operating_system") != "linux":
            continue
        rule_paths = (rule_input.get("locations") or {}).get("paths") or []
        for path in rule_paths:
            if path not in paths:
                paths.append(path)
        if not rule_paths and DEFAULT_NSSDB not in nssdbs:
            nssdbs.append(DEFAULT_NSSDB)
    if not rules:
        nssdbs.append(DEFAULT_NSSDB)
    return Locations(paths=tuple(paths), nssdbs=tuple(nssdbs))


def collect_facts(
    store: Store,
    *,
    rule_id: str | None,
    paths: Sequence[str],
    nssdbs: Sequence[str],
    hostname: str | None,
    serial_number: str | None,
) -> Facts:
    """Collect facts from explicit locations, or else from the locations of the stored rules."""
    if paths or nssdbs:
        locations = Locations(
            paths=tuple(str(Path(path).absolute()) for path in paths),
            nssdbs=tuple(nssdbs),
        )
    else:
        rules = [store.get_rule(rule_id)] if rule_id else store.list_rules()
        locations = locations_for_rules(rules)
    signers = [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]
    logger.debug("collecting from paths=%s nssdbs=%s", locations.paths, locations.nssdbs)
    try:
        return collect(locations, signers, hostname=hostname, serial_number=serial_number)
    except ValueError as error:
        # The collector rejects empty --hostname and --serial-number overrides.
        raise InputError(str(error)) from None


def parse_facts(raw: bytes, source: str) -> Facts:
    try:
        return Facts.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as error:
        raise FactsError(
            f"{source}: facts are not valid JSON ({error}); pass the output of `certposture collect`"
        ) from None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        location = ".".join(str(part) for part in first["loc"]) or "document"
        raise FactsError(
            f"{source}: facts are invalid at {location}: {first['msg']} "
            f"({error.error_count()} problem(s)); pass the output of `certposture collect`"
        ) from None


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset, such as 2026-12-04T19:00:00Z."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--at {value!r} is not an RFC 3339 time; write it as 2026-12-04T19:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise InputError(f"--at {value!r} has no timezone; append Z for UTC or an offset such as +01:00")
    return parsed.astimezone(UTC)


def evaluate_facts(
    store: Store,
    facts: Facts | None,
    *,
    at: datetime | None,
    rule_id: str | None = None,
    facts_error: CertpostureError | None = None,
) -> tuple[dict[str, Any], CertpostureError | None]:
    """Evaluate facts against the stored rules; return the results document and the error, if any.

    When the facts are missing (``facts_error`` given) or the policies fail, every
    rule is reported with status ``error`` so that nothing passes.
    """
    rules = [store.get_rule(rule_id)] if rule_id else store.list_rules()
    if not rules:
        raise InputError("no rules stored; add one with `certposture rules add FILE`")
    evaluated_at = at or datetime.now(UTC)
    device: dict[str, str | None] = {"hostname": None, "serial_number": None}
    if facts is not None:
        device = {"hostname": facts.device.hostname, "serial_number": facts.device.serial_number}

    error = facts_error
    results: list[dict[str, Any]] = []
    if facts is not None:
        config = engine.build_config(rules, store.list_signing_certificates(), evaluated_at)
        try:
            results = engine.evaluate(facts, config)
        except CertpostureError as policy_error:
            error = policy_error
    if error is not None:
        results = [_error_result(rule, error) for rule in rules]

    document = {"evaluated_at": format_utc(evaluated_at), "device": device, "results": results}
    return document, error


def _error_result(rule: dict[str, Any], error: CertpostureError) -> dict[str, Any]:
    return {
        "rule_id": rule["id"],
        "rule_name": rule.get("name"),
        "type": rule.get("type"),
        "status": "error",
        "passed": False,
        "matched_certificates": [],
        "candidates": [],
        "reasons": [
            {
                "code": "evaluation_error",
                "condition": "rule",
                "message": f"the rule could not be evaluated, so it does not pass: {error}",
                "expected": None,
                "actual": None,
            }
        ],
        "errors": [],
    }


def exit_code(results: Sequence[dict[str, Any]]) -> int:
    """0 when every applicable rule passed, 1 when one failed or none applies, 3 when one could not be evaluated."""
    statuses = [result["status"] for result in results]
    if "error" in statuses:
        return EXIT_ERROR
    applicable = [status for status in statuses if status != "not_applicable"]
    if not applicable or "failed" in applicable:
        return EXIT_FAILED
    return EXIT_PASSED
