package certposture.posture_state_test

import rego.v1

import data.certposture.posture_state

_config := {"evaluated_at": "2026-12-04T20:00:00Z"}

_entry(passed, evaluated_at, expiration) := {
	"rule_id": "r1",
	"rule_name": "Rule 1",
	"status": "passed",
	"passed": passed,
	"evaluated_at": evaluated_at,
	"expiration": expiration,
}

_checks(entries) := checks if {
	checks := posture_state.checks with input as {"posture": entries} with data.certposture_config as _config
}

test_fresh_result_passes if {
	_checks([_entry(true, "2026-12-04T19:30:00Z", "1h")]).r1.passed == true
}

test_expired_result_fails if {
	check := _checks([_entry(true, "2026-12-04T18:30:00Z", "1h")]).r1
	check.passed == false
	check.expired == true
	check.reason == "result expired"
}

test_no_expiration_never_expires if {
	_checks([_entry(true, "2000-01-01T00:00:00Z", null)]).r1.passed == true
}

test_days_unit if {
	_checks([_entry(true, "2026-12-01T00:00:00Z", "2d")]).r1.expired == true
	_checks([_entry(true, "2026-12-03T00:00:00Z", "2d")]).r1.expired == false
}

test_failed_result_stays_failed if {
	_checks([_entry(false, "2026-12-04T19:59:00Z", "1h")]).r1.passed == false
}

test_passed_and_failed_ids if {
	entries := [
		_entry(true, "2026-12-04T19:59:00Z", null),
		object.union(_entry(false, "2026-12-04T19:59:00Z", null), {"rule_id": "r2"}),
	]
	ids := posture_state.passed_ids with input as {"posture": entries} with data.certposture_config as _config
	ids == {"r1"}
	failed := posture_state.failed_ids with input as {"posture": entries} with data.certposture_config as _config
	failed == {"r2"}
}

test_result_from_the_future_fails if {
	check := _checks([_entry(true, "2026-12-05T20:00:00Z", "1h")]).r1
	check.passed == false
	check.reason == "result dated after the decision time"
}

test_result_from_the_future_without_expiration_fails if {
	_checks([_entry(true, "2027-12-04T20:00:00Z", null)]).r1.passed == false
}
