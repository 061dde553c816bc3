package certposture.proof_test

import rego.v1

import data.certposture.client_certificate

# Proof of possession (data.certposture_config.require_proof). The verdicts in
# input.proof_verification come from certposture.proofcheck; these tests feed
# them by hand and check what the policy does with each one.

_now := time.parse_rfc3339_ns("2026-12-04T19:05:00Z")

_nonce := "nonce-0123456789abcdef"

_ca_subject := "CN=Device CA"

_signing_certificates := {
	"ca-device": {"id": "ca-device", "name": "Device CA", "subject": _ca_subject},
	"ca-other": {"id": "ca-other", "name": "Other CA", "subject": "CN=Other CA"},
}

_config := {"signing_certificates": _signing_certificates, "require_proof": true}

_config_without_proof := {"signing_certificates": _signing_certificates}

_path := "/etc/certs/client.pem"

_cert := {
	"source": {"type": "pem", "location": _path, "label": null},
	"fingerprint_sha256": "aa11",
	"subject": {"dn": "CN=dev1", "common_names": ["dev1"]},
	"issuer": {"dn": _ca_subject},
	"serial_number": "0A",
	"not_before": "2026-01-01T00:00:00Z",
	"not_after": "2027-01-01T00:00:00Z",
	"subject_alternative_names": {"dns": [], "email": [], "uri": [], "ip": []},
	"extended_key_usage": [],
	"is_ca": false,
	"public_key": {"algorithm": "ec", "size": 256, "curve": "secp256r1"},
	"private_key": {"present": true, "status": "present", "location": _path, "reason": null},
	"signed_by": ["ca-device"],
}

_rule := {
	"id": "rule-1",
	"name": "Corp device certificate",
	"type": "client_certificate_v2",
	"input": {
		"certificate_id": "ca-device",
		"operating_system": "linux",
		"check_private_key": true,
		"locations": {"paths": [_path]},
	},
}

_verified := {
	"status": "verified",
	"message": "the certificate's private key signed the challenge and these facts",
	"signed_by": ["ca-device"],
	"unverified_signers": [],
}

_facts(certificates, verification) := object.union(
	{
		"schema_version": 1,
		"collected_at": "2026-12-04T19:00:00Z",
		"collector": {"version": "0.1.0"},
		"device": {"hostname": "dev1", "serial_number": "S1", "os": {"family": "linux", "name": "Debian", "version": "12"}},
		"certificates": certificates,
		"errors": [],
	},
	verification,
)

_verification(verdicts) := {"proof_verification": {"nonce": _nonce, "certificates": verdicts}}

_result(certificates, verification) := client_certificate.result(_rule, _facts(certificates, verification), _config, _now)

_codes(result) := [item.code | some candidate in result.candidates; some item in candidate.reasons]

test_success_verified_proof if {
	result := _result([_cert], _verification({"aa11": _verified}))
	result.status == "passed"
	_codes(result) == []
}

test_success_without_require_proof_ignores_verdicts if {
	verification := _verification({"aa11": object.union(_verified, {"status": "invalid"})})
	result := client_certificate.result(_rule, _facts([_cert], verification), _config_without_proof, _now)
	result.status == "passed"
}

test_fail_no_verification_in_input if {
	result := _result([_cert], {})
	result.status == "failed"
	_codes(result) == ["proof_missing"]
}

test_fail_no_verdict_for_the_certificate if {
	result := _result([_cert], _verification({"bb22": _verified}))
	_codes(result) == ["proof_missing"]
}

test_fail_each_verdict_has_its_code if {
	every status, code in {
		"missing": "proof_missing",
		"invalid": "proof_invalid",
		"facts_altered": "proof_facts_altered",
		"nonce_invalid": "proof_nonce_invalid",
		"fingerprint_mismatch": "proof_fingerprint_mismatch",
	} {
		verdict := {"status": status, "message": "why", "signed_by": ["ca-device"], "unverified_signers": []}
		result := _result([_cert], _verification({"aa11": verdict}))
		result.status == "failed"
		_codes(result) == [code]
		[candidate] := result.candidates
		candidate.reasons[0].message == sprintf("no verified proof of possession (%s): why", [status])
	}
}

test_fail_unknown_verdict_status_is_invalid if {
	verdict := object.union(_verified, {"status": "trusted"})
	_codes(_result([_cert], _verification({"aa11": verdict}))) == ["proof_invalid"]
}

test_fail_verdict_not_an_object if {
	_codes(_result([_cert], _verification({"aa11": "verified"}))) == ["proof_missing"]
}

test_fail_verification_not_an_object if {
	_codes(_result([_cert], {"proof_verification": "verified"})) == ["proof_missing"]
}

# The signer comes from the verdict, which the evaluator recomputed from the
# DER, and not from the device's signed_by.
test_fail_signer_from_verdict_not_from_device if {
	verdict := object.union(_verified, {"signed_by": ["ca-other"]})
	result := _result([_cert], _verification({"aa11": verdict}))
	result.status == "failed"
	_codes(result) == ["signer_mismatch"]
}

test_success_signer_from_verdict_when_device_reports_none if {
	cert := object.union(_cert, {"signed_by": []})
	result := _result([cert], _verification({"aa11": _verified}))
	result.status == "passed"
}

test_fail_unverified_signer_from_verdict if {
	verdict := object.union(_verified, {
		"signed_by": [],
		"unverified_signers": [{
			"id": "ca-device",
			"status": "unsupported",
			"signature_algorithm": "dsa-with-sha1",
			"reason": "not supported",
		}],
	})
	_codes(_result([_cert], _verification({"aa11": verdict}))) == ["signature_unsupported"]
}

test_proof_condition_listed_first_in_explain if {
	config := object.union(_config, {"explain": true})
	result := client_certificate.result(_rule, _facts([_cert], _verification({"aa11": _verified})), config, _now)
	[candidate] := result.candidates
	candidate.conditions[0] == {
		"condition": "proof",
		"status": "passed",
		"expected": {"status": "verified", "nonce": _nonce},
		"actual": {"status": "verified"},
	}
}

test_no_proof_condition_without_require_proof if {
	config := object.union(_config_without_proof, {"explain": true})
	result := client_certificate.result(_rule, _facts([_cert], {}), config, _now)
	[candidate] := result.candidates
	not "proof" in {item.condition | some item in candidate.conditions}
}

test_only_the_proved_certificate_passes if {
	other := object.union(_cert, {"fingerprint_sha256": "bb22"})
	result := _result([_cert, other], _verification({"aa11": _verified}))
	result.status == "passed"
	result.matched_certificates == ["aa11"]
}

test_fail_require_proof_of_another_type_requires_proofs if {
	config := object.union(_config, {"require_proof": "yes"})
	result := client_certificate.result(_rule, _facts([_cert], {}), config, _now)
	_codes(result) == ["proof_missing"]
}

test_success_require_proof_false if {
	config := object.union(_config, {"require_proof": false})
	result := client_certificate.result(_rule, _facts([_cert], {}), config, _now)
	result.status == "passed"
}
