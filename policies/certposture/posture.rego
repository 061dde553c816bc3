# Entry point: evaluates every stored posture rule against the facts document
# in input and counts the outcomes.
#
# data.certposture_config contains rules (a list of stored rules),
# signing_certificates (an object keyed by id) and, optionally, evaluated_at
# (an RFC 3339 time used instead of the current time).
package certposture.posture

import rego.v1

import data.certposture.client_certificate

_statuses := ["passed", "failed", "not_applicable", "error"]

default _config := {}

_config := data.certposture_config

_rules := _value_or(_config, "rules", [])

# Nanoseconds since the Unix epoch at which validity periods are checked.
_now_ns := time.parse_rfc3339_ns(_config.evaluated_at) if {
	is_string(object.get(_config, "evaluated_at", null))
} else := time.now_ns()

# Evaluation time in RFC 3339 UTC, in whole seconds.
evaluated_at := client_certificate.format_time(_now_ns)

# One result per rule, in the order of data.certposture_config.rules.
results := [client_certificate.result(rule, input, _config, _now_ns) | some rule in _rules]

# Number of results with each status, and the total.
summary := object.union(
	{"total": count(results)},
	{status: count([result | some result in results; result.status == status]) | some status in _statuses},
)

_value_or(obj, key, fallback) := value if {
	value := object.get(obj, key, null)
	value != null
} else := fallback
