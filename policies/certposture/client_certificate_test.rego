package certposture.client_certificate_test

import rego.v1

import data.certposture.client_certificate

# Fixtures: one device, one signing certificate and one certificate that meets
# every condition of the base rule input. Each test changes one thing.

_now := time.parse_rfc3339_ns("2026-12-04T19:05:00Z")

_ca_subject := "CN=Example Device CA,O=Example"

_config := {"signing_certificates": {
	"ca-device": {
		"id": "ca-device",
		"name": "Example Device CA",
		"subject": _ca_subject,
		"issuer": "CN=Example Root CA,O=Example",
		"serial_number": "1000",
		"signature_algorithm": "sha256WithRSAEncryption",
		"expires_on": "2030-01-01T00:00:00Z",
		"fingerprint_sha256": "ca00",
	},
	"ca-other": {
		"id": "ca-other",
		"name": "Other CA",
		"subject": "CN=Other CA,O=Example",
		"issuer": "CN=Other CA,O=Example",
		"serial_number": "2000",
		"signature_algorithm": "ecdsa-with-SHA256",
		"expires_on": "2030-01-01T00:00:00Z",
		"fingerprint_sha256": "ca01",
	},
}}

_device := {
	"hostname": "pf2abc12",
	"serial_number": "PF2ABC12",
	"os": {"family": "linux", "name": "Debian GNU/Linux", "version": "12"},
}

_pem_path := "/usr/local/mycompany/certs/client.pem"

_cert := {
	"source": {"type": "pem", "location": _pem_path, "label": null},
	"fingerprint_sha256": "aa11",
	"subject": {"dn": "CN=PF2ABC12_mycompany,O=Example", "common_names": ["PF2ABC12_mycompany"]},
	"issuer": {"dn": _ca_subject},
	"serial_number": "0a",
	"not_before": "2026-01-01T00:00:00Z",
	"not_after": "2027-01-01T00:00:00Z",
	"subject_alternative_names": {
		"dns": ["pf2abc12.corp.example"],
		"email": [],
		"uri": [],
		"ip": [],
		"other_name_count": 0,
	},
	"extended_key_usage": ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.4"],
	"is_ca": false,
	"public_key": {"algorithm": "rsa", "size": 2048},
	"private_key": {"present": true, "status": "present", "location": _pem_path, "reason": null},
	"signed_by": ["ca-device"],
}

_input := {
	"certificate_id": "ca-device",
	"operating_system": "linux",
	"check_private_key": true,
	"locations": {"paths": [_pem_path]},
}

_rule(rule_input) := {
	"id": "rule-1",
	"name": "Corp device certificate",
	"type": "client_certificate_v2",
	"input": rule_input,
}

_facts(device, certificates, errors) := {
	"schema_version": 1,
	"collected_at": "2026-12-04T19:00:00Z",
	"collector": {"version": "0.1.0"},
	"device": device,
	"certificates": certificates,
	"errors": errors,
}

_with_input(changes) := object.union(_input, changes)

_with_cert(changes) := object.union(_cert, changes)

_with_device(changes) := object.union(_device, changes)

# Result of a rule on the default device holding the given certificates.
_result(rule_input, certificates) := client_certificate.result(
	_rule(rule_input),
	_facts(_device, certificates, []),
	_config,
	_now,
)

_result_on(device, rule_input, certificates) := client_certificate.result(
	_rule(rule_input),
	_facts(device, certificates, []),
	_config,
	_now,
)

_passes(rule_input, certificates) if {
	result := _result(rule_input, certificates)
	result.status == "passed"
	result.passed == true
}

# Reasons of the single candidate of a result.
_reasons(result) := reasons if {
	[candidate] := result.candidates
	reasons := candidate.reasons
}

_codes(result) := [reason.code | some candidate in result.candidates; some reason in candidate.reasons]

_rule_codes(result) := [reason.code | some reason in result.reasons]

_candidate(cert, reasons) := {
	"fingerprint_sha256": cert.fingerprint_sha256,
	"subject": cert.subject.dn,
	"source": cert.source,
	"passed": count(reasons) == 0,
	"reasons": reasons,
}

# Whole result, every condition met.

test_success_whole_result_all_conditions if {
	rule_input := _with_input({
		"cn": "${serial_number}_mycompany",
		"extended_key_usage": ["clientAuth", "emailProtection"],
		"subject_alternative_names": ["${hostname}.corp.example"],
	})

	_result(rule_input, [_cert]) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "passed",
		"passed": true,
		"matched_certificates": ["aa11"],
		"candidates": [_candidate(_cert, [])],
		"reasons": [],
		"errors": [],
	}
}

# Condition 1: signer.

test_success_signer_verified if {
	_passes(_input, [_cert])
}

test_fail_signer_signed_by_other_ca if {
	cert := _with_cert({"issuer": {"dn": "CN=Other CA,O=Example"}, "signed_by": ["ca-other"]})

	_result(_input, [cert]) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "failed",
		"passed": false,
		"matched_certificates": [],
		"candidates": [_candidate(cert, [{
			"condition": "signer",
			"code": "signer_mismatch",
			"message": "certificate issued by \"CN=Other CA,O=Example\" is not signed by signing certificate \"Example Device CA\" (id ca-device)",
			"expected": {"certificate_id": "ca-device", "subject": _ca_subject},
			"actual": {"issuer": "CN=Other CA,O=Example", "signed_by": ["ca-other"]},
		}])],
		"reasons": [{
			"condition": "rule",
			"code": "no_matching_certificate",
			"message": "the one certificate found in the rule's locations does not meet every condition, and its reasons say which it failed",
			"expected": "a certificate that meets every condition",
			"actual": null,
		}],
		"errors": [],
	}
}

# A certificate that only names the signing certificate as its issuer, with a
# signature that did not verify, must not pass.
test_fail_signer_issuer_name_only if {
	cert := _with_cert({"signed_by": []})

	_reasons(_result(_input, [cert])) == [{
		"condition": "signer",
		"code": "signer_mismatch",
		"message": "certificate names \"CN=Example Device CA,O=Example\" as its issuer, but its signature does not verify with the public key of signing certificate \"Example Device CA\" (id ca-device)",
		"expected": {"certificate_id": "ca-device", "subject": _ca_subject},
		"actual": {"issuer": _ca_subject, "signed_by": []},
	}]
}

test_success_signer_among_several if {
	_passes(_input, [_with_cert({"signed_by": ["ca-other", "ca-device"]})])
}

_dsa_reason := "cryptography 50.0.2 cannot check this signature (Unsupported signature algorithm)"

_unsupported(id) := {
	"id": id,
	"status": "unsupported",
	"signature_algorithm": "dsa-with-sha1",
	"reason": _dsa_reason,
}

_invalid(id) := {
	"id": id,
	"status": "invalid",
	"signature_algorithm": "sha256WithRSAEncryption",
	"reason": "the signature does not verify with the public key of this signing certificate",
}

# A signature the collector could not check never passes, and the reason
# names the signature algorithm and why it could not be checked.
test_fail_signer_signature_unsupported if {
	cert := _with_cert({"signed_by": [], "unverified_signers": [_unsupported("ca-device")]})

	_reasons(_result(_input, [cert])) == [{
		"condition": "signer",
		"code": "signature_unsupported",
		"message": "certificate names \"CN=Example Device CA,O=Example\" as its issuer, but its signature algorithm dsa-with-sha1 could not be checked with the public key of signing certificate \"Example Device CA\" (id ca-device), and an unchecked signature does not count: cryptography 50.0.2 cannot check this signature (Unsupported signature algorithm)",
		"expected": {"certificate_id": "ca-device", "subject": _ca_subject},
		"actual": {"issuer": _ca_subject, "signed_by": [], "unverified_signer": _unsupported("ca-device")},
	}]
}

# Facts written by hand or by another tool may leave the details out.
test_fail_signer_signature_unsupported_without_details if {
	cert := _with_cert({"signed_by": [], "unverified_signers": [{"id": "ca-device", "status": "unsupported"}]})
	[item] := _reasons(_result(_input, [cert]))

	item.code == "signature_unsupported"
	endswith(item.message, "its signature algorithm (not reported) could not be checked with the public key of signing certificate \"Example Device CA\" (id ca-device), and an unchecked signature does not count: no reason given")
}

test_fail_signer_signature_invalid if {
	cert := _with_cert({"signed_by": [], "unverified_signers": [_invalid("ca-device")]})

	_codes(_result(_input, [cert])) == ["signer_mismatch"]
	_reasons(_result(_input, [cert]))[0].message == "certificate names \"CN=Example Device CA,O=Example\" as its issuer, but its signature does not verify with the public key of signing certificate \"Example Device CA\" (id ca-device)"
}

# The collector never lists one id in both, and such facts fail.
test_fail_signer_both_verified_and_unverified if {
	invalid := _with_cert({"signed_by": ["ca-device"], "unverified_signers": [_invalid("ca-device")]})
	unsupported := _with_cert({"signed_by": ["ca-device"], "unverified_signers": [_unsupported("ca-device")]})

	_codes(_result(_input, [invalid])) == ["signer_mismatch"]
	_codes(_result(_input, [unsupported])) == ["signature_unsupported"]
}

test_success_signer_unverified_by_another if {
	cert := _with_cert({"unverified_signers": [_unsupported("ca-other"), _invalid("ca-removed")]})

	_passes(_input, [cert])
}

test_fail_signer_unsupported_by_another if {
	cert := _with_cert({
		"issuer": {"dn": "CN=Other CA,O=Example"},
		"signed_by": [],
		"unverified_signers": [_unsupported("ca-other")],
	})

	_codes(_result(_input, [cert])) == ["signer_mismatch"]
	_codes(_result(_with_input({"certificate_id": "ca-other"}), [cert])) == ["signature_unsupported"]
}

# Condition 2: validity period.

test_success_validity_within_period if {
	_passes(_input, [_cert])
}

test_success_validity_boundaries_inclusive if {
	_passes(_input, [_with_cert({"not_before": "2026-12-04T19:05:00Z"})])
	_passes(_input, [_with_cert({"not_after": "2026-12-04T19:05:00Z"})])
}

test_success_validity_from_year_1 if {
	_passes(_input, [_with_cert({"not_before": "0001-01-01T00:00:00Z"})])
}

test_success_validity_until_year_9999 if {
	_passes(_input, [_with_cert({"not_after": "9999-12-31T23:59:59Z"})])
}

test_fail_not_yet_valid_year_3000 if {
	cert := _with_cert({"not_before": "3000-01-01T00:00:00Z", "not_after": "9999-12-31T23:59:59Z"})

	[reason.code | some reason in _reasons(_result(_input, [cert]))] == ["not_yet_valid"]
}

test_success_validity_with_offset if {
	_passes(_input, [_with_cert({"not_before": "2026-12-04T21:05:00+02:00"})])
}

test_fail_validity_with_offset if {
	cert := _with_cert({"not_before": "2026-12-04T21:05:01+02:00"})

	[reason.code | some reason in _reasons(_result(_input, [cert]))] == ["not_yet_valid"]
}

test_fail_expired if {
	cert := _with_cert({"not_before": "2025-01-01T00:00:00Z", "not_after": "2026-12-04T19:04:59Z"})

	_reasons(_result(_input, [cert])) == [{
		"condition": "validity",
		"code": "expired",
		"message": "certificate expired at 2026-12-04T19:04:59Z, before the evaluation time 2026-12-04T19:05:00Z",
		"expected": {"not_before": "2025-01-01T00:00:00Z", "not_after": "2026-12-04T19:04:59Z"},
		"actual": "2026-12-04T19:05:00Z",
	}]
}

test_fail_not_yet_valid if {
	cert := _with_cert({"not_before": "2026-12-04T19:05:01Z"})

	_reasons(_result(_input, [cert])) == [{
		"condition": "validity",
		"code": "not_yet_valid",
		"message": "certificate is not valid until 2026-12-04T19:05:01Z, and the evaluation time is 2026-12-04T19:05:00Z",
		"expected": {"not_before": "2026-12-04T19:05:01Z", "not_after": "2027-01-01T00:00:00Z"},
		"actual": "2026-12-04T19:05:00Z",
	}]
}

# Condition 3: cn.

test_success_cn_exact if {
	_passes(_with_input({"cn": "PF2ABC12_mycompany"}), [_cert])
}

test_success_cn_case_insensitive if {
	_passes(_with_input({"cn": "pf2abc12_MYCOMPANY"}), [_cert])
}

test_fail_cn_mismatch if {
	result := _result(_with_input({"cn": "other_mycompany"}), [_cert])

	_reasons(result) == [{
		"condition": "cn",
		"code": "cn_mismatch",
		"message": "certificate CN \"PF2ABC12_mycompany\" does not equal the expected \"other_mycompany\" (compared ignoring the case of ASCII letters)",
		"expected": "other_mycompany",
		"actual": ["PF2ABC12_mycompany"],
	}]
}

test_fail_cn_prefix_only if {
	_codes(_result(_with_input({"cn": "PF2ABC12"}), [_cert])) == ["cn_mismatch"]
}

test_success_cn_any_of_several_common_names if {
	cert := _with_cert({"subject": {"common_names": ["first", "PF2ABC12_mycompany"]}})

	_passes(_with_input({"cn": "pf2abc12_mycompany"}), [cert])
}

test_fail_cn_no_common_name if {
	cert := _with_cert({"subject": {"dn": "O=Example", "common_names": []}})

	_reasons(_result(_with_input({"cn": "x"}), [cert])) == [{
		"condition": "cn",
		"code": "cn_mismatch",
		"message": "certificate has no subject CN, but the rule expects \"x\"",
		"expected": "x",
		"actual": [],
	}]
}

test_fail_cn_mismatch_several_common_names if {
	cert := _with_cert({"subject": {"common_names": ["first", "second"]}})

	_reasons(_result(_with_input({"cn": "third"}), [cert]))[0].message == "none of the certificate CNs \"first\", \"second\" equals the expected \"third\" (compared ignoring the case of ASCII letters)"
}

test_success_cn_unset_when_empty_or_null if {
	cert := _with_cert({"subject": {"dn": "O=Example", "common_names": []}})

	_passes(_with_input({"cn": ""}), [cert])
	_passes(_with_input({"cn": null}), [cert])
	_passes(_input, [cert])
}

test_success_cn_serial_number_variable if {
	_passes(_with_input({"cn": "${serial_number}_mycompany"}), [_cert])
}

test_fail_cn_serial_number_variable if {
	device := _with_device({"serial_number": "OTHER1"})
	result := _result_on(device, _with_input({"cn": "${serial_number}_mycompany"}), [_cert])

	_reasons(result)[0].expected == "OTHER1_mycompany"
	_codes(result) == ["cn_mismatch"]
}

test_success_cn_hostname_variable if {
	cert := _with_cert({"subject": {"common_names": ["host-pf2abc12"]}})

	_passes(_with_input({"cn": "host-${hostname}"}), [cert])
}

test_fail_cn_hostname_variable if {
	cert := _with_cert({"subject": {"common_names": ["host-${hostname}"]}})

	_codes(_result(_with_input({"cn": "host-${hostname}"}), [cert])) == ["cn_mismatch"]
}

test_success_cn_both_variables if {
	cert := _with_cert({"subject": {"common_names": ["PF2ABC12.pf2abc12"]}})

	_passes(_with_input({"cn": "${serial_number}.${hostname}"}), [cert])
}

# A serial number that contains "${hostname}" is inserted literally, and so is
# a hostname that contains "${serial_number}".
test_success_cn_no_double_expansion if {
	device := _with_device({"serial_number": "S${hostname}", "hostname": "h${serial_number}"})
	cert := _with_cert({"subject": {"common_names": ["S${hostname}-h${serial_number}"]}})
	result := _result_on(device, _with_input({"cn": "${serial_number}-${hostname}"}), [cert])

	result.status == "passed"
}

test_fail_cn_double_expansion if {
	device := _with_device({"serial_number": "S${hostname}", "hostname": "h"})
	cert := _with_cert({"subject": {"common_names": ["Sh-h"]}})
	result := _result_on(device, _with_input({"cn": "${serial_number}-${hostname}"}), [cert])

	_reasons(result)[0].expected == "S${hostname}-h"
	_codes(result) == ["cn_mismatch"]
}

# Condition 4: extended key usage.

test_success_eku_both_required if {
	_passes(_with_input({"extended_key_usage": ["clientAuth", "emailProtection"]}), [_cert])
}

test_fail_eku_one_missing if {
	cert := _with_cert({"extended_key_usage": ["1.3.6.1.5.5.7.3.2"]})
	result := _result(_with_input({"extended_key_usage": ["clientAuth", "emailProtection"]}), [cert])

	_reasons(result) == [{
		"condition": "extended_key_usage",
		"code": "eku_missing",
		"message": "certificate extended key usage lacks emailProtection (1.3.6.1.5.5.7.3.4)",
		"expected": [{"name": "emailProtection", "oid": "1.3.6.1.5.5.7.3.4"}],
		"actual": ["1.3.6.1.5.5.7.3.2"],
	}]
}

test_fail_eku_extension_absent if {
	cert := _with_cert({"extended_key_usage": []})
	result := _result(_with_input({"extended_key_usage": ["emailProtection", "clientAuth"]}), [cert])

	_reasons(result)[0].message == "certificate extended key usage lacks clientAuth (1.3.6.1.5.5.7.3.2), emailProtection (1.3.6.1.5.5.7.3.4)"
	_codes(result) == ["eku_missing"]
}

test_success_eku_unset_when_empty_or_null if {
	cert := _with_cert({"extended_key_usage": []})

	_passes(_with_input({"extended_key_usage": []}), [cert])
	_passes(_with_input({"extended_key_usage": null}), [cert])
}

# Condition 5: private key.

test_success_private_key_present if {
	_passes(_with_input({"check_private_key": true}), [_cert])
}

test_fail_private_key_missing if {
	cert := _with_cert({"private_key": {
		"present": false,
		"status": "missing",
		"location": null,
		"reason": "no key file in the rule's paths matches the certificate's public key",
	}})

	_reasons(_result(_input, [cert])) == [{
		"condition": "private_key",
		"code": "private_key_missing",
		"message": "no private key matching the certificate was found: no key file in the rule's paths matches the certificate's public key",
		"expected": "present",
		"actual": "missing",
	}]
}

test_fail_private_key_missing_without_reason if {
	cert := _with_cert({"private_key": {"present": false, "status": "missing", "location": null, "reason": null}})

	_reasons(_result(_input, [cert]))[0].message == "no private key matching the certificate was found in the collected locations"
}

test_fail_private_key_unverified if {
	cert := _with_cert({"private_key": {
		"present": false,
		"status": "unverified",
		"location": "/usr/local/mycompany/certs/client.key",
		"reason": "the key file is encrypted",
	}})

	_reasons(_result(_input, [cert])) == [{
		"condition": "private_key",
		"code": "private_key_unverified",
		"message": "a private key was found but could not be compared with the certificate's public key, so it does not count as present: the key file is encrypted",
		"expected": "present",
		"actual": "unverified",
	}]
}

test_success_private_key_not_checked if {
	cert := _with_cert({"private_key": {"present": false, "status": "missing", "location": null, "reason": null}})

	_passes(_with_input({"check_private_key": false}), [cert])
}

test_success_file_path_with_trailing_slash if {
	rule_input := _with_input({"locations": {"paths": [concat("", [_pem_path, "/"])]}})
	_passes(rule_input, [_cert])
}

test_success_private_key_in_other_rule_path if {
	key_path := "/usr/local/mycompany/certs/client.key"
	rule_input := _with_input({"locations": {"paths": [_pem_path, key_path]}})
	_passes(rule_input, [_with_cert({"private_key": {"present": true, "status": "present", "location": key_path}})])
}

test_success_private_key_under_folder_path if {
	rule_input := _with_input({"locations": {"paths": ["/usr/local/mycompany/"]}})
	key := {"present": true, "status": "present", "location": "/usr/local/mycompany/keys/client.key"}
	_passes(rule_input, [_with_cert({"private_key": key})])
}

test_fail_private_key_outside_rule_paths if {
	cert := _with_cert({"private_key": {"present": true, "status": "present", "location": "/tmp/client.key"}})

	_reasons(_result(_input, [cert])) == [{
		"condition": "private_key",
		"code": "private_key_outside_locations",
		"message": "the matching private key was found at \"/tmp/client.key\", which is outside the rule's paths \"/usr/local/mycompany/certs/client.pem\"",
		"expected": [_pem_path],
		"actual": "/tmp/client.key",
	}]
}

test_success_private_key_outside_paths_not_checked if {
	cert := _with_cert({"private_key": {"present": true, "status": "present", "location": "/tmp/client.key"}})
	_passes(_with_input({"check_private_key": false}), [cert])
}

# Condition 6: subject alternative names.

test_success_san_any_listed_value_matches if {
	rule_input := _with_input({"subject_alternative_names": ["absent.example", "PF2ABC12.Corp.Example"]})

	_passes(rule_input, [_cert])
}

test_success_san_each_comparable_kind if {
	cert := _with_cert({"subject_alternative_names": {
		"dns": [],
		"email": ["Device@Corp.Example"],
		"uri": ["spiffe://corp.example/device/pf2abc12"],
		"ip": ["2001:db8::1"],
		"other_name_count": 1,
	}})

	_passes(_with_input({"subject_alternative_names": ["device@corp.example"]}), [cert])
	_passes(_with_input({"subject_alternative_names": ["spiffe://corp.example/device/${hostname}"]}), [cert])
	_passes(_with_input({"subject_alternative_names": ["2001:DB8::1"]}), [cert])
}

test_fail_san_mismatch if {
	result := _result(_with_input({"subject_alternative_names": ["${hostname}.other.example", "x.example"]}), [_cert])

	_reasons(result) == [{
		"condition": "subject_alternative_names",
		"code": "san_mismatch",
		"message": "none of the expected SANs \"pf2abc12.other.example\", \"x.example\" equals a DNS, email, URI or IP SAN of the certificate (compared ignoring the case of ASCII letters)",
		"expected": ["pf2abc12.other.example", "x.example"],
		"actual": _cert.subject_alternative_names,
	}]
}

# A UPN or other otherName value is never compared, even when it would equal
# the expected value.
test_fail_san_other_name_only if {
	sans := {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 1}
	result := _result(_with_input({"subject_alternative_names": ["device@corp.example"]}), [_with_cert({"subject_alternative_names": sans})])

	_reasons(result) == [{
		"condition": "subject_alternative_names",
		"code": "san_mismatch",
		"message": "certificate has only otherName SANs (1), which are never compared, but the rule expects one of \"device@corp.example\"",
		"expected": ["device@corp.example"],
		"actual": sans,
	}]
}

test_fail_san_extension_absent if {
	sans := {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0}
	result := _result(_with_input({"subject_alternative_names": ["a.example"]}), [_with_cert({"subject_alternative_names": sans})])

	_reasons(result)[0].message == "certificate has no DNS, email, URI or IP SAN, but the rule expects one of \"a.example\""
}

test_success_san_unset_when_empty_or_null if {
	sans := {"dns": [], "email": [], "uri": [], "ip": [], "other_name_count": 0}
	cert := _with_cert({"subject_alternative_names": sans})

	_passes(_with_input({"subject_alternative_names": []}), [cert])
	_passes(_with_input({"subject_alternative_names": null}), [cert])
}

# Condition 7: operating system.

test_success_os_matches if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "keychain", "location": "system", "label": "corp-device"}})
	result := _result_on(mac, _with_input({"operating_system": "mac", "locations": null}), [cert])

	result.status == "passed"
	result.candidates == [_candidate(cert, [])]
}

test_fail_os_not_applicable if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})

	_result_on(mac, _input, [_cert]) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "not_applicable",
		"passed": false,
		"matched_certificates": [],
		"candidates": [],
		"reasons": [{
			"condition": "operating_system",
			"code": "os_mismatch",
			"message": "rule applies to operating system \"linux\", but the device runs \"mac\"",
			"expected": "linux",
			"actual": "mac",
		}],
		"errors": [],
	}
}

# Rule-level outcomes.

test_fail_no_certificate if {
	error := {"source": "pem", "location": _pem_path, "step": "open", "message": "permission denied"}
	facts := _facts(_device, [], [error])

	client_certificate.result(_rule(_input), facts, _config, _now) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "failed",
		"passed": false,
		"matched_certificates": [],
		"candidates": [],
		"reasons": [{
			"condition": "locations",
			"code": "no_certificate",
			"message": "no certificate was collected from the PEM files at or under \"/usr/local/mycompany/certs/client.pem\", and 1 collection error was reported there",
			"expected": {"source": "pem", "paths": [_pem_path]},
			"actual": null,
		}],
		"errors": [error],
	}
}

test_fail_no_certificate_several_errors if {
	errors := [
		{"source": "pem", "location": _pem_path, "step": "load", "message": "not a certificate"},
		{"source": "pem", "location": _pem_path, "step": "key", "message": "permission denied"},
	]
	result := client_certificate.result(_rule(_input), _facts(_device, [], errors), _config, _now)

	result.reasons[0].message == "no certificate was collected from the PEM files at or under \"/usr/local/mycompany/certs/client.pem\", and 2 collection errors were reported there"
	result.errors == errors
}

test_success_signing_certificate_known if {
	_passes(_with_input({"certificate_id": "ca-other"}), [_with_cert({"signed_by": ["ca-other"]})])
}

test_fail_unknown_signing_certificate if {
	_result(_with_input({"certificate_id": "ca-removed"}), [_cert]) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "error",
		"passed": false,
		"matched_certificates": [],
		"candidates": [],
		"reasons": [{
			"condition": "signer",
			"code": "unknown_signing_certificate",
			"message": "signing certificate \"ca-removed\" was not found, so store it with \"certposture ca add FILE\" or pick a stored one from \"certposture ca list\"",
			"expected": "ca-removed",
			"actual": null,
		}],
		"errors": [],
	}
}

test_success_variable_unused_when_unavailable if {
	device := _with_device({"serial_number": null, "hostname": null})

	_result_on(device, _with_input({"cn": "PF2ABC12_mycompany"}), [_cert]).status == "passed"
}

test_fail_variable_unavailable_serial_number if {
	device := _with_device({"serial_number": null})

	_result_on(device, _with_input({"cn": "${serial_number}_mycompany"}), [_cert]) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "client_certificate_v2",
		"status": "error",
		"passed": false,
		"matched_certificates": [],
		"candidates": [],
		"reasons": [{
			"condition": "rule",
			"code": "variable_unavailable",
			"message": "the rule uses ${serial_number}, but the device serial number is unknown, so pass it to the collector with --serial-number",
			"expected": "serial_number",
			"actual": null,
		}],
		"errors": [],
	}
}

test_fail_variable_unavailable_hostname_in_san if {
	device := _with_device({"hostname": ""})
	result := _result_on(device, _with_input({"subject_alternative_names": ["${hostname}.corp.example"]}), [_cert])

	result.status == "error"
	result.reasons[0].message == "the rule uses ${hostname}, but the device hostname is unknown, so pass it to the collector with --hostname"
	_rule_codes(result) == ["variable_unavailable"]
}

test_success_rule_type_client_certificate_v2 if {
	_passes(_input, [_cert])
}

test_fail_unsupported_rule_type if {
	rule := object.union(_rule(_input), {"type": "file"})

	client_certificate.result(rule, _facts(_device, [_cert], []), _config, _now) == {
		"rule_id": "rule-1",
		"rule_name": "Corp device certificate",
		"type": "file",
		"status": "error",
		"passed": false,
		"matched_certificates": [],
		"candidates": [],
		"reasons": [{
			"condition": "rule",
			"code": "unsupported_rule_type",
			"message": "rule type \"file\" is not supported, only \"client_certificate_v2\" is",
			"expected": "client_certificate_v2",
			"actual": "file",
		}],
		"errors": [],
	}
}

test_fail_unsupported_rule_type_missing if {
	rule := object.remove(_rule(_input), ["type"])
	result := client_certificate.result(rule, _facts(_device, [_cert], []), _config, _now)

	result.type == null
	result.reasons[0].message == "rule type null is not supported, only \"client_certificate_v2\" is"
}

# Malformed rules are errors, never passes.

test_fail_invalid_rule_unknown_eku_name if {
	result := _result(_with_input({"extended_key_usage": ["clientAuth", "serverAuth"]}), [_cert])

	result.status == "error"
	result.reasons == [{
		"condition": "rule",
		"code": "invalid_rule",
		"message": "rule input extended_key_usage is invalid because its items must be clientAuth or emailProtection",
		"expected": ["clientAuth", "emailProtection"],
		"actual": ["clientAuth", "serverAuth"],
	}]
}

test_fail_invalid_rule_fields if {
	rule_input := {
		"certificate_id": "",
		"operating_system": "ios",
		"check_private_key": "yes",
		"cn": 7,
		"subject_alternative_names": "a.example",
		"locations": {"paths": ["relative/client.pem"], "trust_stores": ["machine"]},
	}
	result := _result(rule_input, [_cert])

	result.status == "error"
	[reason.message | some reason in result.reasons] == [
		"rule input certificate_id is invalid because it must be the id of a stored signing certificate",
		"rule input operating_system is invalid because it must be linux, mac or windows",
		"rule input check_private_key is invalid because it must be true or false",
		"rule input cn is invalid because it must be a string",
		"rule input subject_alternative_names is invalid because it must be a list of strings",
		"rule input locations.paths is invalid because it must be a list of absolute paths",
		"rule input locations.trust_stores is invalid because its items must be system or user",
		"rule input locations is invalid because paths apply to linux rules only and trust_stores to mac and windows rules only",
	]
}

test_fail_invalid_rule_unknown_variable if {
	result := _result(_with_input({"cn": "${serial}_mycompany"}), [_cert])

	result.status == "error"
	result.reasons[0].actual == ["${serial}_mycompany"]
	_rule_codes(result) == ["invalid_rule"]
}

test_fail_invalid_rule_input_missing if {
	result := client_certificate.result(
		{"id": "rule-1", "type": "client_certificate_v2"},
		_facts(_device, [_cert], []),
		_config,
		_now,
	)

	result.status == "error"
	_rule_codes(result) == ["invalid_rule"]
}

# Locations.

test_success_location_exact_file if {
	_passes(_with_input({"locations": {"paths": ["/etc/other.pem", _pem_path]}}), [_cert])
}

test_success_location_directory if {
	_passes(_with_input({"locations": {"paths": ["/usr/local/mycompany"]}}), [_cert])
	_passes(_with_input({"locations": {"paths": ["/usr/local/mycompany/certs/"]}}), [_cert])
}

test_fail_location_sibling_directory if {
	result := _result(_with_input({"locations": {"paths": ["/usr/local/mycompany/cert"]}}), [_cert])

	result.candidates == []
	_rule_codes(result) == ["no_certificate"]
}

test_fail_location_paths_ignore_other_sources if {
	nssdb := _with_cert({"source": {"type": "nssdb", "location": _pem_path, "label": "corp-device"}})

	_rule_codes(_result(_input, [nssdb])) == ["no_certificate"]
}

test_success_location_nssdb_without_paths if {
	nssdb := _with_cert({"source": {"type": "nssdb", "location": "/etc/pki/nssdb", "label": "corp-device"}})

	_passes(_with_input({"locations": null}), [nssdb])
	_passes(_with_input({"locations": {"paths": []}}), [nssdb])
	_passes(object.remove(_input, ["locations"]), [nssdb])
}

test_fail_location_nssdb_ignores_pem if {
	result := _result(_with_input({"locations": null}), [_cert])

	result.reasons[0].expected == {"source": "nssdb"}
	result.reasons[0].message == "no certificate was collected from the NSS database"
	_rule_codes(result) == ["no_certificate"]
}

test_success_trust_store_default_system if {
	windows := _with_device({"os": {"family": "windows", "name": "Windows 11 Pro", "version": "10.0.26100"}})
	cert := _with_cert({"source": {"type": "windows", "location": "system", "label": "corp-device"}})

	_result_on(windows, _with_input({"operating_system": "windows", "locations": null}), [cert]).status == "passed"
}

test_fail_trust_store_default_excludes_user if {
	windows := _with_device({"os": {"family": "windows", "name": "Windows 11 Pro", "version": "10.0.26100"}})
	cert := _with_cert({"source": {"type": "windows", "location": "user", "label": "corp-device"}})
	result := _result_on(windows, _with_input({"operating_system": "windows", "locations": null}), [cert])

	result.reasons[0].message == "no certificate was collected from the Windows certificate stores \"system\""
	result.reasons[0].expected == {"source": "windows", "trust_stores": ["system"]}
	_rule_codes(result) == ["no_certificate"]
}

test_success_trust_store_user_listed if {
	windows := _with_device({"os": {"family": "windows", "name": "Windows 11 Pro", "version": "10.0.26100"}})
	cert := _with_cert({"source": {"type": "windows", "location": "user", "label": "corp-device"}})
	rule_input := _with_input({"operating_system": "windows", "locations": {"paths": null, "trust_stores": ["user", "system"]}})

	_result_on(windows, rule_input, [cert]).status == "passed"
}

test_fail_mac_rule_with_user_trust_store if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "keychain", "location": "system", "label": null}})
	rule_input := _with_input({"operating_system": "mac", "locations": {"paths": null, "trust_stores": ["user", "system"]}})
	result := _result_on(mac, rule_input, [cert])

	result.status == "error"
	_rule_codes(result) == ["invalid_rule"]
	result.reasons[0].message == concat("", [
		"rule input locations.trust_stores is invalid because macOS has only the system trust store ",
		"(the System keychain), and user exists on windows only",
	])
	result.reasons[0].expected == ["system"]
}

test_fail_trust_store_wrong_source_type if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "windows", "location": "system", "label": "corp-device"}})
	result := _result_on(mac, _with_input({"operating_system": "mac", "locations": null}), [cert])

	result.reasons[0].message == "no certificate was collected from the macOS keychains \"system\""
	_rule_codes(result) == ["no_certificate"]
}

test_success_errors_filtered_by_location if {
	in_scope := {"source": "pem", "location": "/usr/local/mycompany/certs/old.pem", "step": "load", "message": "not a certificate"}
	other_path := {"source": "pem", "location": "/usr/local/other.pem", "step": "open", "message": "not found"}
	other_source := {"source": "nssdb", "location": "/etc/pki/nssdb", "step": "database", "message": "certutil failed"}
	facts := _facts(_device, [_cert], [other_source, in_scope, other_path])
	rule_input := _with_input({"locations": {"paths": ["/usr/local/mycompany/certs"]}})
	result := client_certificate.result(_rule(rule_input), facts, _config, _now)

	result.status == "passed"
	result.errors == [in_scope]
}

test_fail_errors_filtered_by_location if {
	error := {"source": "nssdb", "location": "/etc/pki/nssdb", "step": "database", "message": "certutil failed"}
	result := client_certificate.result(_rule(_input), _facts(_device, [], [error]), _config, _now)

	result.errors == []
	result.reasons[0].message == "no certificate was collected from the PEM files at or under \"/usr/local/mycompany/certs/client.pem\""
}

# One certificate must meet every condition at once.

test_success_one_candidate_meets_every_condition if {
	wrong_cn := _with_cert({"fingerprint_sha256": "bb22", "subject": {"common_names": ["other"]}})
	result := _result(_with_input({"cn": "${serial_number}_mycompany"}), [wrong_cn, _cert])

	result.status == "passed"
	result.matched_certificates == ["aa11"]
	[candidate.passed | some candidate in result.candidates] == [true, false]
}

test_fail_conditions_met_by_different_certificates if {
	wrong_cn := _with_cert({"fingerprint_sha256": "bb22", "subject": {"common_names": ["other"]}})
	wrong_eku := _with_cert({"fingerprint_sha256": "cc33", "extended_key_usage": []})
	rule_input := _with_input({"cn": "${serial_number}_mycompany", "extended_key_usage": ["clientAuth"]})
	result := _result(rule_input, [wrong_cn, wrong_eku])

	result.status == "failed"
	result.matched_certificates == []
	_codes(result) == ["cn_mismatch", "eku_missing"]
	_rule_codes(result) == ["no_matching_certificate"]
	result.reasons[0].message == "none of the 2 certificates found in the rule's locations meets every condition, and each candidate's reasons say which it failed"
}

# Ordering.

test_success_candidates_sorted if {
	first := _with_cert({"fingerprint_sha256": "0f"})
	same_key := _with_cert({"fingerprint_sha256": "0f", "source": {"location": "/usr/local/mycompany/certs/a.pem"}})
	last := _with_cert({"fingerprint_sha256": "ff"})
	rule_input := _with_input({"locations": {"paths": ["/usr/local/mycompany/certs"]}})
	result := _result(rule_input, [last, _cert, first, same_key])

	[[candidate.fingerprint_sha256, candidate.source.location] | some candidate in result.candidates] == [
		["0f", "/usr/local/mycompany/certs/a.pem"],
		["0f", _pem_path],
		["aa11", _pem_path],
		["ff", _pem_path],
	]
	result.matched_certificates == ["0f", "aa11", "ff"]
}

test_success_reasons_in_condition_order if {
	cert := _with_cert({
		"signed_by": [],
		"not_after": "2026-02-01T00:00:00Z",
		"subject": {"common_names": ["other"]},
		"extended_key_usage": [],
		"private_key": {"present": false, "status": "missing", "location": null, "reason": null},
		"subject_alternative_names": {"dns": []},
	})
	rule_input := _with_input({
		"cn": "x",
		"extended_key_usage": ["clientAuth"],
		"subject_alternative_names": ["a.example"],
	})

	_codes(_result(rule_input, [cert])) == [
		"signer_mismatch",
		"expired",
		"cn_mismatch",
		"eku_missing",
		"private_key_missing",
		"san_mismatch",
	]
}

# Explain: with config.explain, each candidate lists every condition.

_explained(rule_input, certificates) := client_certificate.result(
	_rule(rule_input),
	_facts(_device, certificates, []),
	object.union(_config, {"explain": true}),
	_now,
)

_statuses(result) := {item.condition: item.status | some item in result.candidates[0].conditions}

test_explain_off_by_default if {
	[candidate] := _result(_input, [_cert]).candidates
	not "conditions" in object.keys(candidate)
}

test_explain_lists_every_condition_in_order if {
	result := _explained(_input, [_cert])
	[item.condition | some item in result.candidates[0].conditions] == [
		"signer",
		"validity",
		"cn",
		"extended_key_usage",
		"private_key",
		"subject_alternative_names",
	]
}

test_explain_marks_conditions_the_rule_does_not_ask_for if {
	_statuses(_explained(object.union(_input, {"check_private_key": false}), [_cert])) == {
		"signer": "passed",
		"validity": "passed",
		"cn": "not_checked",
		"extended_key_usage": "not_checked",
		"private_key": "not_checked",
		"subject_alternative_names": "not_checked",
	}
}

test_explain_failed_condition_shows_expected_and_actual if {
	rule_input := _with_input({"cn": "${serial_number}_other", "extended_key_usage": ["emailProtection"]})
	cert := _with_cert({"extended_key_usage": ["1.3.6.1.5.5.7.3.2"]})
	result := _explained(rule_input, [cert])
	statuses := _statuses(result)
	statuses.cn == "failed"
	statuses.extended_key_usage == "failed"
	statuses.signer == "passed"
	some cn in result.candidates[0].conditions
	cn == {
		"condition": "cn",
		"status": "failed",
		"expected": "PF2ABC12_other",
		"actual": ["PF2ABC12_mycompany"],
	}
	some eku in result.candidates[0].conditions
	eku.condition == "extended_key_usage"
	eku.expected == [{"name": "emailProtection", "oid": "1.3.6.1.5.5.7.3.4"}]
	eku.actual == ["1.3.6.1.5.5.7.3.2"]
}

test_explain_private_key_expects_the_rule_paths if {
	some item in _explained(_input, [_cert]).candidates[0].conditions
	item.condition == "private_key"
	item.expected == {"present": true, "in_paths": [_pem_path]}
	item.actual == {"status": "present", "location": _pem_path}
}

# Extra conditions: packages under data.certposture.conditions. Here the
# document is replaced by literal values; policies/examples tests real packages.

test_extra_condition_reason_fails_candidate if {
	conditions := {"zz_policy": {"reasons": {{"code": "too_old", "message": "too old", "actual": 1}}}}
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	result.status == "failed"
	_reasons(result) == [{
		"condition": "zz_policy",
		"code": "too_old",
		"message": "too old",
		"expected": null,
		"actual": 1,
	}]
}

test_extra_condition_without_reasons_passes if {
	conditions := {"quiet": {"reasons": set(), "expected": "x"}}
	result := _explained(_input, [_cert]) with data.certposture.conditions as conditions
	result.status == "passed"
	some item in result.candidates[0].conditions
	item == {"condition": "quiet", "status": "passed", "expected": "x", "actual": null}
}

test_extra_conditions_sorted_by_name_after_built_in if {
	conditions := {"b": {"reasons": set()}, "a": {"reasons": set()}}
	result := _explained(_input, [_cert]) with data.certposture.conditions as conditions
	names := [item.condition | some item in result.candidates[0].conditions]
	array.slice(names, 6, count(names)) == ["a", "b"]
}

# Packages that cannot be conditions fail the certificate instead of being skipped.

_extension_codes(conditions) := codes if {
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	result.status == "error"
	_rule_codes(result) == ["invalid_extension"]
	codes := _codes(result)
}

test_extra_condition_without_reasons_rule_fails if {
	_extension_codes({"typo": {"reason": {{"code": "x", "message": "y"}}}}) == ["invalid_extension"]
}

test_extra_condition_nested_package_fails if {
	conditions := {"acme": {"cn_prefix": {"reasons": {{"code": "x", "message": "y"}}}}}
	_extension_codes(conditions) == ["invalid_extension"]
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	contains(_reasons(result)[0].message, "package certposture.conditions.acme has no rule reasons")
}

test_extra_condition_rule_outside_package_fails if {
	_extension_codes({"reasons": {{"code": "x", "message": "y"}}}) == ["invalid_extension"]
}

test_extra_condition_built_in_name_fails if {
	conditions := {"cn": {"reasons": set()}}
	_extension_codes(conditions) == ["invalid_extension"]
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	_reasons(result)[0].message == "extra condition \"cn\" has the name of a built-in condition; rename its package"
	_reasons(result)[0].condition == "certposture.conditions.cn"
}

test_extra_reasons_sorted_by_code if {
	conditions := {"x": {"reasons": {
		{"code": "b_code", "message": "m"},
		{"code": "a_code", "message": "m", "expected": {"z": 1}},
	}}}
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	_codes(result) == ["a_code", "b_code"]
}

test_extra_reason_without_code_fails_closed if {
	conditions := {"x": {"reasons": {{"message": "no code"}}}}
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	result.status == "error"
	result.passed == false
	_codes(result) == ["invalid_extension_reason"]
}

test_extra_reasons_not_a_set_fails_closed if {
	conditions := {"x": {"reasons": "failed"}}
	result := _result(_input, [_cert]) with data.certposture.conditions as conditions
	_codes(result) == ["invalid_extension_reason"]
	_reasons(result)[0].actual == "failed"
}

# Case folding covers the ASCII letters only, so the result is the same on OPA
# and regorus, and Unicode lowering cannot make distinct characters equal.

_cn_codes(common_name, expected) := _codes(_result(
	_with_input({"cn": expected}),
	[_with_cert({"subject": {"dn": "CN=x", "common_names": [common_name]}})],
))

test_success_cn_ascii_case_folded if {
	_cn_codes("PF2ABC12_MyCompany", "pf2abc12_mycompany") == []
}

test_fail_cn_non_ascii_case_not_folded if {
	_cn_codes("ÄÖÜ-GERÄT", "äöü-gerät") == ["cn_mismatch"]
}

test_fail_cn_dotted_capital_i_not_folded if {
	_cn_codes("İSTANBUL-PC", "istanbul-pc") == ["cn_mismatch"]
}

test_fail_cn_final_sigma_not_folded if {
	_cn_codes("ΟΔΟΣ", "οδοσ") == ["cn_mismatch"]
}

test_fail_cn_kelvin_sign_is_not_k if {
	_cn_codes("\u212Aorp-laptop", "korp-laptop") == ["cn_mismatch"]
}

test_success_cn_non_ascii_equal if {
	_cn_codes("Gerät-ΟΔΟΣ", "GERäT-ΟΔΟΣ") == []
}

test_fail_san_non_ascii_case_not_folded if {
	cert := _with_cert({"subject_alternative_names": {"dns": ["İSTANBUL.corp.example"]}})
	_codes(_result(_with_input({"subject_alternative_names": ["istanbul.corp.example"]}), [cert])) == ["san_mismatch"]
}

# Non-string values in messages are named by their type.

test_fail_unsupported_rule_type_number if {
	rule := object.union(_rule(_input), {"type": 2.0})
	result := client_certificate.result(rule, _facts(_device, [_cert], []), _config, _now)
	result.reasons[0].message == "rule type (a number) is not supported, only \"client_certificate_v2\" is"
	result.reasons[0].actual == 2
}

test_fail_unsupported_rule_type_object if {
	rule := object.union(_rule(_input), {"type": {"kind": "<v2> & more"}})
	result := client_certificate.result(rule, _facts(_device, [_cert], []), _config, _now)
	result.reasons[0].message == "rule type (an object) is not supported, only \"client_certificate_v2\" is"
}

# A present key without a location cannot lie in the rule's paths.

test_fail_present_key_without_location if {
	cert := _with_cert({"private_key": {"present": true, "status": "present", "location": null, "reason": null}})
	_codes(_result(_input, [cert])) == ["private_key_outside_locations"]
}

test_fail_invalid_rule_locations_not_object if {
	result := _result(_with_input({"locations": ["/etc/corp/client.pem"]}), [_cert])

	result.status == "error"
	result.reasons == [{
		"condition": "rule",
		"code": "invalid_rule",
		"message": "rule input locations is invalid because it must be an object with paths and trust_stores",
		"expected": "object",
		"actual": ["/etc/corp/client.pem"],
	}]
}

test_extra_condition_name_not_identifier_fails if {
	_extension_codes({"\u0455igner": {"reasons": set()}}) == ["invalid_extension"]
	_extension_codes({"": {"reasons": set()}}) == ["invalid_extension"]
	_extension_codes({"min_rsa_key_size ": {"reasons": set()}}) == ["invalid_extension"]
}

test_fail_rule_paths_on_mac if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "keychain", "location": "system", "label": null}})
	result := _result_on(mac, _with_input({"operating_system": "mac"}), [cert])

	result.status == "error"
	_rule_codes(result) == ["invalid_rule"]
	result.reasons[0].message == "rule input locations is invalid because paths apply to linux rules only and trust_stores to mac and windows rules only"
}

test_fail_rule_trust_stores_on_linux if {
	result := _result(_with_input({"locations": {"paths": null, "trust_stores": ["system"]}}), [_cert])

	result.status == "error"
	_rule_codes(result) == ["invalid_rule"]
}

test_fail_rule_unknown_fields if {
	rule := object.union(_rule(_with_input({"colour": "blue", "locations": {"paths": ["/usr/local/mycompany/certs"], "depth": 2}})), {"owner": "x"})
	result := client_certificate.result(rule, _facts(_device, [_cert], []), _config, _now)

	result.status == "error"
	[reason.message | some reason in result.reasons] == [
		"rule has unknown fields \"owner\"; allowed fields: \"description\", \"expiration\", \"id\", \"input\", \"match\", \"name\", \"schedule\", \"type\"",
		"rule input fields is invalid because \"colour\" are not rule input fields",
		"rule input locations is invalid because \"depth\" are not location fields",
	]
}

test_fail_rule_match_other_platform if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "keychain", "location": "system", "label": null}})
	rule_input := _with_input({"operating_system": "mac", "locations": null})

	every entries in [[{"platform": "windows"}], [{"platform": "ios"}], "junk", [{"platform": "mac", "x": 1}]] {
		rule := object.union(_rule(rule_input), {"match": entries})
		result := client_certificate.result(rule, _facts(mac, [cert], []), _config, _now)
		result.status == "error"
		_rule_codes(result) == ["invalid_rule"]
	}
}

test_success_rule_match_own_platform if {
	mac := _with_device({"os": {"family": "mac", "name": "macOS", "version": "15.1"}})
	cert := _with_cert({"source": {"type": "keychain", "location": "system", "label": null}})
	rule := object.union(_rule(_with_input({"operating_system": "mac", "locations": null})), {"match": [{"platform": "mac"}]})

	client_certificate.result(rule, _facts(mac, [cert], []), _config, _now).status == "passed"
}
