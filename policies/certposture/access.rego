# Access decisions: Cloudflare Access application policies evaluated against
# one request's identity, client certificate and device posture.
#
# data.certposture_config.access_policies is a list of policies in the JSON
# shape of Cloudflare's Access policy API:
#   {"id", "name", "decision", "include": [...], "require": [...], "exclude": [...]}
# where decision is allow, deny, bypass or non_identity, and each rule is an
# object with one selector, such as {"email_domain": {"domain": "example.com"}}.
# The list is read in its given order; precedence is not read here.
#
# input:
#   {"identity": {"email", "groups": [...], "ip"},
#    "certificate": {"presented", "common_name"},
#    "posture": [posture results, as data.certposture.posture_state reads them]}
#
# A policy matches when one include rule matches, every require rule matches
# and no exclude rule matches; an empty include never matches. bypass and
# non_identity policies are evaluated first, then allow and deny, each group
# top to bottom, and the first policy that matches decides. Nothing matching
# means deny. A policy that cannot be evaluated (an unknown decision or
# selector, a malformed rule) stops the evaluation where it stands and denies,
# so a broken policy never admits and never lets a later allow admit.
package certposture.access

import rego.v1

import data.certposture.posture_state

decisions := {"allow", "deny", "bypass", "non_identity"}

selectors := {"everyone", "email", "email_domain", "group", "ip", "device_posture", "certificate", "common_name"}

# bypass and non_identity admit without checking identity in Cloudflare, so they count as allowed.
_admitting := {"allow", "bypass", "non_identity"}

default _config := {}

_config := data.certposture_config

_policies := policies if {
	policies := object.get(_config, "access_policies", [])
	is_array(policies)
}

_first_group := {"bypass", "non_identity"}

# Policies in evaluation order: bypass and non_identity first, then the rest.
_ordered := array.concat(
	[policy | some policy in _policies; _field(policy, "decision") in _first_group],
	[policy | some policy in _policies; not _field(policy, "decision") in _first_group],
)

_evaluations := [_evaluate(policy) | some policy in _ordered]

_stop_indexes := {i | some i, evaluation in _evaluations; _stops(evaluation)}

_stops(evaluation) if evaluation.matched

_stops(evaluation) if evaluation.invalid

# The decision for the request; see the package comment for the order.
decision := _deny_result(
	null,
	"data.certposture_config.access_policies is not a list, so access is denied",
	[],
) if {
	not _policies
} else := _decided(_evaluations[first], array.slice(_evaluations, 0, first + 1)) if {
	count(_stop_indexes) > 0
	first := min(_stop_indexes)
} else := _deny_result(null, "no policy matched, so access is denied", _evaluations)

_decided(evaluation, evaluated) := _deny_result(
	_policy_ref(evaluation),
	concat("", ["policy ", _label(evaluation), " cannot be evaluated (", evaluation.reason, "), so access is denied"]),
	evaluated,
) if {
	evaluation.invalid
} else := {
	"allowed": _admits(evaluation.decision),
	"decision": evaluation.decision,
	"policy": _policy_ref(evaluation),
	"reason": concat("", ["policy ", _label(evaluation), " (", evaluation.decision, ") matched"]),
	"posture": _posture_used(evaluated),
	"evaluated_policies": evaluated,
}

_admits(kind) := true if kind in _admitting else := false

_deny_result(policy, reason, evaluated) := {
	"allowed": false,
	"decision": "deny",
	"policy": policy,
	"reason": reason,
	"posture": _posture_used(evaluated),
	"evaluated_policies": evaluated,
}

_policy_ref(evaluation) := {"id": evaluation.id, "name": evaluation.name}

_label(evaluation) := concat("", ["'", evaluation.name, "'"]) if is_string(evaluation.name) else := "(no name)"

# Posture checks named by device_posture rules of the evaluated policies.
_posture_used(evaluated) := [_posture_check(id) | some id in sort(_posture_rule_ids(evaluated))]

_posture_rule_ids(evaluated) := {rule_id |
	some evaluation in evaluated
	some rule_id in evaluation.posture_rule_ids
}

_posture_check(id) := posture_state.checks[id]

_posture_check(id) := {
	"rule_id": id,
	"rule_name": null,
	"status": null,
	"passed": false,
	"expired": false,
	"reason": "no posture result for this rule",
} if {
	not posture_state.checks[id]
}

# Policy evaluation

_field(policy, key) := object.get(policy, key, null) if is_object(policy) else := null

_rules(policy, group) := rules if {
	rules := _field(policy, group)
	is_array(rules)
} else := []

_evaluate(policy) := object.union(_summary(policy), {"matched": false, "invalid": true, "reason": problem}) if {
	problem := _policy_problem(policy)
} else := object.union(_summary(policy), _match(policy))

_summary(policy) := {
	"id": _field(policy, "id"),
	"name": _field(policy, "name"),
	"decision": _field(policy, "decision"),
	"posture_rule_ids": [id |
		some group in ["include", "require", "exclude"]
		some rule in _rules(policy, group)
		id := _posture_rule_id(rule)
	],
}

_posture_rule_id(rule) := rule.device_posture.integration_uid if {
	is_object(rule)
	is_string(object.get(rule, "device_posture", {}).integration_uid)
}

_policy_problem(policy) := "the policy is not an object" if {
	not is_object(policy)
} else := "decision must be one of allow, deny, bypass, non_identity" if {
	not _field(policy, "decision") in decisions
} else := concat("", [group, " must be a list"]) if {
	some group in ["include", "require", "exclude"]
	_field(policy, group) != null
	not is_array(_field(policy, group))
} else := concat("", [group, "[", format_int(i, 10), "]: ", problem]) if {
	some group in ["include", "require", "exclude"]
	some i, rule in _rules(policy, group)
	problem := _rule_problem(rule)
}

_rule_problem(rule) := "a rule must be an object with one selector, such as {\"everyone\": {}}" if {
	not _single_key(rule)
} else := concat("", ["selector ", name, " is not supported"]) if {
	some name, _ in rule
	not name in selectors
} else := concat("", ["selector ", name, " needs ", _parameter_hint[name]]) if {
	some name, value in rule
	not _valid_parameters(name, value)
}

_single_key(rule) if {
	is_object(rule)
	count(rule) == 1
}

_parameter_hint := {
	"everyone": "an object, {}",
	"email": "a non-empty string email",
	"email_domain": "a non-empty string domain",
	"group": "a non-empty string id",
	"ip": "ip, an IP address or CIDR range such as 10.0.0.0/8",
	"device_posture": "a non-empty string integration_uid",
	"certificate": "an object, {}",
	"common_name": "a non-empty string common_name",
}

# The parameter key of each selector that takes a string.
_string_parameter := {
	"email": "email",
	"email_domain": "domain",
	"group": "id",
	"device_posture": "integration_uid",
	"common_name": "common_name",
}

_valid_parameters(name, value) if {
	name in {"everyone", "certificate"}
	is_object(value)
}

_valid_parameters(name, value) if {
	key := _string_parameter[name]
	is_object(value)
	text := object.get(value, key, null)
	is_string(text)
	text != ""
}

_valid_parameters("ip", value) if {
	is_object(value)
	_cidr(object.get(value, "ip", null))
}

# An IP address or CIDR range as a CIDR range; a bare address is a /32 or /128 range.
# Undefined for anything else, so net.cidr_contains never sees invalid text.
_cidr(text) := text if {
	is_string(text)
	contains(text, "/")
	net.cidr_is_valid(text)
} else := cidr if {
	is_string(text)
	not contains(text, "/")
	cidr := concat("", [text, _host_prefix(text)])
	net.cidr_is_valid(cidr)
}

_host_prefix(text) := "/128" if contains(text, ":") else := "/32"

_match(policy) := {
	"matched": _policy_matches(include_matched, require_failed, exclude_matched),
	"invalid": false,
	"reason": _match_reason(include, include_matched, require_failed, exclude_matched),
	"include": include,
	"require": require,
	"exclude": exclude,
} if {
	include := [_check(rule) | some rule in _rules(policy, "include")]
	require := [_check(rule) | some rule in _rules(policy, "require")]
	exclude := [_check(rule) | some rule in _rules(policy, "exclude")]
	include_matched := [check.selector | some check in include; check.matched]
	require_failed := [check.selector | some check in require; not check.matched]
	exclude_matched := [check.selector | some check in exclude; check.matched]
}

_policy_matches(include_matched, require_failed, exclude_matched) := true if {
	count(include_matched) > 0
	count(require_failed) == 0
	count(exclude_matched) == 0
} else := false

_match_reason(include, include_matched, require_failed, exclude_matched) := "include is empty, so the policy never matches" if {
	count(include) == 0
} else := "no include rule matched" if {
	count(include_matched) == 0
} else := concat("", ["require rule ", concat(", ", require_failed), " did not match"]) if {
	count(require_failed) > 0
} else := concat("", ["exclude rule ", concat(", ", exclude_matched), " matched"]) if {
	count(exclude_matched) > 0
} else := concat("", ["include rule ", concat(", ", include_matched), " matched"])

_check(rule) := {"selector": name, "parameters": value, "matched": _matches(name, value)} if {
	some name, value in rule
}

_matches(name, value) := true if {
	_selector_matches(name, value)
} else := false

# Request values

_identity := identity if {
	identity := object.get(input, "identity", {})
	is_object(identity)
} else := {}

_certificate := certificate if {
	certificate := object.get(input, "certificate", {})
	is_object(certificate)
} else := {}

_email := email if {
	email := object.get(_identity, "email", null)
	is_string(email)
}

_groups := {group | some group in object.get(_identity, "groups", []); is_string(group)} if {
	is_array(object.get(_identity, "groups", []))
} else := set()

# The client IP address, only when it is one address: a range never matches an ip rule.
_client_ip := ip if {
	ip := object.get(_identity, "ip", null)
	is_string(ip)
	not contains(ip, "/")
	_cidr(ip)
}

_certificate_presented if _certificate.presented == true

# Selectors

_selector_matches("everyone", _) := true

_selector_matches("email", value) if _fold_case(_email) == _fold_case(value.email)

_selector_matches("email_domain", value) if {
	parts := split(_email, "@")
	count(parts) > 1
	_fold_case(parts[count(parts) - 1]) == _fold_case(value.domain)
}

_selector_matches("group", value) if value.id in _groups

_selector_matches("ip", value) if net.cidr_contains(_cidr(value.ip), _client_ip)

_selector_matches("device_posture", value) if posture_state.checks[value.integration_uid].passed == true

_selector_matches("certificate", _) if _certificate_presented

_selector_matches("common_name", value) if {
	_certificate_presented
	common_name := _certificate.common_name
	is_string(common_name)
	_fold_case(common_name) == _fold_case(value.common_name)
}

# Email addresses, domains and common names are compared with the ASCII
# letters A-Z folded to lower case and every other character exact, because
# lower() lowers some non-ASCII letters differently in OPA and regorus.
_fold_case(value) := strings.replace_n(_ascii_lower, value)

_ascii_lower := {
	"A": "a", "B": "b", "C": "c", "D": "d", "E": "e", "F": "f", "G": "g",
	"H": "h", "I": "i", "J": "j", "K": "k", "L": "l", "M": "m", "N": "n",
	"O": "o", "P": "p", "Q": "q", "R": "r", "S": "s", "T": "t", "U": "u",
	"V": "v", "W": "w", "X": "x", "Y": "y", "Z": "z",
}
