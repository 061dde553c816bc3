package certposture.gateway_test

import rego.v1

import data.certposture.gateway

_now := "2026-12-04T20:00:00Z"

_lit(field, op, values) := {"field": field, "op": op, "values": values, "negated": false}

_not_lit(field, op, values) := {"field": field, "op": op, "values": values, "negated": true}

_rule(id, precedence, action, identity, device_posture) := {
	"id": id,
	"name": concat(" ", ["Rule", id]),
	"precedence": precedence,
	"action": action,
	"enabled": true,
	"identity": identity,
	"device_posture": device_posture,
	"source": {},
}

_passed_check(id) := {"rule_id": id, "rule_name": id, "status": "passed", "passed": true, "evaluated_at": "2026-12-04T19:59:00Z", "expiration": null}

_failed_check(id) := {"rule_id": id, "rule_name": id, "status": "failed", "passed": false, "evaluated_at": "2026-12-04T19:59:00Z", "expiration": null}

_user := {"email": "alice@example.com", "groups": ["eng", "staff"]}

_decide(rules, identity, posture) := decision if {
	config := {"evaluated_at": _now, "gateway": {"default_action": "allow", "rules": rules}}
	decision := gateway.decision with data.certposture_config as config
		with input as {"identity": identity, "posture": posture}
}

_action(rules, identity, posture) := _decide(rules, identity, posture).action

_in_group(name) := [[_lit("identity.groups.name", "any_in", [name])]]

_passed(id) := [[_lit("device_posture.checks.passed", "any_in", [id])]]

# Precedence and defaults

test_lowest_precedence_wins if {
	rules := [
		_rule("late", 20, "allow", null, null),
		_rule("early", 10, "block", null, null),
	]
	decision := _decide(rules, _user, [])
	decision.action == "block"
	decision.rule == {"id": "early", "name": "Rule early", "precedence": 10}
	decision.default == false
}

test_equal_precedence_keeps_list_order if {
	rules := [_rule("first", 5, "block", null, null), _rule("second", 5, "allow", null, null)]
	_decide(rules, _user, []).rule.id == "first"
}

test_skips_rule_that_does_not_match if {
	rules := [_rule("ops", 1, "block", _in_group("ops"), null), _rule("all", 2, "allow", null, null)]
	_decide(rules, _user, []).rule.id == "all"
}

test_default_allow_without_match if {
	decision := _decide([_rule("ops", 1, "block", _in_group("ops"), null)], _user, [])
	decision == {
		"action": "allow",
		"rule": null,
		"reason": "no enabled rule matched, so the default action \"allow\" applies",
		"default": true,
		"posture": [],
	}
}

test_configured_default_block if {
	decision := gateway.decision with data.certposture_config as {"gateway": {"default_action": "block", "rules": []}}
		with input as {"identity": _user, "posture": []}
	decision.action == "block"
	decision.default == true
	decision.reason == "no enabled rule is loaded, so the default action \"block\" applies"
}

test_default_allow_without_config if {
	decision := gateway.decision with data.certposture_config as {} with input as {}
	decision.action == "allow"
	decision.default == true
}

test_disabled_rule_skipped if {
	disabled := object.union(_rule("off", 1, "block", null, null), {"enabled": false})
	decision := _decide([disabled, _rule("on", 2, "allow", null, null)], _user, [])
	decision.rule.id == "on"
}

test_only_disabled_rules_give_default if {
	disabled := object.union(_rule("off", 1, "block", null, null), {"enabled": false})
	decision := _decide([disabled], _user, [])
	decision.default == true
	decision.reason == "no enabled rule is loaded, so the default action \"allow\" applies"
}

test_other_action_passed_through if {
	_action([_rule("r", 1, "isolate", null, null)], _user, []) == "isolate"
}

test_matched_reason_names_rule_and_conditions if {
	rule := object.union(_rule("r", 7, "block", _in_group("eng"), null), {"source": {"identity": "any(identity.groups.name[*] in {\"eng\"})"}})
	_decide([rule], _user, []).reason == "rule \"Rule r\" (precedence 7) matched identity `any(identity.groups.name[*] in {\"eng\"})`, so its action \"block\" applies"
}

# Literal forms

test_email_eq if {
	rule := _rule("r", 1, "block", [[_lit("identity.email", "eq", ["alice@example.com"])]], null)
	_action([rule], _user, []) == "block"
	_action([rule], {"email": "bob@example.com", "groups": []}, []) == "allow"
}

test_email_compared_exactly if {
	rule := _rule("r", 1, "block", [[_lit("identity.email", "eq", ["Alice@Example.com"])]], null)
	_action([rule], _user, []) == "allow"
}

test_email_in if {
	rule := _rule("r", 1, "block", [[_lit("identity.email", "in", ["bob@example.com", "alice@example.com"])]], null)
	_action([rule], _user, []) == "block"
	_action([rule], {"email": "carol@example.com"}, []) == "allow"
}

test_missing_email_does_not_equal if {
	rule := _rule("r", 1, "block", [[_lit("identity.email", "eq", ["alice@example.com"])]], null)
	_action([rule], {"groups": ["eng"]}, []) == "allow"
}

test_group_any_in if {
	rule := _rule("r", 1, "block", [[_lit("identity.groups.name", "any_in", ["ops", "staff"])]], null)
	_action([rule], _user, []) == "block"
	_action([rule], {"email": "bob@example.com", "groups": ["sales"]}, []) == "allow"
}

test_passed_any_in if {
	rule := _rule("r", 1, "allow", null, [[_lit("device_posture.checks.passed", "any_in", ["cert", "disk"])]])
	catch_all := _rule("rest", 2, "block", null, null)
	_action([rule, catch_all], _user, [_passed_check("disk")]) == "allow"
	_action([rule, catch_all], _user, [_failed_check("disk")]) == "block"
	_action([rule, catch_all], _user, []) == "block"
}

test_failed_any_in if {
	rule := _rule("r", 1, "block", null, [[_lit("device_posture.checks.failed", "any_in", ["cert"])]])
	_action([rule], _user, [_failed_check("cert")]) == "block"
	_action([rule], _user, [_passed_check("cert")]) == "allow"
}

test_missing_check_neither_passed_nor_failed if {
	failed_rule := _rule("f", 1, "block", null, [[_lit("device_posture.checks.failed", "any_in", ["cert"])]])
	passed_rule := _rule("p", 2, "block", null, [[_lit("device_posture.checks.passed", "any_in", ["cert"])]])
	decision := _decide([failed_rule, passed_rule], _user, [])
	decision.default == true
	decision.posture == [{
		"rule_id": "cert",
		"rule_name": null,
		"status": null,
		"passed": false,
		"expired": false,
		"reason": "no posture result for this check, so it is neither passed nor failed",
	}]
}

# Expiration

test_expired_result_counts_as_failed if {
	expired := object.union(_passed_check("cert"), {"evaluated_at": "2026-12-04T18:00:00Z", "expiration": "1h"})
	rule := _rule("r", 1, "block", null, [[_lit("device_posture.checks.failed", "any_in", ["cert"])]])
	decision := _decide([rule], _user, [expired])
	decision.action == "block"
	decision.posture[0].expired == true
	decision.posture[0].reason == "result expired"
}

test_expired_result_does_not_count_as_passed if {
	expired := object.union(_passed_check("cert"), {"evaluated_at": "2026-12-04T18:00:00Z", "expiration": "1h"})
	_action([_rule("r", 1, "block", null, _passed("cert"))], _user, [expired]) == "allow"
}

# Negation and combinations

test_negated_literal if {
	rule := _rule("r", 1, "block", null, [[_not_lit("device_posture.checks.passed", "any_in", ["cert"])]])
	_action([rule], _user, []) == "block"
	_action([rule], _user, [_passed_check("cert")]) == "allow"
}

test_negated_email_in if {
	rule := _rule("r", 1, "block", [[_not_lit("identity.email", "in", ["alice@example.com"])]], null)
	_action([rule], _user, []) == "allow"
	_action([rule], {"email": "mallory@example.com"}, []) == "block"
}

test_conjunction_needs_every_literal if {
	identity := [[
		_lit("identity.groups.name", "any_in", ["eng"]),
		_lit("identity.email", "eq", ["alice@example.com"]),
	]]
	rule := _rule("r", 1, "block", identity, null)
	_action([rule], _user, []) == "block"
	_action([rule], {"email": "bob@example.com", "groups": ["eng"]}, []) == "allow"
}

test_disjunction_needs_one_conjunction if {
	identity := [
		[_lit("identity.email", "eq", ["bob@example.com"])],
		[_lit("identity.groups.name", "any_in", ["staff"])],
	]
	_action([_rule("r", 1, "block", identity, null)], _user, []) == "block"
	_action([_rule("r", 1, "block", identity, null)], {"email": "carol@example.com", "groups": []}, []) == "allow"
}

test_identity_and_posture_both_needed if {
	rule := _rule("r", 1, "allow", _in_group("eng"), _passed("cert"))
	catch_all := _rule("rest", 2, "block", null, null)
	_action([rule, catch_all], _user, [_passed_check("cert")]) == "allow"
	_action([rule, catch_all], _user, [_failed_check("cert")]) == "block"
	_action([rule, catch_all], {"email": "bob@example.com", "groups": ["sales"]}, [_passed_check("cert")]) == "block"
}

# Posture listed in the decision

test_posture_lists_checks_of_evaluated_rules if {
	rules := [
		_rule("a", 1, "block", null, [[_lit("device_posture.checks.failed", "any_in", ["disk"])]]),
		_rule("b", 2, "allow", null, _passed("cert")),
		_rule("c", 3, "block", null, _passed("firewall")),
	]
	decision := _decide(rules, _user, [_passed_check("cert"), _passed_check("disk")])
	decision.rule.id == "b"
	[check.rule_id | some check in decision.posture] == ["cert", "disk"]
	every check in decision.posture {
		check.passed == true
	}
}
