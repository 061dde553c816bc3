#!/usr/bin/env bash
# Demo of the whole check in a temporary home. openssl makes a signing CA and a device certificate.
# certutil and pk12util import the device certificate into a new NSS database, and a PEM pair is kept.
# The CLI stores the CA and two rules, then shows `collect | evaluate` as a table.
# One rule passes. The other requires the emailProtection EKU, which the certificate lacks, so it fails.
# `certposture explain` then shows each condition of that rule with its expected and actual values.
set -euo pipefail

for tool in openssl certutil pk12util certposture; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "demo: $tool not found; install it (certutil and pk12util are in the libnss3-tools package)" >&2
        exit 2
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/certposture-demo.XXXXXX")
export CERTPOSTURE_HOME="$work/home"
serial=PF2DEMO1
host=demo-laptop
step() { printf '\n== %s\n' "$*" >&2; }

step "signing CA and device certificate (openssl), in $work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/O=Example Corp/CN=Example Device CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -subj "/O=Example Corp/CN=${serial}_example" \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null
cat >"$work/device.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectAltName=DNS:${host}.corp.example
EOF
openssl x509 -req -in "$work/device.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 90 -extfile "$work/device.ext" -out "$work/device.pem" 2>/dev/null
openssl x509 -in "$work/device.pem" -noout -subject -issuer -ext extendedKeyUsage,subjectAltName >&2

step "NSS database with the device certificate and key (certutil, pk12util)"
mkdir "$work/nssdb"
certutil -N -d "sql:$work/nssdb" --empty-password
openssl pkcs12 -export -inkey "$work/device.key" -in "$work/device.pem" -name corp-device \
    -passout pass:demo -out "$work/device.p12"
pk12util -i "$work/device.p12" -d "sql:$work/nssdb" -W demo >/dev/null
certutil -A -d "sql:$work/nssdb" -n "Example Device CA" -t "CT,," -i "$work/ca.pem"
certutil -L -d "sql:$work/nssdb" >&2

step "store the signing CA"
ca_id=$(certposture ca add --name "Example Device CA" "$work/ca.pem" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "signing certificate id: $ca_id" >&2

step "store two rules"
cat >"$work/rules.json" <<EOF
[
  {
    "name": "Corp device certificate (NSS)",
    "type": "client_certificate_v2",
    "schedule": "5m",
    "match": [{"platform": "linux"}],
    "input": {
      "certificate_id": "$ca_id",
      "operating_system": "linux",
      "check_private_key": true,
      "cn": "\${serial_number}_example",
      "extended_key_usage": ["clientAuth"],
      "subject_alternative_names": ["\${hostname}.corp.example"]
    }
  },
  {
    "name": "Mail signing certificate (PEM)",
    "type": "client_certificate_v2",
    "match": [{"platform": "linux"}],
    "input": {
      "certificate_id": "$ca_id",
      "operating_system": "linux",
      "check_private_key": true,
      "extended_key_usage": ["clientAuth", "emailProtection"],
      "locations": {"paths": ["$work/device.pem", "$work/device.key"]}
    }
  }
]
EOF
rule_ids=$(certposture rules add "$work/rules.json")
echo "$rule_ids" >&2
mail_rule=$(echo "$rule_ids" | tail -n 1)

step "certposture collect | certposture evaluate --format table"
set +e
certposture collect --nssdb "$work/nssdb" --path "$work/device.pem" --path "$work/device.key" \
        --hostname "$host" --serial-number "$serial" \
    | certposture evaluate --format table
status=$?
set -e

echo >&2
echo "evaluate exited with $status (1: a rule failed, as this demo intends); files are in $work" >&2
if [ "$status" -ne 1 ]; then
    echo "demo: expected exit status 1 (one rule passes, one fails), got $status" >&2
    exit 1
fi

step "certposture explain --rule $mail_rule: why the second rule fails"
certposture collect --path "$work/device.pem" --path "$work/device.key" --hostname "$host" --serial-number "$serial" \
    -o "$work/facts.json"
set +e
certposture explain --rule "$mail_rule" "$work/facts.json"
status=$?
set -e
if [ "$status" -ne 1 ]; then
    echo "demo: expected explain to exit 1 for the failing rule, got $status" >&2
    exit 1
fi
