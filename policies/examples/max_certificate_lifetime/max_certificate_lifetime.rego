# Example extra condition: a certificate may be valid for at most 398 days
# from not_before to not_after, so that long-lived device certificates fail.
#
# Load it with `certposture evaluate --policy policies/examples/max_certificate_lifetime`.
# The package lives under certposture.conditions and is evaluated for each
# candidate certificate of each rule, with input set to
# {"certificate", "rule", "device", "evaluated_at"}.
package certposture.conditions.max_certificate_lifetime

import rego.v1

import data.certposture.client_certificate.reason

maximum_days := 398

expected := {"maximum_days": maximum_days}

actual := {"lifetime_days": _lifetime_days} if {
	_parsable
} else := {"not_before": input.certificate.not_before, "not_after": input.certificate.not_after}

reasons contains reason(
	"max_certificate_lifetime",
	"lifetime_too_long",
	sprintf(
		"certificate is valid for %s days, more than the %d this policy allows",
		[format_int(_lifetime_days, 10), maximum_days],
	),
	maximum_days,
	_lifetime_days,
) if {
	_parsable
	_lifetime_days > maximum_days
}

# time.parse_rfc3339_ns counts nanoseconds in 64 bits and covers only the
# years 1678 to 2261. A date outside them, such as the 9999-12-31 that RFC 5280
# gives for certificates without an expiration, is an error in regorus and
# undefined in OPA, so such dates are never parsed, and a certificate with
# one fails (in practice it is valid for centuries).
reasons contains reason(
	"max_certificate_lifetime",
	"lifetime_too_long",
	sprintf(
		"certificate is valid from %s to %s, more than the %d days this policy allows",
		[input.certificate.not_before, input.certificate.not_after, maximum_days],
	),
	maximum_days,
	null,
) if {
	not _parsable
}

_parsable if {
	_in_range(input.certificate.not_before)
	_in_range(input.certificate.not_after)
}

_in_range(value) if {
	year := to_number(substring(value, 0, 4))
	year >= 1678
	year <= 2261
}

_nanoseconds_per_day := ((24 * 60) * 60) * 1000000000

# Whole days from not_before to not_after.
_lifetime_days := floor(_span_ns / _nanoseconds_per_day) if {
	_parsable
	_span_ns := time.parse_rfc3339_ns(input.certificate.not_after) - time.parse_rfc3339_ns(input.certificate.not_before)
}
