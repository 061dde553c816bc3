package certposture.access_test

import rego.v1

import data.certposture.access

_now := "2026-12-04T20:00:00Z"

_request := {
	"identity": {"email": "Alice@Example.com", "groups": ["staff", "eng"], "ip": "10.1.2.3"},
	"certificate": {"presented": true, "common_name": "PF2ABC12_mycompany"},
	"posture": [
		{
			"rule_id": "cert-ok", "rule_name": "Device certificate", "status": "passed", "passed": true,
			"evaluated_at": "2026-12-04T19:30:00Z", "expiration": "1h",
		},
		{
			"rule_id": "cert-bad", "rule_name": "Other certificate", "status": "failed", "passed": false,
			"evaluated_at": "2026-12-04T19:30:00Z", "expiration": null,
		},
		{
			"rule_id": "cert-old", "rule_name": "Old result", "status": "passed", "passed": true,
			"evaluated_at": "2026-12-04T18:00:00Z", "expiration": "1h",
		},
	],
}

_policy(id, kind, include) := {"id": id, "name": concat("", ["Policy ", id]), "decision": kind, "include": include}

_decide(policies, request) := result if {
	result := access.decision with input as request
		with data.certposture_config as {"evaluated_at": _now, "access_policies": policies}
}

# One allow policy with a single include rule: matched when the selector matches the request.
_selector_allows(rule) if _decide([_policy("p", "allow", [rule])], _request).allowed == true

_selector_denies(rule) if {
	result := _decide([_policy("p", "allow", [rule])], _request)
	result.allowed == false
	result.decision == "deny"
	result.policy == null
	result.reason == "no policy matched, so access is denied"
}

# Selectors

test_everyone_matches if _selector_allows({"everyone": {}})

test_email_matches_ascii_case_insensitively if {
	_selector_allows({"email": {"email": "alice@example.com"}})
	_selector_allows({"email": {"email": "ALICE@EXAMPLE.COM"}})
}

test_email_other_address_denied if _selector_denies({"email": {"email": "bob@example.com"}})

test_email_non_ascii_letters_not_folded if {
	request := object.union(_request, {"identity": {"email": "\u0130@example.com"}})
	result := _decide([_policy("p", "allow", [{"email": {"email": "i@example.com"}}])], request)
	result.allowed == false
}

test_email_domain_matches if _selector_allows({"email_domain": {"domain": "EXAMPLE.com"}})

test_email_domain_subdomain_denied if _selector_denies({"email_domain": {"domain": "corp.example.com"}})

test_email_domain_without_email_denied if {
	request := object.union(_request, {"identity": {"email": null}})
	result := _decide([_policy("p", "allow", [{"email_domain": {"domain": "example.com"}}])], request)
	result.allowed == false
}

test_group_matches if _selector_allows({"group": {"id": "eng"}})

test_group_missing_denied if _selector_denies({"group": {"id": "admins"}})

test_ip_in_range_matches if _selector_allows({"ip": {"ip": "10.0.0.0/8"}})

test_ip_single_address_matches if _selector_allows({"ip": {"ip": "10.1.2.3"}})

test_ip_outside_range_denied if _selector_denies({"ip": {"ip": "192.168.0.0/16"}})

test_ip_other_family_denied if _selector_denies({"ip": {"ip": "fd00::/8"}})

test_ip_ipv6_matches if {
	request := object.union(_request, {"identity": {"ip": "fd00::1"}})
	result := _decide([_policy("p", "allow", [{"ip": {"ip": "fd00::/8"}}])], request)
	result.allowed == true
}

test_ip_invalid_client_address_denied if {
	request := object.union(_request, {"identity": {"ip": "not-an-ip"}})
	result := _decide([_policy("p", "allow", [{"ip": {"ip": "0.0.0.0/0"}}])], request)
	result.allowed == false
}

test_device_posture_passed_matches if _selector_allows({"device_posture": {"integration_uid": "cert-ok"}})

test_device_posture_failed_denied if _selector_denies({"device_posture": {"integration_uid": "cert-bad"}})

test_device_posture_expired_denied if {
	result := _decide([_policy("p", "allow", [{"device_posture": {"integration_uid": "cert-old"}}])], _request)
	result.allowed == false
	result.posture == [{
		"rule_id": "cert-old", "rule_name": "Old result", "status": "passed",
		"passed": false, "expired": true, "reason": "result expired",
	}]
}

test_device_posture_unknown_rule_denied if {
	result := _decide([_policy("p", "allow", [{"device_posture": {"integration_uid": "nope"}}])], _request)
	result.allowed == false
	result.posture[0].rule_id == "nope"
	result.posture[0].passed == false
	result.posture[0].reason == "no posture result for this rule"
}

test_certificate_presented_matches if _selector_allows({"certificate": {}})

test_certificate_absent_denied if {
	request := object.union(_request, {"certificate": {"presented": false, "common_name": null}})
	result := _decide([_policy("p", "allow", [{"certificate": {}}])], request)
	result.allowed == false
}

test_certificate_presented_must_be_true if {
	request := object.union(_request, {"certificate": {"presented": "yes"}})
	result := _decide([_policy("p", "allow", [{"certificate": {}}])], request)
	result.allowed == false
}

test_common_name_matches_ascii_case_insensitively if {
	_selector_allows({"common_name": {"common_name": "pf2abc12_MYCOMPANY"}})
}

test_common_name_other_denied if _selector_denies({"common_name": {"common_name": "other"}})

test_common_name_needs_presented_certificate if {
	request := object.union(_request, {"certificate": {"presented": false}})
	result := _decide([_policy("p", "allow", [{"common_name": {"common_name": "PF2ABC12_mycompany"}}])], request)
	result.allowed == false
}

# Decision kinds

test_allow_decision if {
	result := _decide([_policy("a", "allow", [{"everyone": {}}])], _request)
	result.allowed == true
	result.decision == "allow"
	result.policy == {"id": "a", "name": "Policy a"}
	result.reason == "policy 'Policy a' (allow) matched"
}

test_deny_decision if {
	result := _decide([_policy("d", "deny", [{"everyone": {}}])], _request)
	result.allowed == false
	result.decision == "deny"
	result.policy == {"id": "d", "name": "Policy d"}
}

test_bypass_decision_admits if {
	result := _decide([_policy("b", "bypass", [{"everyone": {}}])], _request)
	result.allowed == true
	result.decision == "bypass"
}

test_non_identity_decision_admits if {
	result := _decide([_policy("n", "non_identity", [{"certificate": {}}])], _request)
	result.allowed == true
	result.decision == "non_identity"
}

test_no_policies_denied if {
	result := _decide([], _request)
	result.allowed == false
	result.decision == "deny"
	result.evaluated_policies == []
}

test_no_config_denied if {
	result := access.decision with input as _request
	result.allowed == false
	result.reason == "no policy matched, so access is denied"
}

test_policies_not_a_list_denied if {
	result := _decide({"a": _policy("a", "allow", [{"everyone": {}}])}, _request)
	result.allowed == false
	result.reason == "data.certposture_config.access_policies is not a list, so access is denied"
}

# Order

test_bypass_evaluated_before_earlier_deny if {
	policies := [
		_policy("d", "deny", [{"everyone": {}}]),
		_policy("b", "bypass", [{"email_domain": {"domain": "example.com"}}]),
	]
	result := _decide(policies, _request)
	result.decision == "bypass"
	result.policy.id == "b"
	[evaluation.id | some evaluation in result.evaluated_policies] == ["b"]
}

test_deny_before_later_allow if {
	policies := [
		_policy("d", "deny", [{"group": {"id": "eng"}}]),
		_policy("a", "allow", [{"everyone": {}}]),
	]
	result := _decide(policies, _request)
	result.allowed == false
	result.policy.id == "d"
}

test_allow_before_later_deny if {
	policies := [
		_policy("a", "allow", [{"everyone": {}}]),
		_policy("d", "deny", [{"group": {"id": "eng"}}]),
	]
	result := _decide(policies, _request)
	result.allowed == true
	result.policy.id == "a"
}

test_unmatched_policies_listed_with_reason if {
	policies := [
		_policy("x", "allow", [{"group": {"id": "admins"}}]),
		_policy("a", "allow", [{"everyone": {}}]),
	]
	result := _decide(policies, _request)
	result.policy.id == "a"
	result.evaluated_policies[0].id == "x"
	result.evaluated_policies[0].matched == false
	result.evaluated_policies[0].reason == "no include rule matched"
	result.evaluated_policies[1].reason == "include rule everyone matched"
}

# Rule groups

test_exclude_overrides_include if {
	policy := object.union(_policy("a", "allow", [{"everyone": {}}]), {"exclude": [{"group": {"id": "eng"}}]})
	result := _decide([policy], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "exclude rule group matched"
}

test_exclude_not_matching_allows if {
	policy := object.union(_policy("a", "allow", [{"everyone": {}}]), {"exclude": [{"group": {"id": "contractors"}}]})
	_decide([policy], _request).allowed == true
}

test_require_all_must_match if {
	policy := object.union(_policy("a", "allow", [{"everyone": {}}]), {"require": [
		{"email_domain": {"domain": "example.com"}},
		{"device_posture": {"integration_uid": "cert-bad"}},
	]})
	result := _decide([policy], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "require rule device_posture did not match"
}

test_require_all_matching_allows if {
	policy := object.union(_policy("a", "allow", [{"everyone": {}}]), {"require": [
		{"email_domain": {"domain": "example.com"}},
		{"device_posture": {"integration_uid": "cert-ok"}},
	]})
	result := _decide([policy], _request)
	result.allowed == true
	[check.rule_id | some check in result.posture] == ["cert-ok"]
}

test_include_any_matches if {
	result := _decide([_policy("a", "allow", [{"group": {"id": "admins"}}, {"ip": {"ip": "10.0.0.0/8"}}])], _request)
	result.allowed == true
}

test_empty_include_never_matches if {
	result := _decide([_policy("a", "allow", [])], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "include is empty, so the policy never matches"
}

test_absent_include_never_matches if {
	result := _decide([{"id": "a", "name": "A", "decision": "allow", "require": [{"everyone": {}}]}], _request)
	result.allowed == false
}

# Policies that cannot be evaluated

test_unknown_selector_denies_with_reason if {
	policies := [
		_policy("g", "allow", [{"geo": {"country_code": "US"}}]),
		_policy("a", "allow", [{"everyone": {}}]),
	]
	result := _decide(policies, _request)
	result.allowed == false
	result.decision == "deny"
	result.policy.id == "g"
	result.reason == "policy 'Policy g' cannot be evaluated (include[0]: selector geo is not supported), so access is denied"
	result.evaluated_policies[0].invalid == true
}

test_unknown_selector_in_deny_exclude_still_denies if {
	policy := object.union(_policy("d", "deny", [{"group": {"id": "admins"}}]), {"exclude": [{"okta": {"name": "x"}}]})
	result := _decide([policy, _policy("a", "allow", [{"everyone": {}}])], _request)
	result.allowed == false
	result.policy.id == "d"
}

test_policy_after_decision_not_evaluated if {
	policies := [
		_policy("a", "allow", [{"everyone": {}}]),
		_policy("g", "allow", [{"geo": {"country_code": "US"}}]),
	]
	result := _decide(policies, _request)
	result.allowed == true
	count(result.evaluated_policies) == 1
}

test_unknown_decision_denies if {
	result := _decide([_policy("x", "block", [{"everyone": {}}])], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "decision must be one of allow, deny, bypass, non_identity"
}

test_malformed_rule_denies if {
	result := _decide([_policy("x", "allow", [{"everyone": {}, "email": {"email": "a@b"}}])], _request)
	result.allowed == false
	result.evaluated_policies[0].invalid == true
}

test_bad_ip_parameter_denies if {
	result := _decide([_policy("x", "allow", [{"ip": {"ip": "10.0.0.0/33"}}])], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "include[0]: selector ip needs ip, an IP address or CIDR range such as 10.0.0.0/8"
}

test_group_not_a_list_denies if {
	policy := object.union(_policy("x", "allow", [{"everyone": {}}]), {"require": {"everyone": {}}})
	result := _decide([policy], _request)
	result.allowed == false
	result.evaluated_policies[0].reason == "require must be a list"
}

test_policy_not_an_object_denies if {
	result := _decide(["allow"], _request)
	result.allowed == false
	result.reason == "policy (no name) cannot be evaluated (the policy is not an object), so access is denied"
}
