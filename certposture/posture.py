"""The posture check itself: pick locations from rules, collect, evaluate, and map results to an exit code."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from certposture import posturelog
from certposture.errors import CertpostureError, FactsError, InputError, StoreError
from certposture.store import Store
from collector.collect import Locations, collect
from collector.facts import Facts, format_utc
from collector.platforms import (
    TRUST_STORES,
    Platform,
    UnsupportedPlatformError,
    detect_platform,
    require_supported,
)
from collector.signers import Signer
from collector.sources.nssdb import DEFAULT_NSSDB
from collector.sources.pem import DEFAULT_LIMITS, PemLimits

if TYPE_CHECKING:
    from certposture.proofcheck import ProofVerifier
    from collector.proofs import PasswordPrompt

logger = logging.getLogger(__name__)

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 3


def locations_for_rules(rules: Sequence[dict[str, Any]], platform: Platform = "linux") -> Locations:
    """Union of the locations that the rules for ``platform`` name.

    On Linux a rule without paths means the system NSS database; on macOS
    and Windows a rule without trust stores means ``system``. With no rules
    at all, those defaults are collected.
    """
    if platform != "linux":
        return _trust_store_locations(rules, platform)
    paths: list[str] = []
    nssdbs: list[str] = []
    for rule in rules:
        rule_input = _object(rule.get("input"))
        if rule_input.get("operating_system") != "linux":
            continue
        rule_paths = _strings(_object(rule_input.get("locations")).get("paths"))
        for path in rule_paths:
            if path.startswith("/") and path not in paths:
                paths.append(path)
        if not rule_paths and DEFAULT_NSSDB not in nssdbs:
            nssdbs.append(DEFAULT_NSSDB)
    if not rules:
        nssdbs.append(DEFAULT_NSSDB)
    return Locations(paths=tuple(paths), nssdbs=tuple(nssdbs))


def _trust_store_locations(rules: Sequence[dict[str, Any]], platform: Platform) -> Locations:
    stores: list[str] = []
    for rule in rules:
        rule_input = _object(rule.get("input"))
        if rule_input.get("operating_system") != platform:
            continue
        for store in _strings(_object(rule_input.get("locations")).get("trust_stores")) or ["system"]:
            if store in TRUST_STORES.get(platform, ()) and store not in stores:
                stores.append(store)
    if not rules:
        stores.append("system")
    return Locations(trust_stores=tuple(stores))


# A rule edited by hand in the store can hold any JSON. Values of the wrong shape add no
# location here, and the policy reports such a rule as invalid_rule.
def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def collect_facts(
    store: Store,
    *,
    rule_id: str | None,
    paths: Sequence[str],
    nssdbs: Sequence[str],
    hostname: str | None,
    serial_number: str | None,
    trust_stores: Sequence[str] = (),
    platform: Platform | None = None,
    pem_limits: PemLimits = DEFAULT_LIMITS,
    rules: Sequence[dict[str, Any]] | None = None,
    challenge: str | None = None,
    nss_password: str | None = None,
    password_prompt: PasswordPrompt | None = None,
) -> Facts:
    """Collect facts from explicit locations, or else from the locations of the stored rules.

    ``challenge``, ``nss_password`` and ``password_prompt`` add proofs of
    possession, as ``collector.collect.collect`` describes.

    ``rules`` replaces the stored rules, so that ``check`` collects for the
    same rules it then evaluates even when another process changes the store.

    ``platform`` replaces the detected operating system family, and
    ``pem_limits`` bounds each PEM or DER file. Raises ``InputError`` on iOS,
    Android and ChromeOS, which have no client certificate check.
    """
    family = detect_platform() if platform is None else platform
    try:
        require_supported(family)
    except UnsupportedPlatformError as error:
        raise InputError(str(error)) from None
    for option, values, expected in (
        ("--path", paths, "a file or folder"),
        ("--nssdb", nssdbs, "a database folder"),
        ("--trust-store", trust_stores, "system or user"),
    ):
        for value in values:
            if value.strip() in ("", "sql:"):
                raise InputError(f"{option} is empty; give {expected} (an unset shell variable?)")
    if paths or nssdbs or trust_stores:
        locations = Locations(
            paths=tuple(str(Path(path).absolute()) for path in paths),
            nssdbs=tuple(nssdbs),
            trust_stores=tuple(trust_stores),
        )
    else:
        selected = rules if rules is not None else select_rules(store, rule_id)
        locations = locations_for_rules(selected, family)
    signers = stored_signers(store)
    logger.debug(
        "collecting on %s from paths=%s nssdbs=%s trust_stores=%s with %s",
        family,
        locations.paths,
        locations.nssdbs,
        locations.trust_stores,
        pem_limits,
    )
    try:
        return collect(
            locations,
            signers,
            hostname=hostname,
            serial_number=serial_number,
            platform=family,
            pem_limits=pem_limits,
            challenge=challenge,
            nss_password=nss_password,
            password_prompt=password_prompt,
        )
    except ValidationError as error:
        # A ValidationError is a ValueError, but it means the collector built invalid facts, not bad input.
        raise FactsError(f"the collector produced invalid facts: {error.errors()[0]['msg']}") from None
    except ValueError as error:
        # The collector rejects empty --hostname and --serial-number overrides
        # and trust stores that the platform does not have.
        raise InputError(str(error)) from None


def stored_signers(store: Store) -> list[Signer]:
    """Return the stored signing certificates as signers for the direct-issuer check."""
    return [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]


def select_rules(store: Store, rule_id: str | None) -> list[dict[str, Any]]:
    """Return the stored rules, or only the rule ``rule_id``; raise NotFoundError for an unknown id."""
    if rule_id is None:
        return store.list_rules()
    if not rule_id.strip():
        raise InputError(
            "--rule is empty; give a rule id from `certposture rules list` (an unset shell variable?)"
        )
    return [store.get_rule(rule_id)]


def parse_facts(raw: bytes, source: str, json_fix: str = "pass the output of `certposture collect`") -> Facts:
    """Validate a facts document strictly: JSON types must match, so ``"yes"`` is not a boolean.

    ``json_fix`` ends the message for input that is not JSON at all.
    """
    try:
        return Facts.model_validate_json(raw, strict=True)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise FactsError(f"{source}: facts are not valid JSON ({first['msg']}); {json_fix}") from None
        if _is_opa_input(raw):
            raise FactsError(
                f'{source}: this is an OPA input document ({{"input": facts}}, from collect --format opa-input); '
                "pass the facts inside it, or collect with the default --format json"
            ) from None
        location = ".".join(str(part) for part in first["loc"]) or "document"
        raise FactsError(
            f"{source}: facts are invalid at {location}: {first['msg']} "
            f"({error.error_count()} problem(s)); pass the output of `certposture collect`"
        ) from None


def _is_opa_input(raw: bytes) -> bool:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and list(document) == ["input"]


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset, such as 2026-12-04T19:00:00Z.

    The year must lie in 1678-2261: Rego's time builtins count nanoseconds in a
    signed 64-bit integer, which covers 1677-09-21 to 2262-04-11.
    """
    if not _RFC3339.match(value):
        if _RFC3339.match(value + "Z"):
            raise InputError(f"--at {value!r} has no timezone; append Z for UTC or an offset such as +01:00")
        raise InputError(f"--at {value!r} is not an RFC 3339 time; write it as 2026-12-04T19:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError:
        raise InputError(
            f"--at {value!r} is not a valid date and time; write it as 2026-12-04T19:00:00Z"
        ) from None
    parsed = parsed.astimezone(UTC)
    if not 1678 <= parsed.year <= 2261:
        raise InputError(f"--at {value!r} is outside the years 1678 to 2261 that Rego time functions cover")
    return parsed


class PostureEvaluator:
    """Evaluates facts documents against fixed rules, signing certificates and time, loading the policies once.

    The rules are evaluated together. When that fails for a device, each rule
    is evaluated on its own, so that only the rules that fail to evaluate are
    reported as ``error``. Engines are built when first needed and kept, and
    an engine that cannot be built is remembered as the error for every
    device.
    """

    def __init__(
        self,
        rules: Sequence[dict[str, Any]],
        signing_certificates: Sequence[dict[str, Any]],
        evaluated_at: datetime,
        policy_dirs: Sequence[Path],
        *,
        explain: bool = False,
        verifier: ProofVerifier | None = None,
    ) -> None:
        self.rules = list(rules)
        self._verifier = verifier
        self.evaluated_at = evaluated_at
        self._signing_certificates = list(signing_certificates)
        self._policy_dirs = list(policy_dirs)
        self._explain = explain
        self._evaluators: dict[int | None, Any] = {}

    def _evaluator(self, index: int | None) -> Any:
        """Return the engine for every rule (``index`` None) or for rule ``index`` alone; raise its build error."""
        from certposture import engine

        if index not in self._evaluators:
            rules = self.rules if index is None else [self.rules[index]]
            try:
                config = engine.build_config(
                    rules,
                    self._signing_certificates,
                    self.evaluated_at,
                    explain=self._explain,
                    require_proof=self._verifier is not None,
                )
                self._evaluators[index] = engine.Evaluator(config, self._policy_dirs)
            except CertpostureError as error:
                self._evaluators[index] = error
        built = self._evaluators[index]
        if isinstance(built, CertpostureError):
            raise built
        return built

    def evaluate(self, facts: Facts) -> tuple[list[dict[str, Any]], list[CertpostureError]]:
        """Return one result per rule, in rule order, and the errors met; an error is a result with status error.

        With a proof verifier, its verdicts go to the policies beside the facts.
        """
        verification = self._verifier.verify(facts) if self._verifier is not None else None
        try:
            return self._evaluator(None).evaluate(facts, verification), []
        except CertpostureError:
            pass
        results: list[dict[str, Any]] = []
        errors: list[CertpostureError] = []
        for index, rule in enumerate(self.rules):
            try:
                results.extend(self._evaluator(index).evaluate(facts, verification))
            except CertpostureError as rule_error:
                errors.append(rule_error)
                results.append(error_result(rule, rule_error))
        return results, errors

    def document(self, facts: Facts | None, results: list[dict[str, Any]]) -> dict[str, Any]:
        """Build the results document that ``evaluate`` prints for one device."""
        return results_document(self.evaluated_at, facts, results)


def results_document(
    evaluated_at: datetime, facts: Facts | None, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Build the results document: evaluation time, collection time, device and results."""
    device: dict[str, str | None] = {"hostname": None, "serial_number": None}
    if facts is not None:
        device = {"hostname": facts.device.hostname, "serial_number": facts.device.serial_number}
    document: dict[str, Any] = {"evaluated_at": format_utc(evaluated_at)}
    if facts is not None:
        # When the device was observed: decisions measure a result's age from here, so evaluating
        # old facts again does not make them fresh.
        document["collected_at"] = format_utc(facts.collected_at)
    document.update(device=device, results=results)
    return document


def prepare_rules(
    store: Store, rule_id: str | None, rules: Sequence[dict[str, Any]] | None, extra_policies: Sequence[Path]
) -> tuple[list[dict[str, Any]], list[Path]]:
    """Select the rules and check the extra policies; return the rules and every policy folder to load."""
    from certposture import engine

    selected = list(rules) if rules is not None else select_rules(store, rule_id)
    if not selected:
        raise InputError("no rules stored; add one with `certposture rules add FILE`")
    if extra_policies:
        engine.check_policies(extra_policies)
    return selected, [engine.shipped_policy_dir(), *extra_policies]


def evaluate_facts(
    store: Store,
    facts: Facts | None,
    *,
    at: datetime | None,
    rule_id: str | None = None,
    facts_error: CertpostureError | None = None,
    extra_policies: Sequence[Path] = (),
    explain: bool = False,
    rules: Sequence[dict[str, Any]] | None = None,
    verifier: ProofVerifier | None = None,
) -> tuple[dict[str, Any], list[CertpostureError]]:
    """Evaluate facts against the stored rules; return the results document and the errors met.

    ``extra_policies`` are folders or files of Rego loaded beside the shipped
    policies; ``explain`` adds every condition's outcome to each candidate.

    When the facts are missing (``facts_error`` given), every rule is reported
    with status ``error`` so that nothing passes. When the policies fail, each
    rule is evaluated on its own, so that only the rules that fail to evaluate
    are reported as ``error``.

    ``verifier`` (from :func:`proof_verifier`) makes every candidate need a
    verified proof of possession (see ``certposture.proofcheck``).
    """
    rules, policy_dirs = prepare_rules(store, rule_id, rules, extra_policies)
    evaluated_at = at or datetime.now(UTC)

    errors: list[CertpostureError] = []
    if facts is None:
        error = facts_error or FactsError("no facts to evaluate")
        errors.append(error)
        results = [error_result(rule, error) for rule in rules]
    else:
        evaluator = PostureEvaluator(
            rules,
            store.list_signing_certificates(),
            evaluated_at,
            policy_dirs,
            explain=explain,
            verifier=verifier,
        )
        results, errors = evaluator.evaluate(facts)
    return results_document(evaluated_at, facts, results), errors


def proof_verifier(store: Store, nonce: str) -> ProofVerifier:
    """Build the verifier for ``evaluate --require-proof NONCE``: the nonce's standing now, and the signers."""
    from certposture.challenge import check_nonce_format, nonce_problem
    from certposture.proofcheck import ProofVerifier

    check_nonce_format(nonce)
    signers = stored_signers(store)
    return ProofVerifier(nonce=nonce, nonce_problem=nonce_problem(store, nonce), signers=signers)


def record_posture_log(store: Store, document: dict[str, Any], facts: Facts | None) -> str | None:
    """Append the results to the store's posture log; return a warning instead of raising when that fails.

    A store that cannot be written must not fail the evaluation, so the
    StoreError becomes the returned message for the caller to show.
    """
    try:
        posturelog.record_results(store, document, facts, store.list_rules())
    except StoreError as error:
        logger.debug("posture log not written: %s", error)
        return f"posture log not written: {error}"
    return None


def error_result(rule: dict[str, Any], error: CertpostureError) -> dict[str, Any]:
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
