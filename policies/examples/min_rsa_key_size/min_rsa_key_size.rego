# Example extra condition: RSA keys must have at least 3072 bits.
#
# Load it with `certposture evaluate --policy policies/examples/min_rsa_key_size`.
# Like every extra condition, this package lives under certposture.conditions
# and is evaluated for each candidate certificate of each rule, with input set
# to {"certificate", "rule", "device", "evaluated_at"}. EC and Ed25519 keys
# are not affected.
package certposture.conditions.min_rsa_key_size

import rego.v1

import data.certposture.client_certificate.reason

minimum_bits := 3072

# What explain shows beside the certificate's own value.
expected := {"algorithm": "rsa", "minimum_bits": minimum_bits}

actual := input.certificate.public_key

reasons contains reason(
	"min_rsa_key_size",
	"rsa_key_too_small",
	sprintf("RSA key has %d bits, fewer than the %d this policy requires", [size, minimum_bits]),
	minimum_bits,
	size,
) if {
	input.certificate.public_key.algorithm == "rsa"
	size := input.certificate.public_key.size
	is_number(size)
	size < minimum_bits
}

reasons contains reason(
	"min_rsa_key_size",
	"rsa_key_size_unknown",
	"the collector could not read the RSA key size, so the minimum cannot be checked",
	minimum_bits,
	null,
) if {
	input.certificate.public_key.algorithm == "rsa"
	not is_number(input.certificate.public_key.size)
}
