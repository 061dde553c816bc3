# Evaluates one client_certificate_v2 posture rule, in the JSON shape of
# Cloudflare's device posture rule API, against a collector facts document.
#
# A rule passes when one certificate found in the rule's locations meets every
# condition at once. Each candidate certificate lists the conditions it failed
# as reasons, and rule-level reasons explain outcomes that concern no single
# certificate (wrong OS, unknown signing certificate, nothing found).
package certposture.client_certificate

import rego.v1

rule_type := "client_certificate_v2"

# Extended key usage names that a rule may list, and the OID each one requires.
eku_oids := {
	"clientAuth": "1.3.6.1.5.5.7.3.2",
	"emailProtection": "1.3.6.1.5.5.7.3.4",
}

# Source type of the certificates that a mac or windows rule searches.
# Linux rules search PEM files or the NSS database instead.
_store_sources := {"mac": "keychain", "windows": "windows"}

_operating_systems := {"linux", "mac", "windows"}

_trust_stores := {"system", "user"}

# Device fact that supplies each template variable, and the collector option
# that sets it when the collector cannot read it.
_variables := {
	"serial_number": {"label": "serial number", "option": "--serial-number"},
	"hostname": {"label": "hostname", "option": "--hostname"},
}

# Builds every reason, so that all of them carry the same fields.
# condition names the checked condition, code is a stable machine-readable
# identifier, message is a sentence for people.
reason(condition, code, message, expected, actual) := {
	"condition": condition,
	"code": code,
	"message": message,
	"expected": expected,
	"actual": actual,
}

# Returns the result of one rule on the device described by facts.
# config carries signing_certificates, keyed by id; now_ns is the evaluation
# time in nanoseconds since the Unix epoch.
result(rule, facts, config, now_ns) := object.union(
	{
		"rule_id": object.get(rule, "id", null),
		"rule_name": object.get(rule, "name", null),
		"type": object.get(rule, "type", null),
	},
	_outcome(rule, facts, config, now_ns),
)

# The checks run in this order: rule shape, operating system, signing
# certificate, template variables, then the certificates themselves.
_outcome(rule, facts, config, now_ns) := _rule_error([reason(
	"rule",
	"unsupported_rule_type",
	sprintf("rule type %s is not supported, only %s is", [_quote(rule_type_value), _quote(rule_type)]),
	rule_type,
	rule_type_value,
)]) if {
	rule_type_value := object.get(rule, "type", null)
	rule_type_value != rule_type
} else := _rule_error(problems) if {
	problems := array.concat(_rule_shape_problems(rule), _rule_problems(object.get(rule, "input", null)))
	count(problems) > 0
} else := _outcome_for_input(rule, rule.input, facts, config, now_ns)

_outcome_for_input(rule, rule_input, facts, config, now_ns) := _outcome_with(
	"not_applicable",
	[reason(
		"operating_system",
		"os_mismatch",
		sprintf(
			"rule applies to operating system %s, but the device runs %s",
			[_quote(rule_input.operating_system), _quote(_text(facts.device.os.family))],
		),
		rule_input.operating_system,
		facts.device.os.family,
	)],
	[],
	[],
) if {
	facts.device.os.family != rule_input.operating_system
} else := _outcome_with(
	"error",
	[reason(
		"signer",
		"unknown_signing_certificate",
		sprintf(
			"signing certificate %s was not found, so store it with \"certposture ca add FILE\" or pick a stored one from \"certposture ca list\"",
			[_quote(rule_input.certificate_id)],
		),
		rule_input.certificate_id,
		null,
	)],
	[],
	_relevant_errors(_scope(rule_input), _list(facts, "errors")),
) if {
	not _signing_certificate_known(rule_input.certificate_id, config)
} else := _outcome_with(
	"error",
	missing,
	[],
	_relevant_errors(_scope(rule_input), _list(facts, "errors")),
) if {
	missing := _variable_reasons(rule_input, facts.device)
	count(missing) > 0
} else := _evaluate(rule, rule_input, facts, config, now_ns)

_rule_error(reasons) := _outcome_with("error", reasons, [], [])

_outcome_with(status, reasons, candidates, errors) := {
	"status": status,
	"passed": status == "passed",
	"matched_certificates": sort({candidate.fingerprint_sha256 |
		some candidate in candidates
		candidate.passed
	}),
	"candidates": candidates,
	"reasons": reasons,
	"errors": errors,
}

_signing_certificate_known(id, config) if {
	_value_or(_value_or(config, "signing_certificates", {}), id, null) != null
}

_evaluate(rule, rule_input, facts, config, now_ns) := _outcome_with(status, reasons, candidates, errors) if {
	scope := _scope(rule_input)
	errors := _relevant_errors(scope, _list(facts, "errors"))
	checks := object.union(
		_checks(rule, rule_input, facts.device, config, now_ns),
		_proof_checks(facts, config),
	)
	candidates := _sorted_candidates([_candidate(certificate, checks, now_ns) |
		some certificate in _candidates(scope, _list(facts, "certificates"))
	])
	status := _status(candidates)
	reasons := _rule_reasons(status, scope, count(candidates), count(errors))
}

# An invalid extra condition is a policy error, not a verdict on the device,
# so it makes the rule an error even when another certificate passes.
_status(candidates) := "error" if {
	some candidate in candidates
	some item in candidate.reasons
	item.code in _invalid_extension_codes
} else := "passed" if {
	some candidate in candidates
	candidate.passed
} else := "failed"

_invalid_extension_codes := {"invalid_extension", "invalid_extension_reason"}

_rule_reasons("passed", _, _, _) := []

_rule_reasons("error", _, _, _) := [reason(
	"rule",
	"invalid_extension",
	"an extra condition loaded with --policy is invalid, so the rule cannot be evaluated; the candidates' reasons name it",
	"valid extra conditions",
	null,
)]

_rule_reasons("failed", scope, 0, error_count) := [reason(
	"locations",
	"no_certificate",
	_no_certificate_message(scope, error_count),
	scope,
	null,
)]

_rule_reasons("failed", _, candidate_count, _) := [reason(
	"rule",
	"no_matching_certificate",
	_no_match_message(candidate_count),
	"a certificate that meets every condition",
	null,
)] if {
	candidate_count > 0
}

_no_match_message(1) := "the one certificate found in the rule's locations does not meet every condition, and its reasons say which it failed"

_no_match_message(candidate_count) := sprintf(
	"none of the %d certificates found in the rule's locations meets every condition, and each candidate's reasons say which it failed",
	[candidate_count],
) if {
	candidate_count > 1
}

# The expected values of each condition, with template variables substituted,
# computed once per rule instead of once per certificate. rule, device and
# evaluated_at are what extra conditions see; explain asks for a record of
# every condition in each candidate.
_checks(rule, rule_input, device, config, now_ns) := {
	"rule": rule,
	"device": device,
	"evaluated_at": format_time(now_ns),
	"explain": _value_or(config, "explain", false) == true,
	"certificate_id": rule_input.certificate_id,
	"signing_certificate": config.signing_certificates[rule_input.certificate_id],
	"cn": _substitute(_value_or(rule_input, "cn", ""), device),
	"extended_key_usage": sort({name | some name in _list(rule_input, "extended_key_usage")}),
	"check_private_key": rule_input.check_private_key,
	"scope": _scope(rule_input),
	"subject_alternative_names": [_substitute(template, device) |
		some template in _list(rule_input, "subject_alternative_names")
	],
}

_candidate(reported, checks, now_ns) := object.union(candidate, _explanation(outcomes, checks.explain)) if {
	certificate := _proved_certificate(reported, checks)
	outcomes := array.concat(_proof_outcomes(certificate, checks), _condition_outcomes(certificate, checks, now_ns))
	reasons := [item | some outcome in outcomes; some item in outcome.reasons]
	candidate := {
		"fingerprint_sha256": certificate.fingerprint_sha256,
		"subject": certificate.subject.dn,
		"source": {
			"type": certificate.source.type,
			"location": certificate.source.location,
			"label": object.get(certificate.source, "label", null),
		},
		"passed": count(reasons) == 0,
		"reasons": reasons,
	}
}

# Every condition with what it expected, what the certificate has, and the
# reasons it failed. Listed in the order of the conditions in the rule
# format, then the extra conditions by name. A condition that the rule does
# not ask for (no cn, for example) is not checked.
_condition_outcomes(certificate, checks, now_ns) := array.concat(
	[
		_outcome_of(
			"signer", true,
			{"certificate_id": checks.certificate_id, "subject": object.get(checks.signing_certificate, "subject", null)},
			{"issuer": certificate.issuer.dn, "signed_by": _list(certificate, "signed_by")},
			_signer_reasons(certificate, checks),
		),
		_outcome_of(
			"validity", true,
			_validity_period(certificate),
			format_time(now_ns),
			_validity_reasons(certificate, now_ns),
		),
		_outcome_of(
			"cn", checks.cn != "",
			checks.cn,
			_list(certificate.subject, "common_names"),
			_cn_reasons(certificate, checks.cn),
		),
		_outcome_of(
			"extended_key_usage", count(checks.extended_key_usage) > 0,
			[{"name": name, "oid": eku_oids[name]} | some name in checks.extended_key_usage],
			_list(certificate, "extended_key_usage"),
			_eku_reasons(certificate, checks.extended_key_usage),
		),
		_outcome_of(
			"private_key", checks.check_private_key == true,
			_expected_key(checks.scope),
			{"status": certificate.private_key.status, "location": object.get(certificate.private_key, "location", null)},
			_private_key_reasons(certificate, checks),
		),
		_outcome_of(
			"subject_alternative_names", count(checks.subject_alternative_names) > 0,
			checks.subject_alternative_names,
			_san_facts(certificate),
			_san_reasons(certificate, checks.subject_alternative_names),
		),
	],
	_extra_condition_outcomes(certificate, checks),
)

_outcome_of(condition, checked, expected, actual, reasons) := {
	"condition": condition,
	"status": _condition_status(checked, reasons),
	"expected": expected,
	"actual": actual,
	"reasons": reasons,
}

_condition_status(false, _) := "not_checked"

_condition_status(true, []) := "passed"

_condition_status(true, reasons) := "failed" if count(reasons) > 0

_expected_key(scope) := {"present": true, "in_paths": scope.paths} if {
	scope.source == "pem"
} else := {"present": true}

_explanation(_, false) := {}

_explanation(outcomes, true) := {"conditions": [object.remove(outcome, ["reasons"]) | some outcome in outcomes]}

# Orders candidates by fingerprint, then by where they were found, so the
# output does not depend on the order of the facts document.
_sorted_candidates(candidates) := [candidates[key[4]] |
	some key in sort([[
		candidate.fingerprint_sha256,
		candidate.source.type,
		candidate.source.location,
		_text(candidate.source.label),
		index,
	] |
		some index, candidate in candidates
	])
]

# Proof of possession, with data.certposture_config.require_proof. Rego has no
# builtin that checks a signature over arbitrary data, so certposture checks
# each proof before evaluation and passes one verdict per fingerprint in
# input.proof_verification.certificates. An OPA deployment must build that
# object in a trusted step and never take it from a device. With
# require_proof, a candidate passes only with the verdict "verified", and the
# signer condition reads signed_by and unverified_signers from that verdict,
# which were recomputed from the certificate's DER, instead of from the
# device's report. Without require_proof nothing here changes the outcome. Any
# value other than false or null requires proofs, so a typing mistake such as
# "yes" fails closed.
_proof_checks(facts, config) := {
	"require_proof": true,
	"proof_nonce": object.get(verification, "nonce", null),
	"proofs": _object_or_empty(object.get(verification, "certificates", {})),
} if {
	_value_or(config, "require_proof", false) != false
	verification := _object_or_empty(object.get(facts, "proof_verification", {}))
} else := {"require_proof": false}

_object_or_empty(value) := value if is_object(value)

else := {}

_proof_verdict(certificate, checks) := verdict if {
	verdict := checks.proofs[certificate.fingerprint_sha256]
	is_object(verdict)
} else := {"status": "missing"}

_proved_certificate(certificate, checks) := object.union(certificate, {
	"signed_by": _list(verdict, "signed_by"),
	"unverified_signers": _list(verdict, "unverified_signers"),
}) if {
	checks.require_proof
	verdict := _proof_verdict(certificate, checks)
	verdict.status == "verified"
} else := certificate

_proof_outcomes(_, checks) := [] if {
	not checks.require_proof
}

_proof_outcomes(certificate, checks) := [_outcome_of(
	"proof", true,
	{"status": "verified", "nonce": checks.proof_nonce},
	{"status": _text_or(_proof_verdict(certificate, checks).status, "missing")},
	_proof_reasons(_proof_verdict(certificate, checks), checks),
)] if {
	checks.require_proof
}

_proof_codes := {
	"missing": "proof_missing",
	"invalid": "proof_invalid",
	"facts_altered": "proof_facts_altered",
	"nonce_invalid": "proof_nonce_invalid",
	"fingerprint_mismatch": "proof_fingerprint_mismatch",
}

_proof_reasons(verdict, checks) := [] if {
	verdict.status == "verified"
} else := [reason(
	"proof",
	object.get(_proof_codes, status, "proof_invalid"),
	_proof_message(status, object.get(verdict, "message", null)),
	{"status": "verified", "nonce": checks.proof_nonce},
	{"status": status},
)] if {
	status := _text_or(object.get(verdict, "status", null), "missing")
}

_proof_message(status, message) := sprintf("no verified proof of possession (%s): %s", [status, message]) if {
	is_string(message)
} else := sprintf(
	"no verified proof of possession (%s): the evaluator verified no proof that the device holds this certificate's private key",
	[status],
)

# Condition 1: the collector verified the certificate's signature with the
# public key of the signing certificate. An issuer name that matches the
# signing certificate's subject does not count on its own, and neither does a
# signature that the collector could not check (unverified_signers with status
# unsupported). An id listed as unverified fails even when signed_by also
# lists it, so contradictory facts never pass.
_signer_reasons(certificate, checks) := [reason(
	"signer",
	"signature_unsupported",
	_unsupported_message(certificate.issuer.dn, unverified, checks.certificate_id, checks.signing_certificate),
	{
		"certificate_id": checks.certificate_id,
		"subject": object.get(checks.signing_certificate, "subject", null),
	},
	{
		"issuer": certificate.issuer.dn,
		"signed_by": _list(certificate, "signed_by"),
		"unverified_signer": unverified,
	},
)] if {
	unverified := _unverified_signer(certificate, checks.certificate_id)
	unverified.status == "unsupported"
} else := [] if {
	checks.certificate_id in _list(certificate, "signed_by")
	not _unverified_signer(certificate, checks.certificate_id)
} else := [reason(
	"signer",
	"signer_mismatch",
	_signer_message(certificate.issuer.dn, checks.certificate_id, checks.signing_certificate),
	{
		"certificate_id": checks.certificate_id,
		"subject": object.get(checks.signing_certificate, "subject", null),
	},
	{"issuer": certificate.issuer.dn, "signed_by": _list(certificate, "signed_by")},
)]

_signer_message(issuer, id, signing_certificate) := sprintf(
	"certificate names %s as its issuer, but its signature does not verify with the public key of signing certificate %s",
	[_quote(issuer), _signing_certificate_label(id, signing_certificate)],
) if {
	issuer == object.get(signing_certificate, "subject", null)
} else := sprintf(
	"certificate issued by %s is not signed by signing certificate %s",
	[_quote(issuer), _signing_certificate_label(id, signing_certificate)],
)

# The first entry of unverified_signers for the signing certificate id, undefined when there is none.
_unverified_signer(certificate, id) := entries[0] if {
	entries := [entry |
		some entry in _list(certificate, "unverified_signers")
		entry.id == id
	]
	count(entries) > 0
}

_unsupported_message(issuer, unverified, id, signing_certificate) := sprintf(
	"certificate names %s as its issuer, but its signature algorithm %s could not be checked with the public key of signing certificate %s, and an unchecked signature does not count: %s",
	[
		_quote(issuer),
		_text_or(object.get(unverified, "signature_algorithm", null), "(not reported)"),
		_signing_certificate_label(id, signing_certificate),
		_text_or(object.get(unverified, "reason", null), "no reason given"),
	],
)

_signing_certificate_label(id, signing_certificate) := sprintf(
	"%s (id %s)",
	[_quote(name), id],
) if {
	name := _value_or(signing_certificate, "name", "")
	name != ""
} else := sprintf("%s (id %s)", [_quote(_text(object.get(signing_certificate, "subject", ""))), id])

# Condition 2: not_before <= evaluation time <= not_after.
_validity_reasons(certificate, now_ns) := [reason(
	"validity",
	"not_yet_valid",
	sprintf(
		"certificate is not valid until %s, and the evaluation time is %s",
		[certificate.not_before, format_time(now_ns)],
	),
	_validity_period(certificate),
	format_time(now_ns),
)] if {
	format_time(now_ns) < _utc_text(certificate.not_before)
} else := [reason(
	"validity",
	"expired",
	sprintf(
		"certificate expired at %s, before the evaluation time %s",
		[certificate.not_after, format_time(now_ns)],
	),
	_validity_period(certificate),
	format_time(now_ns),
)] if {
	format_time(now_ns) > _utc_text(certificate.not_after)
} else := []

# Times are compared as RFC 3339 UTC text in whole seconds, which orders like
# the times themselves. Parsing them to nanoseconds would fail for dates after
# 2262, such as the 9999-12-31T23:59:59Z that RFC 5280 gives for certificates
# without a well-defined expiration, and one such certificate would stop the
# evaluation of every rule.
_utc_text(value) := value if {
	regex.match(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$`, value)
} else := format_time(time.parse_rfc3339_ns(value))

_validity_period(certificate) := {"not_before": certificate.not_before, "not_after": certificate.not_after}

# Condition 3: one subject common name equals the expected CN, ignoring the
# case of ASCII letters.
_cn_reasons(_, "") := []

_cn_reasons(certificate, expected) := [] if {
	expected != ""
	some common_name in _list(certificate.subject, "common_names")
	_fold_case(common_name) == _fold_case(expected)
} else := [reason(
	"cn",
	"cn_mismatch",
	_cn_message(_list(certificate.subject, "common_names"), expected),
	expected,
	_list(certificate.subject, "common_names"),
)] if {
	expected != ""
}

_cn_message(common_names, expected) := sprintf(
	"certificate has no subject CN, but the rule expects %s",
	[_quote(expected)],
) if {
	count(common_names) == 0
} else := sprintf(
	"certificate CN %s does not equal the expected %s (compared ignoring the case of ASCII letters)",
	[_quote_all(common_names), _quote(expected)],
) if {
	count(common_names) == 1
} else := sprintf(
	"none of the certificate CNs %s equals the expected %s (compared ignoring the case of ASCII letters)",
	[_quote_all(common_names), _quote(expected)],
)

# Condition 4: every listed usage is in the certificate's EKU extension.
_eku_reasons(certificate, required) := [] if {
	every name in required {
		eku_oids[name] in _list(certificate, "extended_key_usage")
	}
} else := [reason(
	"extended_key_usage",
	"eku_missing",
	sprintf(
		"certificate extended key usage lacks %s",
		[concat(", ", [sprintf("%s (%s)", [usage.name, usage.oid]) | some usage in missing])],
	),
	missing,
	_list(certificate, "extended_key_usage"),
)] if {
	missing := [{"name": name, "oid": eku_oids[name]} |
		some name in required
		not eku_oids[name] in _list(certificate, "extended_key_usage")
	]
}

# Condition 5: the collector found the private key whose public key matches
# the certificate. A key it could not compare (status unverified) does not count,
# and for PEM files the key must lie in the rule's own paths, so that the result
# does not depend on which other rules made the collector read more files.
_private_key_reasons(certificate, checks) := [] if {
	checks.check_private_key == false
} else := [] if {
	certificate.private_key.present == true
	_key_in_scope(certificate.private_key, checks.scope)
} else := [reason(
	"private_key",
	"private_key_outside_locations",
	sprintf(
		"the matching private key was found at %s, which is outside the rule's paths %s",
		[_quote(object.get(certificate.private_key, "location", null)), _quote_all(checks.scope.paths)],
	),
	checks.scope.paths,
	object.get(certificate.private_key, "location", null),
)] if {
	certificate.private_key.present == true
} else := [reason(
	"private_key",
	"private_key_unverified",
	sprintf(
		"a private key was found but could not be compared with the certificate's public key, so it does not count as present: %s",
		[_text_or(object.get(certificate.private_key, "reason", null), "no reason given")],
	),
	"present",
	"unverified",
)] if {
	certificate.private_key.status == "unverified"
} else := [reason(
	"private_key",
	"private_key_missing",
	_private_key_missing_message(object.get(certificate.private_key, "reason", null)),
	"present",
	certificate.private_key.status,
)]

_key_in_scope(_, scope) if scope.source != "pem"

_key_in_scope(private_key, scope) if {
	scope.source == "pem"
	some path in scope.paths
	_covers(path, _text(object.get(private_key, "location", null)))
}

_private_key_missing_message(collector_reason) := sprintf(
	"no private key matching the certificate was found: %s",
	[collector_reason],
) if {
	_text(collector_reason) != ""
} else := "no private key matching the certificate was found in the collected locations"

# Condition 6: one expected value equals, ignoring the case of ASCII letters, one DNS, email, URI
# or IP SAN. otherName values (a UPN, for example) are never compared.
_san_reasons(_, []) := []

_san_reasons(certificate, expected) := [] if {
	count(expected) > 0
	some value in expected
	some san in _comparable_sans(certificate)
	_fold_case(value) == _fold_case(san)
} else := [reason(
	"subject_alternative_names",
	"san_mismatch",
	_san_message(certificate, expected),
	expected,
	_san_facts(certificate),
)] if {
	count(expected) > 0
}

_comparable_sans(certificate) := [san |
	some kind in ["dns", "email", "uri", "ip"]
	some san in _list(_san_facts(certificate), kind)
]

_san_facts(certificate) := object.get(certificate, "subject_alternative_names", {})

_san_message(certificate, expected) := sprintf(
	"certificate has only otherName SANs (%d), which are never compared, but the rule expects one of %s",
	[object.get(_san_facts(certificate), "other_name_count", 0), _quote_all(expected)],
) if {
	count(_comparable_sans(certificate)) == 0
	object.get(_san_facts(certificate), "other_name_count", 0) > 0
} else := sprintf(
	"certificate has no DNS, email, URI or IP SAN, but the rule expects one of %s",
	[_quote_all(expected)],
) if {
	count(_comparable_sans(certificate)) == 0
} else := sprintf(
	"none of the expected SANs %s equals a DNS, email, URI or IP SAN of the certificate (compared ignoring the case of ASCII letters)",
	[_quote_all(expected)],
)

# Extra conditions, the extension point for policies loaded with --policy.
# Each package data.certposture.conditions.<name> is one condition named
# <name>. For every candidate certificate of every rule, its documents are
# evaluated with input replaced by
#   {"certificate": <the certificate's facts>, "rule": <the stored rule>,
#    "device": <facts.device>, "evaluated_at": <RFC 3339 UTC time>}
# and its rule reasons, a set of objects with a string code and message and
# optional expected and actual, fails the certificate when it is not empty.
# Optional rules expected and actual describe the condition in explain output.
_extra_condition_outcomes(certificate, checks) := [_extra_outcome(name, extensions[name]) |
	extensions := _extensions(certificate, checks)
	some name in sort(object.keys(extensions))
]

_extensions(certificate, checks) := extensions if {
	extensions := data.certposture.conditions with input as {
		"certificate": certificate,
		"rule": checks.rule,
		"device": checks.device,
		"evaluated_at": checks.evaluated_at,
	}
	is_object(extensions)
} else := {}

# A package that cannot be a condition fails every certificate, so that a
# misplaced or misnamed condition is never skipped in silence.
_extra_outcome(name, extension) := _outcome_of(_extra_name(name), true, null, null, [reason(
	_extra_name(name),
	"invalid_extension",
	problem,
	"a package certposture.conditions.NAME with a rule reasons",
	null,
)]) if {
	problem := _extension_problem(name, extension)
} else := _outcome_of(
	name,
	true,
	object.get(extension, "expected", null),
	object.get(extension, "actual", null),
	_extra_reasons(name, extension.reasons),
)

# An extra condition that takes a built-in condition's name is reported under
# its package path, so that explain does not mix the two.
_extra_name(name) := concat(".", ["certposture.conditions", name]) if {
	name in _built_in_conditions
} else := name

_built_in_conditions := {"proof", "signer", "validity", "cn", "extended_key_usage", "private_key", "subject_alternative_names"}

_extension_problem(name, extension) := sprintf(
	"extra condition %s has the name of a built-in condition; rename its package",
	[_quote(name)],
) if {
	name in _built_in_conditions
} else := sprintf(
	"extra condition name %s is not an ASCII identifier; name the condition with letters, digits and underscores",
	[_quote(name)],
) if {
	not regex.match(`^[A-Za-z_][A-Za-z0-9_]*$`, name)
} else := sprintf(
	"data.certposture.conditions.%s is not a package; put each extra condition in its own package certposture.conditions.NAME",
	[name],
) if {
	not is_object(extension)
} else := sprintf(
	"package certposture.conditions.%s has no rule reasons, so it checks nothing; define reasons in it (a package nested below it is not a condition)",
	[name],
) if {
	not "reasons" in object.keys(extension)
}

# Sorted by code and message, so that the order does not depend on how an
# engine orders a set of objects.
_extra_reasons(name, items) := [_extra_reason(name, listed[key[2]]) |
	listed := _as_list(items)
	some key in sort([[_field_text(item, "code"), _field_text(item, "message"), index] |
		some index, item in listed
	])
]

_as_list(items) := [item | some item in items] if {
	is_set(items)
} else := items if {
	is_array(items)
} else := [items]

_field_text(item, field) := item[field] if {
	is_object(item)
	is_string(item[field])
} else := ""

_extra_reason(name, item) := reason(name, item.code, item.message, object.get(item, "expected", null), object.get(item, "actual", null)) if {
	_field_text(item, "code") != ""
	_field_text(item, "message") != ""
} else := reason(
	name,
	"invalid_extension_reason",
	sprintf("extra condition %s returned a reason that is not an object with a non-empty string code and message", [_quote(name)]),
	{"code": "string", "message": "string"},
	item,
)

# Template variables: ${serial_number} and ${hostname} in cn and SANs.

_templates(rule_input) := array.concat(
	[cn | cn := _value_or(rule_input, "cn", ""); cn != ""],
	_list(rule_input, "subject_alternative_names"),
)

_variable_reasons(rule_input, device) := [reason(
	"rule",
	"variable_unavailable",
	sprintf(
		"the rule uses ${%s}, but the device %s is unknown, so pass it to the collector with %s",
		[name, _variables[name].label, _variables[name].option],
	),
	name,
	object.get(device, name, null),
) |
	some name in sort(object.keys(_variables))
	_uses_variable(_templates(rule_input), name)
	_text(object.get(device, name, null)) == ""
]

_uses_variable(templates, name) if {
	some template in templates
	contains(template, sprintf("${%s}", [name]))
}

# Substitutes both variables in a single pass. The template is split on
# "${serial_number}", "${hostname}" is replaced in each part, and the parts are
# joined with the serial number, so a value that itself contains a placeholder
# is inserted literally. strings.replace_n is not used because regorus
# (gordon-to-regorus 0.13) applies its pairs one after another, which expands
# an inserted value a second time.
_substitute(template, device) := concat(
	_text(object.get(device, "serial_number", null)),
	[replace(part, "${hostname}", _text(object.get(device, "hostname", null))) |
		some part in split(template, "${serial_number}")
	],
)

# Locations: which certificates are candidates for a rule.

# Describes where a rule looks, in the shape reported as "expected" when
# nothing is found there.
_scope(rule_input) := {"source": "pem", "paths": paths} if {
	rule_input.operating_system == "linux"
	paths := _list(_value_or(rule_input, "locations", {}), "paths")
	count(paths) > 0
} else := {"source": "nssdb"} if {
	rule_input.operating_system == "linux"
} else := {
	"source": _store_sources[rule_input.operating_system],
	"trust_stores": sort({store | some store in _rule_trust_stores(rule_input)}),
}

_rule_trust_stores(rule_input) := stores if {
	stores := _list(_value_or(rule_input, "locations", {}), "trust_stores")
	count(stores) > 0
} else := ["system"]

_candidates(scope, certificates) := [certificate |
	some certificate in certificates
	_in_scope(scope, certificate.source.type, certificate.source.location)
]

_relevant_errors(scope, errors) := [error |
	some error in errors
	_in_scope(scope, error.source, error.location)
]

_in_scope(scope, "pem", location) if {
	scope.source == "pem"
	some path in scope.paths
	_covers(path, location)
}

# The NSS database that the collector read is the one a path-less Linux rule
# searches, so any nssdb location is in scope.
_in_scope(scope, "nssdb", _) if scope.source == "nssdb"

_in_scope(scope, source_type, location) if {
	source_type in {"keychain", "windows"}
	scope.source == source_type
	location in scope.trust_stores
}

# A path covers itself and, when it is a directory, every file below it.
_covers(path, location) if trim_suffix(path, "/") == location

_covers(path, location) if startswith(location, concat("", [trim_suffix(path, "/"), "/"]))

_no_certificate_message(scope, 0) := _no_certificate_where(scope)

_no_certificate_message(scope, 1) := concat("", [_no_certificate_where(scope), ", and 1 collection error was reported there"])

_no_certificate_message(scope, error_count) := sprintf(
	"%s, and %d collection errors were reported there",
	[_no_certificate_where(scope), error_count],
) if {
	error_count > 1
}

_no_certificate_where(scope) := sprintf(
	"no certificate was collected from the PEM files at or under %s",
	[_quote_all(scope.paths)],
) if {
	scope.source == "pem"
} else := "no certificate was collected from the NSS database" if {
	scope.source == "nssdb"
} else := sprintf(
	"no certificate was collected from the macOS keychains %s",
	[_quote_all(scope.trust_stores)],
) if {
	scope.source == "keychain"
} else := sprintf(
	"no certificate was collected from the Windows certificate stores %s",
	[_quote_all(scope.trust_stores)],
)

# Rule shape. These checks repeat the validation done when a rule is stored,
# so that data edited by hand cannot pass: a malformed rule is an error.

_rule_problems(rule_input) := [reason(
	"rule",
	"invalid_rule",
	"rule has no input object, which must contain certificate_id, operating_system and check_private_key",
	"object",
	rule_input,
)] if {
	not is_object(rule_input)
} else := [problem |
	some field in [
		"certificate_id",
		"operating_system",
		"check_private_key",
		"cn",
		"extended_key_usage",
		"subject_alternative_names",
		"locations",
		"paths",
		"trust_stores",
		"mac_trust_stores",
		"locations_for_os",
		"input_fields",
		"location_fields",
		"variables",
	]
	problem := _field_problem(rule_input, field)
]

# Fields that rule validation allows; data written by hand may hold others.
_rule_fields := {"id", "name", "description", "type", "schedule", "expiration", "match", "input"}

_input_fields := {
	"certificate_id", "operating_system", "check_private_key", "cn",
	"extended_key_usage", "subject_alternative_names", "locations",
}

_location_fields := {"paths", "trust_stores"}

_rule_shape_problems(rule) := [problem |
	some check in ["rule_fields", "match"]
	problem := _shape_problem(rule, check)
]

_shape_problem(rule, "rule_fields") := reason(
	"rule",
	"invalid_rule",
	sprintf("rule has unknown fields %s; allowed fields: %s", [_quote_all(unknown), _quote_all(sort(_rule_fields))]),
	sort(_rule_fields),
	unknown,
) if {
	unknown := sort({key | some key, _ in rule; not key in _rule_fields})
	count(unknown) > 0
}

# match limits a rule to platforms, and validation requires them to equal operating_system.
_shape_problem(rule, "match") := reason(
	"rule",
	"invalid_rule",
	"rule match is invalid because it must be a list of {\"platform\": P} objects whose P equals input.operating_system",
	[{"platform": object.get(object.get(rule, "input", {}), "operating_system", null)}],
	entries,
) if {
	entries := _value_or(rule, "match", [])
	not _match_fits(entries, object.get(object.get(rule, "input", {}), "operating_system", null))
}

_match_fits(entries, operating_system) if {
	is_array(entries)
	every entry in entries {
		is_object(entry)
		object.keys(entry) == {"platform"}
		entry.platform == operating_system
	}
}

_invalid(field, message, expected, actual) := reason(
	"rule",
	"invalid_rule",
	sprintf("rule input %s is invalid because %s", [field, message]),
	expected,
	actual,
)

_field_problem(rule_input, "certificate_id") := _invalid(
	"certificate_id",
	"it must be the id of a stored signing certificate",
	"non-empty string",
	value,
) if {
	value := object.get(rule_input, "certificate_id", null)
	_text(value) == ""
}

_field_problem(rule_input, "operating_system") := _invalid(
	"operating_system",
	"it must be linux, mac or windows",
	sort(_operating_systems),
	value,
) if {
	value := object.get(rule_input, "operating_system", null)
	not value in _operating_systems
}

_field_problem(rule_input, "check_private_key") := _invalid(
	"check_private_key",
	"it must be true or false",
	"boolean",
	value,
) if {
	value := object.get(rule_input, "check_private_key", null)
	not is_boolean(value)
}

_field_problem(rule_input, "cn") := _invalid(
	"cn",
	"it must be a string",
	"string",
	value,
) if {
	value := _value_or(rule_input, "cn", "")
	not is_string(value)
}

_field_problem(rule_input, "extended_key_usage") := _invalid(
	"extended_key_usage",
	"its items must be clientAuth or emailProtection",
	sort(object.keys(eku_oids)),
	value,
) if {
	value := _value_or(rule_input, "extended_key_usage", [])
	not _array_of_keys(value, eku_oids)
}

_field_problem(rule_input, "subject_alternative_names") := _invalid(
	"subject_alternative_names",
	"it must be a list of strings",
	"list of strings",
	value,
) if {
	value := _value_or(rule_input, "subject_alternative_names", [])
	not _array_of_strings(value)
}

_field_problem(rule_input, "locations") := _invalid(
	"locations",
	"it must be an object with paths and trust_stores",
	"object",
	value,
) if {
	value := _value_or(rule_input, "locations", {})
	not is_object(value)
}

_field_problem(rule_input, "paths") := _invalid(
	"locations.paths",
	"it must be a list of absolute paths",
	"list of absolute paths",
	value,
) if {
	locations := _value_or(rule_input, "locations", {})
	is_object(locations)
	value := _value_or(locations, "paths", [])
	not _array_of_absolute_paths(value)
}

_field_problem(rule_input, "trust_stores") := _invalid(
	"locations.trust_stores",
	"its items must be system or user",
	sort(_trust_stores),
	value,
) if {
	locations := _value_or(rule_input, "locations", {})
	is_object(locations)
	value := _value_or(locations, "trust_stores", [])
	not _array_of_keys(value, {store: true | some store in _trust_stores})
}

# Cloudflare's macOS check reads only the System keychain; the user store is Windows's CurrentUser\My.
_field_problem(rule_input, "mac_trust_stores") := _invalid(
	"locations.trust_stores",
	"macOS has only the system trust store (the System keychain), and user exists on windows only",
	["system"],
	value,
) if {
	object.get(rule_input, "operating_system", null) == "mac"
	locations := _value_or(rule_input, "locations", {})
	is_object(locations)
	value := _value_or(locations, "trust_stores", [])
	_array_of_keys(value, {store: true | some store in _trust_stores})
	"user" in value
}

_field_problem(rule_input, "locations_for_os") := _invalid(
	"locations",
	"paths apply to linux rules only and trust_stores to mac and windows rules only",
	{"linux": "paths", "mac": "trust_stores", "windows": "trust_stores"},
	locations,
) if {
	locations := _value_or(rule_input, "locations", {})
	is_object(locations)
	_locations_misplaced(locations, object.get(rule_input, "operating_system", null))
}

_locations_misplaced(locations, operating_system) if {
	operating_system != "linux"
	_value_or(locations, "paths", []) != []
}

_locations_misplaced(locations, "linux") if _value_or(locations, "trust_stores", []) != []

_field_problem(rule_input, "input_fields") := _invalid(
	"fields",
	sprintf("%s are not rule input fields", [_quote_all(unknown)]),
	sort(_input_fields),
	unknown,
) if {
	unknown := sort({key | some key, _ in rule_input; not key in _input_fields})
	count(unknown) > 0
}

_field_problem(rule_input, "location_fields") := _invalid(
	"locations",
	sprintf("%s are not location fields", [_quote_all(unknown)]),
	sort(_location_fields),
	unknown,
) if {
	locations := _value_or(rule_input, "locations", {})
	is_object(locations)
	unknown := sort({key | some key, _ in locations; not key in _location_fields})
	count(unknown) > 0
}

_field_problem(rule_input, "variables") := _invalid(
	"cn or subject_alternative_names",
	"they use a variable other than ${serial_number} and ${hostname}",
	["${serial_number}", "${hostname}"],
	unknown,
) if {
	is_string(_value_or(rule_input, "cn", ""))
	_array_of_strings(_value_or(rule_input, "subject_alternative_names", []))
	unknown := [template |
		some template in _templates(rule_input)
		contains(replace(replace(template, "${serial_number}", ""), "${hostname}", ""), "${")
	]
	count(unknown) > 0
}

_array_of_strings(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}

_array_of_keys(value, allowed) if {
	is_array(value)
	every item in value {
		is_string(item)
		object.get(allowed, item, null) != null
	}
}

_array_of_absolute_paths(value) if {
	_array_of_strings(value)
	every item in value {
		startswith(item, "/")
	}
}

# Small value helpers.

# Returns obj[key], or fallback when the key is absent or null.
_value_or(obj, key, fallback) := value if {
	value := object.get(obj, key, null)
	value != null
} else := fallback

_list(obj, key) := _value_or(obj, key, [])

_text(value) := value if {
	is_string(value)
} else := ""

_text_or(value, fallback) := value if {
	_text(value) != ""
} else := fallback

# Quotes a string for a message, and writes other values as JSON.
# Other values are named by type: json.marshal writes some numbers and
# characters differently in OPA and regorus (2.0, and < > & escaped in OPA
# only), and the value itself is in the reason's actual field.
_quote(value) := sprintf("\"%s\"", [value]) if {
	is_string(value)
} else := "null" if {
	value == null
} else := sprintf("(%s)", [_type_phrases[type_name(value)]])

_type_phrases := {
	"number": "a number",
	"boolean": "a boolean",
	"array": "an array",
	"object": "an object",
	"set": "a set",
}

# Case folding for the CN and SAN comparisons: only the ASCII letters A-Z are
# folded, and every other character must match exactly. lower() follows
# Unicode, where OPA and regorus disagree (dotted capital I, final sigma), and
# it makes distinct characters equal (the Kelvin sign U+212A lowers to k).
_fold_case(value) := strings.replace_n(_ascii_lower, value)

_ascii_lower := {
	"A": "a", "B": "b", "C": "c", "D": "d", "E": "e", "F": "f", "G": "g",
	"H": "h", "I": "i", "J": "j", "K": "k", "L": "l", "M": "m", "N": "n",
	"O": "o", "P": "p", "Q": "q", "R": "r", "S": "s", "T": "t", "U": "u",
	"V": "v", "W": "w", "X": "x", "Y": "y", "Z": "z",
}

_quote_all(values) := concat(", ", [_quote(value) | some value in values])

# Formats nanoseconds since the Unix epoch as RFC 3339 UTC in whole seconds.
# A fraction is dropped because OPA formats it with Go's RFC3339Nano layout,
# which trims trailing zeros (".1Z"), and gordon-to-regorus 0.13 does not
# (".100Z"), so messages would differ between the two engines.
format_time(ns) := time.format(ns - (ns % 1000000000))
