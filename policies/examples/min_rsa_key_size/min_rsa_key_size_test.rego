# Run with: certposture test --with-shipped policies/examples/min_rsa_key_size
# The test package lies outside certposture.conditions, so that it is never
# taken for an extra condition itself.
package examples_test.min_rsa_key_size

import rego.v1

import data.certposture.conditions.min_rsa_key_size
import data.certposture.posture

_certificate(public_key) := {"public_key": public_key}

_codes(public_key) := {item.code | some item in reasons} if {
	reasons := min_rsa_key_size.reasons with input as {"certificate": _certificate(public_key)}
}

test_rsa_2048_fails if {
	_codes({"algorithm": "rsa", "size": 2048}) == {"rsa_key_too_small"}
}

test_rsa_3072_passes if {
	_codes({"algorithm": "rsa", "size": 3072}) == set()
}

test_rsa_4096_passes if {
	_codes({"algorithm": "rsa", "size": 4096}) == set()
}

test_rsa_without_size_fails if {
	_codes({"algorithm": "rsa", "size": null}) == {"rsa_key_size_unknown"}
}

test_ec_key_passes if {
	_codes({"algorithm": "ec", "size": 256, "curve": "secp256r1"}) == set()
}

test_reason_names_the_sizes if {
	some item in min_rsa_key_size.reasons with input as {"certificate": _certificate({"algorithm": "rsa", "size": 2048})}
	item.condition == "min_rsa_key_size"
	item.expected == 3072
	item.actual == 2048
	contains(item.message, "2048 bits")
}

# Through the shipped policies: the extra reason fails a certificate that
# meets every built-in condition.

_facts(public_key) := {
	"schema_version": 1,
	"device": {"hostname": "pf2abc12", "serial_number": "PF2ABC12", "os": {"family": "linux", "name": "Debian", "version": "12"}},
	"certificates": [{
		"source": {"type": "pem", "location": "/certs/client.pem", "label": null},
		"fingerprint_sha256": "aa11",
		"subject": {"dn": "CN=device", "common_names": ["device"]},
		"issuer": {"dn": "CN=Device CA"},
		"serial_number": "0a",
		"not_before": "2026-01-01T00:00:00Z",
		"not_after": "2027-01-01T00:00:00Z",
		"subject_alternative_names": {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0},
		"extended_key_usage": ["1.3.6.1.5.5.7.3.2"],
		"is_ca": false,
		"public_key": public_key,
		"private_key": {"present": true, "status": "present", "location": "/certs/client.pem", "reason": null},
		"signed_by": ["ca-1"],
	}],
	"errors": [],
}

_config := {
	"evaluated_at": "2026-12-04T19:00:00Z",
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

_result(public_key) := results[0] if {
	results := posture.results with input as _facts(public_key) with data.certposture_config as _config
}

test_small_rsa_key_fails_the_rule if {
	result := _result({"algorithm": "rsa", "size": 2048})
	result.status == "failed"
	[item.code | some item in result.candidates[0].reasons] == ["rsa_key_too_small"]
}

test_large_rsa_key_passes_the_rule if {
	_result({"algorithm": "rsa", "size": 3072}).status == "passed"
}
