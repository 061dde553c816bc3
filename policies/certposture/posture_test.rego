package certposture.posture_test

import rego.v1

import data.certposture.posture

_ca_subject := "CN=Example Device CA,O=Example"

_signing_certificates := {"ca-device": {
	"id": "ca-device",
	"name": "Example Device CA",
	"subject": _ca_subject,
	"issuer": "CN=Example Root CA,O=Example",
	"serial_number": "1000",
	"signature_algorithm": "sha256WithRSAEncryption",
	"expires_on": "2030-01-01T00:00:00Z",
	"fingerprint_sha256": "ca00",
}}

_pem_path := "/usr/local/mycompany/certs/client.pem"

_cert := {
	"source": {"type": "pem", "location": _pem_path, "label": null},
	"fingerprint_sha256": "aa11",
	"subject": {"dn": "CN=PF2ABC12_mycompany,O=Example", "common_names": ["PF2ABC12_mycompany"]},
	"issuer": {"dn": _ca_subject},
	"serial_number": "0a",
	"not_before": "2026-01-01T00:00:00Z",
	"not_after": "2027-01-01T00:00:00Z",
	"subject_alternative_names": {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0},
	"extended_key_usage": ["1.3.6.1.5.5.7.3.2"],
	"is_ca": false,
	"public_key": {"algorithm": "ec", "size": 256, "curve": "secp256r1"},
	"private_key": {"present": true, "status": "present", "location": _pem_path, "reason": null},
	"signed_by": ["ca-device"],
}

_facts := {
	"schema_version": 1,
	"collected_at": "2026-12-04T19:00:00Z",
	"collector": {"version": "0.1.0"},
	"device": {
		"hostname": "pf2abc12",
		"serial_number": "PF2ABC12",
		"os": {"family": "linux", "name": "Debian GNU/Linux", "version": "12"},
	},
	"certificates": [_cert],
	"errors": [],
}

_rule(id, rule_input) := {
	"id": id,
	"name": sprintf("rule %s", [id]),
	"type": "client_certificate_v2",
	"input": object.union(
		{
			"certificate_id": "ca-device",
			"operating_system": "linux",
			"check_private_key": true,
			"locations": {"paths": [_pem_path]},
		},
		rule_input,
	),
}

_passing := _rule("pass", {"cn": "${serial_number}_mycompany", "extended_key_usage": ["clientAuth"]})

_failing := _rule("fail", {"cn": "other_mycompany"})

_not_applicable := _rule("mac", {"operating_system": "mac", "locations": null})

_erroring := _rule("unknown-ca", {"certificate_id": "ca-removed"})

_config(rules) := {
	"rules": rules,
	"signing_certificates": _signing_certificates,
	"evaluated_at": "2026-12-04T19:05:00Z",
}

_statuses(results) := [[result.rule_id, result.status] | some result in results]

test_success_whole_results if {
	results := posture.results with input as _facts with data.certposture_config as _config([_passing])

	results == [{
		"rule_id": "pass",
		"rule_name": "rule pass",
		"type": "client_certificate_v2",
		"status": "passed",
		"passed": true,
		"matched_certificates": ["aa11"],
		"candidates": [{
			"fingerprint_sha256": "aa11",
			"subject": "CN=PF2ABC12_mycompany,O=Example",
			"source": {"type": "pem", "location": _pem_path, "label": null},
			"passed": true,
			"reasons": [],
		}],
		"reasons": [],
		"errors": [],
	}]
}

test_fail_whole_results if {
	results := posture.results with input as _facts with data.certposture_config as _config([_failing])

	results == [{
		"rule_id": "fail",
		"rule_name": "rule fail",
		"type": "client_certificate_v2",
		"status": "failed",
		"passed": false,
		"matched_certificates": [],
		"candidates": [{
			"fingerprint_sha256": "aa11",
			"subject": "CN=PF2ABC12_mycompany,O=Example",
			"source": {"type": "pem", "location": _pem_path, "label": null},
			"passed": false,
			"reasons": [{
				"condition": "cn",
				"code": "cn_mismatch",
				"message": "certificate CN \"PF2ABC12_mycompany\" does not equal the expected \"other_mycompany\" (compared ignoring the case of ASCII letters)",
				"expected": "other_mycompany",
				"actual": ["PF2ABC12_mycompany"],
			}],
		}],
		"reasons": [{
			"condition": "rule",
			"code": "no_matching_certificate",
			"message": "the one certificate found in the rule's locations does not meet every condition, and its reasons say which it failed",
			"expected": "a certificate that meets every condition",
			"actual": null,
		}],
		"errors": [],
	}]
}

test_success_results_in_rule_order if {
	rules := [_not_applicable, _failing, _erroring, _passing]
	results := posture.results with input as _facts with data.certposture_config as _config(rules)

	_statuses(results) == [
		["mac", "not_applicable"],
		["fail", "failed"],
		["unknown-ca", "error"],
		["pass", "passed"],
	]
}

test_fail_results_in_rule_order if {
	rules := [_passing, _erroring, _failing, _not_applicable]
	results := posture.results with input as _facts with data.certposture_config as _config(rules)

	_statuses(results) == [
		["pass", "passed"],
		["unknown-ca", "error"],
		["fail", "failed"],
		["mac", "not_applicable"],
	]
}

test_success_summary if {
	rules := [_passing, _failing, _failing, _not_applicable, _erroring]
	summary := posture.summary with input as _facts with data.certposture_config as _config(rules)

	summary == {"total": 5, "passed": 1, "failed": 2, "not_applicable": 1, "error": 1}
}

test_fail_summary_counts_only_passed if {
	summary := posture.summary with input as _facts with data.certposture_config as _config([_failing])

	summary == {"total": 1, "passed": 0, "failed": 1, "not_applicable": 0, "error": 0}
}

test_success_no_rules if {
	posture.results == [] with input as _facts
	posture.results == [] with input as _facts with data.certposture_config as _config([])
	summary := posture.summary with input as _facts with data.certposture_config as {}

	summary == {"total": 0, "passed": 0, "failed": 0, "not_applicable": 0, "error": 0}
}

test_success_evaluated_at_from_config if {
	posture.evaluated_at == "2026-12-04T19:05:00Z" with input as _facts with data.certposture_config as _config([])
}

test_fail_evaluated_at_after_expiry if {
	config := object.union(_config([_passing]), {"evaluated_at": "2027-01-01T00:00:01Z"})
	results := posture.results with input as _facts with data.certposture_config as config

	[reason.code | some reason in results[0].candidates[0].reasons] == ["expired"]
}

# Without evaluated_at the policy uses the current time, which lies inside
# this certificate's validity period.
test_success_evaluated_at_now_when_unset if {
	cert := object.union(_cert, {"not_before": "2000-01-01T00:00:00Z", "not_after": "2200-01-01T00:00:00Z"})
	facts := object.union(_facts, {"certificates": [cert]})
	config := object.remove(_config([_passing]), ["evaluated_at"])

	results := posture.results with input as facts with data.certposture_config as config
	evaluated_at := posture.evaluated_at with input as facts with data.certposture_config as config

	_statuses(results) == [["pass", "passed"]]
	time.parse_rfc3339_ns(evaluated_at) > time.parse_rfc3339_ns("2020-01-01T00:00:00Z")
}
