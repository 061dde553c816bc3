# Decides a Gateway action for one user and device from rules in the JSON
# shape of Cloudflare Gateway rules.
#
# data.certposture_config.gateway is the document that
# certposture.gateway.load_gateway_document builds:
#   {"default_action": "allow" | "block", "rules": [rule, ...]}
# where each rule carries id, name, precedence, action, enabled, source, and
# identity and device_posture as filter expressions in disjunctive normal form
# (a list of conjunctions, each a list of literals
# {"field", "op", "values", "negated"}), or null when the rule has no such
# condition. Python compiles the expressions because Rego has no recursion.
#
# input is {"identity": {"email", "groups": [names]}, "posture": [entries]}
# with posture entries as certposture.posture_state reads them. A check
# passes or fails as posture_state decides, so an expired result counts as
# failed. A check without a result is neither passed nor failed.
#
# The enabled rule of lowest precedence whose conditions all hold decides;
# rules of equal precedence are taken in list order. Without a match, the
# default action applies. Emails and group names are compared exactly.
package certposture.gateway

import rego.v1

import data.certposture.posture_state

default _gateway := {}

_gateway := data.certposture_config.gateway

default_action := object.get(_gateway, "default_action", "allow")

_rules := object.get(_gateway, "rules", [])

default _identity := {}

_identity := input.identity if is_object(input.identity)

_email := object.get(_identity, "email", null)

_groups := {name | some name in object.get(_identity, "groups", []); is_string(name)}

_enabled(rule) if object.get(rule, "enabled", true) == true

# A rule matches when every condition it has holds; a missing condition holds.
_matches(rule) if {
	_enabled(rule)
	_holds(object.get(rule, "identity", null))
	_holds(object.get(rule, "device_posture", null))
}

_holds(dnf) if dnf == null

_holds(dnf) if {
	is_array(dnf)
	some conjunction in dnf
	every literal in conjunction {
		_literal_true(literal)
	}
}

_literal_true(literal) if {
	literal.negated == false
	_compare(literal)
}

_literal_true(literal) if {
	literal.negated == true
	not _compare(literal)
}

_compare(literal) if {
	literal.op == "any_in"
	some value in literal.values
	value in _list_field(literal.field)
}

_compare(literal) if {
	literal.op == "eq"
	literal.field == "identity.email"
	is_string(_email)
	_email == literal.values[0]
}

_compare(literal) if {
	literal.op == "in"
	literal.field == "identity.email"
	is_string(_email)
	_email in literal.values
}

_list_field(field) := posture_state.passed_ids if field == "device_posture.checks.passed"

_list_field(field) := posture_state.failed_ids if field == "device_posture.checks.failed"

_list_field(field) := _groups if field == "identity.groups.name"

_matching := {i | some i, rule in _rules; _matches(rule)}

_winner := min({i | some i in _matching; _rules[i].precedence == _lowest_precedence})

_lowest_precedence := min({_rules[i].precedence | some i in _matching})

decision := {
	"action": rule.action,
	"rule": {"id": rule.id, "name": rule.name, "precedence": rule.precedence},
	"reason": _matched_reason(rule),
	"default": false,
	"posture": _posture(_evaluated_before(_winner)),
} if {
	rule := _rules[_winner]
} else := {
	"action": default_action,
	"rule": null,
	"reason": _default_reason,
	"default": true,
	"posture": _posture([rule | some rule in _rules; _enabled(rule)]),
}

# The enabled rules checked before the winning one, in precedence order, and the winner itself.
_evaluated_before(winner) := [rule |
	some i, rule in _rules
	_enabled(rule)
	_comes_before(i, winner)
]

_comes_before(i, j) if _rules[i].precedence < _rules[j].precedence

_comes_before(i, j) if {
	_rules[i].precedence == _rules[j].precedence
	i <= j
}

_matched_reason(rule) := sprintf("rule %s (precedence %s) matched %s, so its action %s applies", [
	_quote(rule.name),
	format_int(rule.precedence, 10),
	_conditions_text(object.get(rule, "source", {})),
	_quote(rule.action),
])

_conditions_text(source) := concat(" and ", texts) if {
	texts := [concat("", [condition.label, " `", source[condition.key], "`"]) |
		some condition in [{"key": "identity", "label": "identity"}, {"key": "device_posture", "label": "device posture"}]
		is_string(source[condition.key])
	]
	count(texts) > 0
} else := "with no identity or device posture condition"

_default_reason := sprintf("no enabled rule matched, so the default action %s applies", [_quote(default_action)]) if {
	count([rule | some rule in _rules; _enabled(rule)]) > 0
} else := sprintf("no enabled rule is loaded, so the default action %s applies", [_quote(default_action)])

# The posture state of every check that the given rules' device_posture conditions name, sorted by id.
_posture(rules) := [_check_state(id) | some id in sort(_check_ids(rules))]

_check_ids(rules) := {id |
	some rule in rules
	dnf := object.get(rule, "device_posture", null)
	is_array(dnf)
	some conjunction in dnf
	some literal in conjunction
	some id in literal.values
}

_check_state(id) := posture_state.checks[id] if {
	posture_state.checks[id]
} else := {
	"rule_id": id,
	"rule_name": null,
	"status": null,
	"passed": false,
	"expired": false,
	"reason": "no posture result for this check, so it is neither passed nor failed",
}

_quote(value) := concat("", ["\"", value, "\""]) if is_string(value)

_quote(value) := sprintf("(a %s)", [type_name(value)]) if not is_string(value)
