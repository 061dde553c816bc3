# Posture results as the Access and Gateway decisions see them.
#
# input.posture lists one entry per posture rule result:
#   {"rule_id", "rule_name", "status", "passed", "evaluated_at", "expiration"}
# where expiration is the rule's expiration ("30m", "12h", "7d") or null. A
# result older than its expiration counts as failed, with reason
# "result expired", and so does a result dated after the decision time. The
# current time is data.certposture_config.evaluated_at when set, else the
# engine's clock.
package certposture.posture_state

import rego.v1

default _config := {}

_config := data.certposture_config

now_ns := time.parse_rfc3339_ns(_config.evaluated_at) if {
	is_string(object.get(_config, "evaluated_at", null))
} else := time.now_ns()

_unit_ns := {"s": 1000000000, "m": 60000000000, "h": 3600000000000, "d": 86400000000000}

# Nanoseconds of a duration such as "30m"; undefined for anything else.
duration_ns(text) := to_number(digits) * _unit_ns[unit] if {
	is_string(text)
	regex.match(`^[1-9][0-9]{0,8}[smhd]$`, text)
	digits := substring(text, 0, count(text) - 1)
	unit := substring(text, count(text) - 1, 1)
}

# A result dated after the decision time would never expire, so it does not count as passed.
from_future(entry) if time.parse_rfc3339_ns(entry.evaluated_at) > now_ns

expired(entry) if {
	limit := duration_ns(object.get(entry, "expiration", null))
	now_ns - time.parse_rfc3339_ns(entry.evaluated_at) > limit
}

# One state per rule id: passed only when the result passed and has not expired.
checks := {entry.rule_id: state(entry) | some entry in _entries}

_entries := [entry | some entry in object.get(input, "posture", []); is_string(object.get(entry, "rule_id", null))]

state(entry) := {
	"rule_id": entry.rule_id,
	"rule_name": object.get(entry, "rule_name", null),
	"status": object.get(entry, "status", null),
	"passed": false,
	"expired": false,
	"reason": "result dated after the decision time",
} if {
	from_future(entry)
} else := {
	"rule_id": entry.rule_id,
	"rule_name": object.get(entry, "rule_name", null),
	"status": object.get(entry, "status", null),
	"passed": false,
	"expired": true,
	"reason": "result expired",
} if {
	expired(entry)
} else := {
	"rule_id": entry.rule_id,
	"rule_name": object.get(entry, "rule_name", null),
	"status": object.get(entry, "status", null),
	"passed": object.get(entry, "passed", false) == true,
	"expired": false,
	"reason": null,
}

passed_ids := {id | some id, check in checks; check.passed}

failed_ids := {id | some id, check in checks; not check.passed}
