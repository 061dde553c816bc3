# Run with: certposture test --with-shipped policies/examples/max_certificate_lifetime
# The test package lies outside certposture.conditions, so that it is never
# taken for an extra condition itself.
package examples_test.max_certificate_lifetime

import rego.v1

import data.certposture.conditions.max_certificate_lifetime
import data.certposture.posture

_reasons(not_before, not_after) := [item | some item in reasons] if {
	certificate := {"not_before": not_before, "not_after": not_after}
	reasons := max_certificate_lifetime.reasons with input as {"certificate": certificate}
}

test_one_year_passes if {
	_reasons("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z") == []
}

test_exactly_398_days_passes if {
	_reasons("2026-01-01T00:00:00Z", "2027-02-03T00:00:00Z") == []
}

test_399_days_fails if {
	[item] := _reasons("2026-01-01T00:00:00Z", "2027-02-04T00:00:00Z")
	item.code == "lifetime_too_long"
	item.actual == 399
	item.expected == 398
	item.message == "certificate is valid for 399 days, more than the 398 this policy allows"
}

test_ten_years_fails if {
	[item] := _reasons("2026-01-01T00:00:00Z", "2036-01-01T00:00:00Z")
	item.actual == 3652
}

test_year_9999_fails_without_error if {
	[item] := _reasons("2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
	item.code == "lifetime_too_long"
	item.actual == null
	contains(item.message, "9999-12-31T23:59:59Z")
}

test_explain_values if {
	max_certificate_lifetime.expected == {"maximum_days": 398}
	max_certificate_lifetime.actual == {"lifetime_days": 365} with input as {"certificate": {
		"not_before": "2026-01-01T00:00:00Z",
		"not_after": "2027-01-01T00:00:00Z",
	}}
}

# Through the shipped policies, with explain on: the extra condition is listed
# after the six built-in ones, with its expected and actual values.

_facts(not_after) := {
	"schema_version": 1,
	"device": {"hostname": "pf2abc12", "serial_number": "PF2ABC12", "os": {"family": "linux", "name": "Debian", "version": "12"}},
	"certificates": [{
		"source": {"type": "pem", "location": "/certs/client.pem", "label": null},
		"fingerprint_sha256": "aa11",
		"subject": {"dn": "CN=device", "common_names": ["device"]},
		"issuer": {"dn": "CN=Device CA"},
		"serial_number": "0a",
		"not_before": "2026-01-01T00:00:00Z",
		"not_after": not_after,
		"subject_alternative_names": {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0},
		"extended_key_usage": ["1.3.6.1.5.5.7.3.2"],
		"is_ca": false,
		"public_key": {"algorithm": "ec", "size": 256, "curve": "secp256r1"},
		"private_key": {"present": true, "status": "present", "location": "/certs/client.pem", "reason": null},
		"signed_by": ["ca-1"],
	}],
	"errors": [],
}

_config := {
	"evaluated_at": "2026-12-04T19:00:00Z",
	"explain": true,
	"signing_certificates": {"ca-1": {"id": "ca-1", "name": "Device CA", "subject": "CN=Device CA"}},
	"rules": [{
		"id": "rule-1",
		"name": "Device certificate",
		"type": "client_certificate_v2",
		"input": {
			"certificate_id": "ca-1",
			"operating_system": "linux",
			"check_private_key": true,
			"locations": {"paths": ["/certs"]},
		},
	}],
}

_result(not_after) := results[0] if {
	results := posture.results with input as _facts(not_after) with data.certposture_config as _config
}

test_long_lifetime_fails_the_rule if {
	result := _result("2036-01-01T00:00:00Z")
	result.status == "failed"
	[item.code | some item in result.candidates[0].reasons] == ["lifetime_too_long"]
	names := [item.condition | some item in result.candidates[0].conditions]
	array.slice(names, 0, 6) == ["signer", "validity", "cn", "extended_key_usage", "private_key", "subject_alternative_names"]
	some condition in result.candidates[0].conditions
	condition.condition == "max_certificate_lifetime"
	condition == {
		"condition": "max_certificate_lifetime",
		"status": "failed",
		"expected": {"maximum_days": 398},
		"actual": {"lifetime_days": 3652},
	}
}

test_short_lifetime_passes_the_rule if {
	_result("2026-12-31T00:00:00Z").status == "passed"
}
