"""Access and Gateway decisions for one request: its identity, client certificate and device posture.

The posture comes from a facts document, evaluated here against the stored
rules, or from a results document printed by ``certposture evaluate``. Each
result becomes a posture entry with the stored rule's ``expiration``, and the
shipped policy ``certposture.posture_state`` marks an expired result as failed.
The decision itself is made by ``certposture.access`` or ``certposture.gateway``.
Any evaluation failure raises :class:`PolicyError`, never an allow.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import regorus

from certposture import engine, posture
from certposture.errors import CertpostureError, InputError, PolicyError
from certposture.gateway import load_gateway_document
from certposture.report import printable
from certposture.store import Store
from collector.facts import format_utc

logger = logging.getLogger(__name__)

ACCESS_QUERY = "data.certposture.access.decision"
GATEWAY_QUERY = "data.certposture.gateway.decision"

ACCESS_DECISIONS = ("allow", "deny", "bypass", "non_identity")
# Cloudflare admits a request that matches a bypass or non_identity (service auth) policy
# without an identity check, so both count as allowed, like allow.
ADMITTING_DECISIONS = ("allow", "bypass", "non_identity")
RULE_GROUPS = ("include", "require", "exclude")
# The string parameter each selector takes; None marks a selector whose parameter is an empty object.
SELECTOR_PARAMETERS: dict[str, str | None] = {
    "everyone": None,
    "certificate": None,
    "email": "email",
    "email_domain": "domain",
    "group": "id",
    "ip": "ip",
    "device_posture": "integration_uid",
    "common_name": "common_name",
}
IDENTITY_FIELDS = ("email", "groups", "ip", "certificate")
CERTIFICATE_FIELDS = ("presented", "common_name")

EXIT_ALLOWED = 0
EXIT_DENIED = 1


# Access policies


def load_access_policies(raw: bytes, source: str) -> list[dict[str, Any]]:
    """Validate an Access policies document and return the policies in evaluation order.

    ``raw`` is a list of policies, a Cloudflare API response ``{"result": ...}``
    or one policy object. When the policies carry ``precedence``, they are
    sorted by it; otherwise the file order is kept. Selectors that certposture
    does not support are kept, because the policy then denies with the reason.
    Raises InputError naming the field and the fix.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(f"{source}: invalid JSON: {error}; pass a list of Access policies") from None
    if isinstance(document, dict) and isinstance(document.get("result"), dict | list):
        document = document["result"]
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise InputError(
            f'{source}: expected a list of Access policies, one policy object or {{"result": [...]}}'
        )
    if not document:
        raise InputError(
            f"{source}: the list has no policies, so every request would be denied; add a policy"
        )

    policies = [
        _check_policy(policy, f"{source}: policy {index + 1}") for index, policy in enumerate(document)
    ]
    _check_unique_ids(policies, source)
    return _ordered_by_precedence(policies, source)


_UNCHECKED_POLICY_STEPS = (
    "approval_required",
    "purpose_justification_required",
    "isolation_required",
    "session_duration_required",
)


def _check_policy(policy: Any, context: str) -> dict[str, Any]:
    if not isinstance(policy, dict):
        raise InputError(f"{context}: expected a JSON object, not {_json_type(policy)}")
    name = policy.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{context}: name {name!r} is invalid; give the policy a non-empty string name")
    context = f"{context} ({name!r})"
    policy_id = policy.get("id")
    if policy_id is not None and (not isinstance(policy_id, str) or not policy_id):
        raise InputError(f"{context}: id {policy_id!r} is invalid; give a non-empty string or leave id out")
    decision = policy.get("decision")
    if decision not in ACCESS_DECISIONS:
        raise InputError(
            f"{context}: decision {decision!r} is invalid; expected one of {', '.join(ACCESS_DECISIONS)}"
        )
    precedence = policy.get("precedence")
    if precedence is not None and (not isinstance(precedence, int) or isinstance(precedence, bool)):
        raise InputError(
            f"{context}: precedence {orjson.dumps(precedence).decode()} is invalid; expected an integer or no precedence"
        )

    # Cloudflare adds these steps before it grants access. certposture cannot perform them, so a
    # policy that requires one is rejected instead of allowing without the step.
    required_steps = [field for field in _UNCHECKED_POLICY_STEPS if policy.get(field)]
    if required_steps:
        raise InputError(
            f"{context}: {', '.join(required_steps)} cannot be checked by certposture; "
            "remove the setting to decide on identity and posture only"
        )

    for group in RULE_GROUPS:
        rules = policy.get(group)
        if rules is None:
            continue
        if not isinstance(rules, list):
            raise InputError(f"{context}: {group} must be a list of rules, not {_json_type(rules)}")
        for index, rule in enumerate(rules):
            _check_rule(rule, f"{context}: {group}[{index}]")
    if not policy.get("include"):
        logger.warning("%s: include is empty or missing, so the policy never matches", context)
    return policy


def _check_rule(rule: Any, context: str) -> None:
    if not isinstance(rule, dict) or len(rule) != 1:
        raise InputError(
            f'{context}: a rule must be an object with one selector, such as {{"everyone": {{}}}}'
        )
    ((selector, value),) = rule.items()
    if selector not in SELECTOR_PARAMETERS:
        logger.warning(
            "%s: selector %s is not supported, so this policy denies when it is reached; supported: %s",
            context,
            selector,
            ", ".join(SELECTOR_PARAMETERS),
        )
        return
    if not isinstance(value, dict):
        raise InputError(f"{context}: {selector} must be an object, such as {_EXAMPLES[selector]}")
    key = SELECTOR_PARAMETERS[selector]
    if key is None:
        if value:
            # {"certificate": {"common_name": "x"}} would otherwise read as a CN check that never runs.
            raise InputError(
                f"{context}: {selector} takes no parameters, so {orjson.dumps(value).decode()} would be "
                f"ignored; write {_EXAMPLES[selector]}, and use the common_name selector for a CN"
            )
        return
    text = value.get(key)
    if not isinstance(text, str) or not text:
        raise InputError(
            f"{context}: {selector}.{key} must be a non-empty string, such as {_EXAMPLES[selector]}"
        )
    if selector == "ip":
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InputError(
                f"{context}: ip.ip {text!r} is not an IP address or CIDR range; write it as 10.0.0.0/8"
            ) from None


_EXAMPLES = {
    "everyone": '{"everyone": {}}',
    "certificate": '{"certificate": {}}',
    "email": '{"email": {"email": "alice@example.com"}}',
    "email_domain": '{"email_domain": {"domain": "example.com"}}',
    "group": '{"group": {"id": "engineering"}}',
    "ip": '{"ip": {"ip": "10.0.0.0/8"}}',
    "device_posture": '{"device_posture": {"integration_uid": "<posture rule id>"}}',
    "common_name": '{"common_name": {"common_name": "device01.example.com"}}',
}


def _check_unique_ids(policies: Sequence[dict[str, Any]], source: str) -> None:
    seen: set[str] = set()
    for policy in policies:
        policy_id = policy.get("id")
        if policy_id is None:
            continue
        if policy_id in seen:
            raise InputError(f"{source}: two policies have id {policy_id!r}; give each policy its own id")
        seen.add(policy_id)


def _ordered_by_precedence(policies: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    with_precedence = [policy for policy in policies if policy.get("precedence") is not None]
    if not with_precedence:
        return policies
    if len(with_precedence) != len(policies):
        raise InputError(
            f"{source}: some policies have a precedence and others do not; give every policy one, or none"
        )
    by_precedence: dict[int, dict[str, Any]] = {}
    for policy in policies:
        first = by_precedence.setdefault(policy["precedence"], policy)
        if first is not policy:
            other = first["name"]
            raise InputError(
                f"{source}: policies {other!r} and {policy['name']!r} share precedence {policy['precedence']}; "
                "renumber one of them"
            )
    return sorted(policies, key=lambda policy: int(policy["precedence"]))


# The request: identity, client certificate and posture


def load_identity(raw: bytes, source: str) -> dict[str, Any]:
    """Validate an identity document and return the ``identity`` and ``certificate`` parts of the policy input.

    The document is ``{"email", "groups", "ip", "certificate": {"presented", "common_name"}}``,
    every field optional. Without ``certificate``, no client certificate was presented.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(f"{source}: invalid JSON: {error}; pass an identity object") from None
    if not isinstance(document, dict):
        raise InputError(f'{source}: expected an object such as {{"email": "alice@example.com"}}')
    unknown = sorted(set(document) - set(IDENTITY_FIELDS))
    if unknown:
        raise InputError(
            f"{source}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(IDENTITY_FIELDS)}"
        )

    email = _optional_string(document, "email", source)
    groups = document.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise InputError(f'{source}: groups must be a list of strings, such as ["engineering"]')
    ip = _optional_string(document, "ip", source)
    if ip is not None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise InputError(
                f"{source}: ip {ip!r} is not an IP address; write one address, such as 10.1.2.3"
            ) from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            # The policies cannot compare an address with a zone (fe80::1%eth0) with a range.
            raise InputError(f"{source}: ip {ip!r} has a zone; write the address without %{address.scope_id}")
        # An IPv4-mapped IPv6 address (::ffff:10.1.2.3) is that IPv4 address, so IPv4 ranges apply to it.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            ip = str(address.ipv4_mapped)

    certificate = document.get("certificate", {"presented": False})
    if not isinstance(certificate, dict):
        raise InputError(
            f'{source}: certificate must be an object such as {{"presented": true, "common_name": "x"}}'
        )
    unknown = sorted(set(certificate) - set(CERTIFICATE_FIELDS))
    if unknown:
        raise InputError(
            f"{source}: unknown field(s) certificate.{', certificate.'.join(unknown)}; "
            f"allowed: {', '.join(CERTIFICATE_FIELDS)}"
        )
    presented = certificate.get("presented", False)
    if not isinstance(presented, bool):
        raise InputError(
            f"{source}: certificate.presented must be true or false, not {_json_type(presented)}"
        )
    common_name = _optional_string(certificate, "common_name", f"{source}: certificate")
    return {
        "identity": {"email": email, "groups": groups, "ip": ip},
        "certificate": {"presented": presented, "common_name": common_name},
    }


def _optional_string(document: dict[str, Any], key: str, context: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{context}: {key} must be a string or null, not {_json_type(value)}")
    return value


def load_posture_results(
    raw: bytes, source: str, store: Store, at: datetime | None
) -> tuple[dict[str, Any], list[CertpostureError]]:
    """Return a results document: a facts document evaluated at ``at``, or a results document as given.

    A document with a ``results`` list is ``evaluate`` output. A document with
    ``schema_version`` is a facts document, evaluated against the stored rules.
    Invalid facts raise FactsError (exit code 3), as in ``evaluate``.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(
            f"{source}: invalid JSON: {error}; pass facts from `certposture collect` or results from "
            "`certposture evaluate`"
        ) from None
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        _check_results_document(document, source)
        return document, []
    if isinstance(document, dict) and "schema_version" in document:
        facts = posture.parse_facts(raw, source)
        return posture.evaluate_facts(store, facts, at=at)
    raise InputError(
        f'{source}: neither a facts document ("schema_version") nor a results document ("results" list); '
        "pass the output of `certposture collect` or `certposture evaluate`"
    )


def _check_results_document(document: dict[str, Any], source: str) -> None:
    evaluated_at = document.get("evaluated_at")
    if not isinstance(evaluated_at, str):
        raise InputError(
            f"{source}: evaluated_at is missing; pass the results as `certposture evaluate` prints them"
        )
    try:
        posture.parse_time(evaluated_at)
    except InputError:
        raise InputError(
            f"{source}: evaluated_at {evaluated_at!r} is not an RFC 3339 time such as 2026-12-04T19:00:00Z"
        ) from None
    collected_at = document.get("collected_at")
    if "collected_at" in document:
        try:
            posture.parse_time(collected_at if isinstance(collected_at, str) else "")
        except InputError:
            raise InputError(
                f"{source}: collected_at {collected_at!r} is not an RFC 3339 time such as 2026-12-04T19:00:00Z"
            ) from None
    seen: set[str] = set()
    for index, result in enumerate(document["results"]):
        context = f"{source}: results[{index}]"
        if not isinstance(result, dict):
            raise InputError(f"{context}: expected a result object, not {_json_type(result)}")
        rule_id = result.get("rule_id")
        if not isinstance(rule_id, str) or not rule_id:
            raise InputError(f"{context}: rule_id {rule_id!r} is invalid; expected the stored rule's id")
        if rule_id in seen:
            raise InputError(f"{context}: rule {rule_id} appears twice; pass one result per rule")
        seen.add(rule_id)
        status = result.get("status")
        if status not in engine.STATUSES:
            raise InputError(
                f"{context}: status {status!r} is invalid; expected one of {', '.join(engine.STATUSES)}"
            )
        if result.get("passed") is not (status == "passed"):
            raise InputError(f"{context}: passed={result.get('passed')!r} contradicts status {status}")


def _observed_at(document: dict[str, Any], decided_at: datetime) -> str:
    """Return the time a result's age counts from: the earlier of collection and evaluation.

    A result evaluated after the decision time keeps that time, so that the
    policy fails it as dated after the decision.
    """
    evaluated_at = str(document["evaluated_at"])
    collected_at = document.get("collected_at")
    if collected_at is None or posture.parse_time(evaluated_at) > decided_at:
        return evaluated_at
    if posture.parse_time(collected_at) < posture.parse_time(evaluated_at):
        return str(collected_at)
    return evaluated_at


def posture_entries(document: dict[str, Any], store: Store, decided_at: datetime) -> list[dict[str, Any]]:
    """Turn a results document into ``input.posture``: one entry per result, with the stored rule's expiration.

    A result for a rule that is not stored is rejected, because its expiration is unknown
    and an old result must not count as fresh.
    """
    expirations = {rule["id"]: rule.get("expiration") for rule in store.list_rules()}
    entries = []
    for result in document["results"]:
        rule_id = result["rule_id"]
        if rule_id not in expirations:
            raise InputError(
                f"the results name rule {rule_id}, which is not stored, so its expiration is unknown; "
                "add the rule or decide with the store that evaluated the results"
            )
        entries.append(
            {
                "rule_id": rule_id,
                "rule_name": result.get("rule_name"),
                "status": result["status"],
                "passed": result["passed"],
                "evaluated_at": _observed_at(document, decided_at),
                "expiration": expirations[rule_id],
            }
        )
    return entries


# Evaluation


def decide_request(
    store: Store,
    request: dict[str, Any],
    posture_raw: bytes,
    posture_source: str,
    *,
    access_policies: list[dict[str, Any]] | None = None,
    gateway: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Build the request's posture from facts or results and decide it with exactly one of the two policies.

    ``request`` comes from :func:`load_identity`; ``at`` defaults to now. When
    a posture rule cannot be evaluated from the facts, PolicyError is raised
    and no decision is made.
    """
    if (access_policies is None) == (gateway is None):
        raise InputError("give exactly one of --access FILE and --gateway FILE")
    decided_at = at or datetime.now(UTC)
    document, errors = load_posture_results(posture_raw, posture_source, store, decided_at)
    if errors:
        problems = "; ".join(dict.fromkeys(str(error) for error in errors))
        raise PolicyError(f"posture rules could not be evaluated, so no decision is made: {problems}")
    entries = posture_entries(document, store, decided_at)
    _check_named_rules(_named_posture_rules(access_policies, gateway), entries, store)
    full_request = {**request, "posture": entries}
    if access_policies is not None:
        return decide_access(access_policies, full_request, decided_at)
    if gateway is not None:
        return decide_gateway(gateway, full_request, decided_at)
    raise InputError("give exactly one of --access FILE and --gateway FILE")


def _named_posture_rules(
    access_policies: list[dict[str, Any]] | None, gateway: dict[str, Any] | None
) -> set[str]:
    """Return the posture rule ids that the Access policies or Gateway rules name."""
    named: set[str] = set()
    for policy in access_policies or []:
        for group in ("include", "require", "exclude"):
            for rule in policy.get(group) or []:
                selector = rule.get("device_posture") if isinstance(rule, dict) else None
                if isinstance(selector, dict) and isinstance(selector.get("integration_uid"), str):
                    named.add(selector["integration_uid"])
    for rule in (gateway or {}).get("rules", []):
        for conjunction in rule.get("device_posture") or []:
            for literal in conjunction:
                named.update(value for value in literal["values"] if isinstance(value, str))
    return named


def _check_named_rules(named: set[str], entries: list[dict[str, Any]], store: Store) -> None:
    """Reject policies that name a posture rule without a result, instead of deciding without it.

    A misspelled id or a results document from `evaluate --rule` would otherwise make a
    check neither passed nor failed, and a block or exclude on it would never apply.
    """
    stored = {rule["id"] for rule in store.list_rules()}
    unknown = sorted(named - stored)
    if unknown:
        raise InputError(
            f"the policies name posture rule(s) {', '.join(unknown)}, which are not stored; "
            "correct the id or add the rule"
        )
    missing = sorted(named - {entry["rule_id"] for entry in entries})
    if missing:
        raise InputError(
            f"the posture input has no result for rule(s) {', '.join(missing)}, which the policies name; "
            "pass facts, or results of `certposture evaluate` without --rule"
        )


def load_gateway(raw: bytes, source: str) -> dict[str, Any]:
    """Validate a Gateway rules document; return the value for ``data.certposture_config.gateway``."""
    return load_gateway_document(raw, source)


def decide_access(policies: list[dict[str, Any]], request: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Evaluate the Access policies for ``request`` and return the checked decision."""
    config = {"evaluated_at": format_utc(at), "access_policies": policies}
    (decision,) = _evaluate([ACCESS_QUERY], config, request)
    _check_access_decision(decision)
    return {
        "kind": "access",
        "allowed": decision["allowed"],
        "decision": decision["decision"],
        "policy": decision.get("policy"),
        "reason": decision.get("reason"),
        "evaluated_at": format_utc(at),
        "posture": decision.get("posture", []),
        "evaluated_policies": decision.get("evaluated_policies", []),
    }


def decide_gateway(gateway: dict[str, Any], request: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Evaluate the Gateway rules for ``request``; every action but ``block`` counts as allowed."""
    config = {"evaluated_at": format_utc(at), "gateway": gateway}
    (decision,) = _evaluate([GATEWAY_QUERY], config, request)
    if not isinstance(decision, dict) or not isinstance(decision.get("action"), str):
        raise PolicyError(f"{GATEWAY_QUERY} is not an object with a string action, so nothing is allowed")
    posture_used = decision.get("posture", [])
    if not isinstance(posture_used, list):
        raise PolicyError(f"{GATEWAY_QUERY}: posture is not a list")
    return {
        "kind": "gateway",
        "allowed": decision["action"] != "block",
        "action": decision["action"],
        "rule": decision.get("rule"),
        "reason": decision.get("reason"),
        "evaluated_at": format_utc(at),
        "posture": posture_used,
        "details": {
            key: value
            for key, value in decision.items()
            if key not in ("action", "rule", "reason", "posture")
        },
    }


def _evaluate(queries: Sequence[str], config: dict[str, Any], request: dict[str, Any]) -> list[Any]:
    rego = regorus.Engine()
    engine.load_policies(rego, [engine.shipped_policy_dir()])
    values = []
    try:
        rego.add_data_json(orjson.dumps({engine.CONFIG_ROOT: config}).decode())
        rego.set_input_json(orjson.dumps(request).decode())
        for query in queries:
            raw = rego.eval_rule_as_json(query)
            if raw.strip() == '"<undefined>"':
                raise PolicyError(
                    f"{query} is undefined; the policies made no decision, so nothing is allowed"
                )
            values.append(orjson.loads(raw))
    except RuntimeError as error:
        raise PolicyError(f"policy evaluation failed: {engine.describe_engine_error(error)}") from None
    except TypeError as error:
        raise PolicyError(f"policy input cannot be encoded as JSON: {error}") from None
    except orjson.JSONDecodeError as error:
        raise PolicyError(f"the decision is not valid JSON: {error}") from None
    return values


def _check_access_decision(decision: Any) -> None:
    """Reject a decision whose shape could admit a request by mistake."""
    if not isinstance(decision, dict):
        raise PolicyError(f"{ACCESS_QUERY} is not an object, so nothing is allowed")
    kind = decision.get("decision")
    if kind not in ACCESS_DECISIONS:
        raise PolicyError(f"{ACCESS_QUERY}: decision {kind!r} is not one of {', '.join(ACCESS_DECISIONS)}")
    if decision.get("allowed") is not (kind in ADMITTING_DECISIONS):
        raise PolicyError(f"{ACCESS_QUERY}: allowed={decision.get('allowed')!r} contradicts decision {kind}")


def exit_code(result: dict[str, Any]) -> int:
    """0 when the request is allowed, 1 when it is denied or blocked."""
    return EXIT_ALLOWED if result["allowed"] is True else EXIT_DENIED


# Output


def render_decision_table(result: dict[str, Any]) -> str:
    """Render a decision for people: the outcome, what produced it, the posture used and the policies tried."""
    verdict = "allowed" if result["allowed"] else "denied"
    lines = []
    if result["kind"] == "access":
        lines.append(f"access: {result['decision']} ({verdict}) at {result['evaluated_at']}")
        lines.append(f"policy: {_describe_reference(result['policy'])}")
    else:
        lines.append(f"gateway: {result['action']} ({verdict}) at {result['evaluated_at']}")
        lines.append(f"rule: {_describe_reference(result['rule'])}")
    lines.append(f"reason: {result['reason']}")
    for check in result["posture"]:
        state = "passed" if check.get("passed") else "failed"
        note = f" ({check['reason']})" if check.get("reason") else ""
        lines.append(f"posture: {check.get('rule_name') or check.get('rule_id')}: {state}{note}")
    for evaluation in result.get("evaluated_policies", []):
        state = "matched" if evaluation.get("matched") else "not matched"
        lines.append(
            f"tried: {evaluation.get('name')} ({evaluation.get('decision')}): {state}, {evaluation.get('reason')}"
        )
    return "".join(printable(line) + "\n" for line in lines)


def _describe_reference(reference: Any) -> str:
    if not isinstance(reference, dict):
        return "none"
    if reference.get("id") is None:
        return str(reference.get("name"))
    return f"{reference.get('name')} (id {reference.get('id')})"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"
