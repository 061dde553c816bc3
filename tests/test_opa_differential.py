"""Differential tests: the policies give the same results on regorus and on OPA.

A scenario is a ``certposture_config`` (rules, signing-certificate records, a
pinned evaluation time) and several facts documents; each pair is a case. A
scenario is built from ``SEED`` and its index alone, so
``build_scenario(pool, index)`` rebuilds it. The facts start from real
certificates, made with ``tests.certgen`` and turned into facts by
``collector.x509facts.certificate_facts``, and vary the device identity, OS,
certificate sources, private key status, ``signed_by``, ``unverified_signers``
and collection errors.
The rules aim at the first facts document of their scenario, so that passes
and near misses are common. Certificates and keys are random on every run, so
fingerprints (and with them the order of candidates) change between runs,
while the structure of each case does not.

regorus runs through ``certposture.engine.evaluate``, the code path of
``certposture evaluate``. OPA loads the same policy files and the same data
once per scenario, as a server would, and evaluates each facts document as
input. When the engines disagree, the test names the case, shows where the
results differ and writes the whole case to a JSON file.

Single-case tests pin down the constructs that the two engines evaluate
differently (Unicode lower(), json.marshal): the policies avoid them, and these
tests show both engines give the same result, and which one.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from cryptography import x509

from certposture import bundle, engine, posture
from certposture.errors import CertpostureError
from certposture.rules import validate_rules
from certposture.signing import parse_signing_certificate
from certposture.store import Store
from collector import __version__ as collector_version
from collector.collect import Locations, collect
from collector.facts import CertificateSource, Facts, PrivateKey
from collector.signers import Signer
from collector.x509facts import certificate_facts
from tests.certgen import CLIENT_AUTH, EMAIL_PROTECTION, CertKey, KeyType, make_ca, make_leaf
from tests.opa_support import (
    RESULTS_DOCUMENT,
    bundle_files,
    json_differences,
    opa_engine,
    policy_sources,
    require_opa,
)

SEED = 20261204
SCENARIO_COUNT = 150
FACTS_PER_SCENARIO = 4

# Every reason code the policies define, and the status passed: each must occur
# on both engines, so that the suite cannot pass without exercising it.
REQUIRED_CODES = frozenset(
    {
        "signer_mismatch",
        "signature_unsupported",
        "not_yet_valid",
        "expired",
        "cn_mismatch",
        "eku_missing",
        "private_key_missing",
        "private_key_unverified",
        "private_key_outside_locations",
        "san_mismatch",
        "os_mismatch",
        "unsupported_rule_type",
        "invalid_rule",
        "unknown_signing_certificate",
        "variable_unavailable",
        "no_certificate",
        "no_matching_certificate",
        "passed",
    }
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"

SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
EKU_NAMES = {"clientAuth": CLIENT_AUTH, "emailProtection": EMAIL_PROTECTION}


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


# Validity periods of the pool's certificates. "long" ends at the 9999-12-31T23:59:59Z
# that RFC 5280 gives for certificates without an expiration date. "instant" is valid
# for one second only, to test that both bounds are inclusive.
VALIDITY = {
    "current": (_utc(2026, 1, 1), _utc(2027, 1, 1)),
    "long": (_utc(1950, 1, 1), _utc(9999, 12, 31, 23, 59, 59)),
    "expired": (_utc(2020, 1, 1), _utc(2021, 1, 1)),
    "future": (_utc(2030, 1, 1), _utc(2031, 1, 1)),
    "instant": (_utc(2026, 6, 15, 12), _utc(2026, 6, 15, 12)),
}

# Evaluation times: inside and on the bounds of the periods above, before 1970 and
# near the end of the range that Rego's nanosecond clock covers.
PINNED_TIMES = (
    "2026-06-15T12:00:00Z",
    "2026-01-01T00:00:00Z",
    "2027-01-01T00:00:00Z",
    "2027-01-01T00:00:01Z",
    "2025-12-31T23:59:59Z",
    "2030-06-01T00:00:00Z",
    "2020-06-01T00:00:00Z",
    "1969-07-20T20:17:40Z",
    "2261-12-31T23:59:59Z",
)

# Device identities (hostname, serial number): ASCII, accented Latin, Greek and Cyrillic
# capitals (the dotted capital I and final sigma among them, which lower() treats
# differently on the two engines), values containing a placeholder, CJK and full-width
# characters.
IDENTITIES = (
    ("pf2abc12", "PF2ABC12"),
    ("laptop-ünïcödé", "SN-ÄÖÜ-42"),
    ("Δelta-host", "ДЕВАЙС-7"),
    ("ws-${serial_number}", "SN${hostname}"),
    ("東京-pc", "ＳＮ１２"),
    ("İSTANBUL-ΟΔΟΣ", "SN-İΣ-\u212a"),
)

PEM_FILES = (
    "/etc/corp/certs/client.pem",
    "/etc/corp/certs/sub/device.pem",
    "/etc/corp/certs-old/client.pem",
    "/srv/zertifikate/ü/gerät.pem",
    "/home/user/client.pem",
)
KEY_FILES = ("/etc/corp/keys/client.key", "/etc/corp/certs/client.key", "/home/user/client.key")
NSSDBS = ("/etc/pki/nssdb", "/home/user/.pki/nssdb")
TRUST_STORE_LOCATIONS = ("system", "user", "login")
RULE_PATHS = (
    "/etc/corp/certs/client.pem",
    "/etc/corp/certs",
    "/etc/corp/certs/",
    "/etc/corp/keys/client.key",
    "/srv/zertifikate/ü",
    "/etc/corp/cert",
    "/home/user/client.pem",
)
COLLECTION_ERRORS = (
    {"source": "pem", "location": "/etc/corp/certs/missing.pem", "step": "open", "message": "not found"},
    {"source": "pem", "location": "/etc/corp/certs/sub/bad.pem", "step": "load", "message": "invalid PEM"},
    {"source": "pem", "location": "/home/user/other.pem", "step": "read", "message": "permission denied"},
    {"source": "nssdb", "location": "/etc/pki/nssdb", "step": "database", "message": "cannot open cert9.db"},
    {
        "source": "device",
        "location": "/sys/class/dmi/id/product_serial",
        "step": "identity",
        "message": "denied",
    },
    {"source": "keychain", "location": "system", "step": "open", "message": "not supported"},
)
CN_TEMPLATES = (
    "${serial_number}_mycompany",
    "${serial_number}_MYCOMPANY",
    "${hostname}_mycompany_${serial_number}",
    "${serial_number}-device",
    "OTHER_mycompany",
    "second-CN",
)
SAN_TEMPLATES = (
    ["${hostname}.corp.example"],
    ["nothing.example", "${serial_number}.corp.example"],
    ["10.1.2.3"],
    ["DEVICE@corp.example"],
    ["${hostname}.corp.example", "https://${hostname}.corp.example/device"],
    ["other.corp.example"],
)
# Signing certificates named as the issuer whose signature check failed, as the collector records them.
UNVERIFIED_SIGNERS = (
    {
        "id": "ca-main",
        "status": "unsupported",
        "signature_algorithm": "dsa-with-sha1",
        "reason": "cryptography 50.0.2 cannot check this signature (Unsupported signature algorithm)",
    },
    {
        "id": "ca-second",
        "status": "invalid",
        "signature_algorithm": "sha256WithRSAEncryption",
        "reason": "the signature does not verify with the public key of this signing certificate",
    },
    {
        "id": "ca-issuing",
        "status": "unsupported",
        # A made-up OID, which the collector reports dotted because cryptography has no name for it.
        "signature_algorithm": "1.2.840.113549.1.1.99",
        "reason": "cryptography 50.0.2 cannot check this signature (Unsupported signature algorithm)",
    },
)
UNSUPPORTED_TYPES: tuple[Any, ...] = (
    "client_certificate",
    "CLIENT_CERTIFICATE_V2",
    "file",
    None,
    42,
    ["client_certificate_v2"],
    {"name": "client_certificate_v2"},
)


def _break_input(field_name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(rule: dict[str, Any]) -> None:
        rule["input"][field_name] = value

    return apply


def _drop_input_field(field_name: str) -> Callable[[dict[str, Any]], None]:
    def apply(rule: dict[str, Any]) -> None:
        rule["input"].pop(field_name, None)

    return apply


def _replace_input(value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(rule: dict[str, Any]) -> None:
        if value is None:
            rule.pop("input")
        else:
            rule["input"] = value

    return apply


# Edits that make a stored rule invalid, as hand-edited data could.
RULE_BREAKS = (
    _replace_input(None),
    _replace_input("linux"),
    _break_input("check_private_key", "yes"),
    _drop_input_field("check_private_key"),
    _break_input("cn", 5),
    _break_input("cn", "${user}_mycompany"),
    _break_input("extended_key_usage", ["serverAuth"]),
    _break_input("subject_alternative_names", "host.corp.example"),
    _break_input("subject_alternative_names", ["${hostname", "ok.example"]),
    _break_input("locations", ["/etc/corp/certs"]),
    _break_input("locations", {"paths": ["etc/corp/certs"]}),
    _break_input("locations", {"trust_stores": ["machine"]}),
    _break_input("certificate_id", ""),
    _break_input("operating_system", "ios"),
)


@dataclass(frozen=True)
class PoolCertificate:
    """A certificate's facts as the collector reports them. Each case sets the source and key again."""

    label: str
    identity: int | None
    facts: dict[str, Any]


@dataclass(frozen=True)
class Pool:
    certificates: tuple[PoolCertificate, ...]
    signing_records: tuple[dict[str, Any], ...]

    def by_identity(self, identity: int) -> list[PoolCertificate]:
        return [certificate for certificate in self.certificates if certificate.identity == identity]


@dataclass(frozen=True)
class Scenario:
    """One config and the facts documents evaluated against it; case ``index.n`` is facts document ``n``."""

    index: int
    config: dict[str, Any]
    policy_dirs: tuple[Path, ...] | None
    facts: tuple[Facts, ...]

    def case_id(self, number: int) -> str:
        return f"{self.index}.{number}"

    def describe(self, number: int) -> dict[str, Any]:
        return {
            "case": self.case_id(number),
            "seed": SEED,
            "policy_dirs": None if self.policy_dirs is None else [str(path) for path in self.policy_dirs],
            "config": self.config,
            "facts": self.facts[number].model_dump(mode="json"),
        }


@dataclass
class DifferentialReport:
    """Outcome of every generated case on both engines."""

    cases: int = 0
    rule_results: int = 0
    failed_on_both: int = 0
    mismatches: list[str] = field(default_factory=list)
    codes: dict[str, Counter[str]] = field(default_factory=lambda: {"regorus": Counter(), "opa": Counter()})


# The pool of real certificates


def _store_signing_certificate(store: Store, ca: CertKey, certificate_id: str, name: str | None) -> None:
    keep_key = certificate_id == "ca-root"
    pem = ca.cert_pem() + (ca.key_pem() if keep_key else b"")
    parsed = parse_signing_certificate(pem, f"{certificate_id}.pem")
    store.add_signing_certificate(parsed, name, keep_key, certificate_id)


def _ascii_host(host: str) -> str:
    """Return the host as an A-label, because certificates carry DNS names in ASCII."""
    try:
        return host.encode("idna").decode()
    except UnicodeError:
        return "device"


def _leaf_specs(host: str, serial: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (label, issuer name, make_leaf arguments) of the leaves made for one identity."""
    dns = f"{_ascii_host(host)}.corp.example"
    good_sans = [dns, "device@corp.example"]
    return [
        (
            "good",
            "main",
            {"cn": f"{serial}_mycompany", "sans": good_sans, "eku": [CLIENT_AUTH, EMAIL_PROTECTION]},
        ),
        (
            "case",
            "issuing",
            {
                "cn": f"{serial.lower()}_MyCompany",
                "sans": [dns.upper()],
                "eku": [CLIENT_AUTH],
                "validity": "long",
            },
        ),
        (
            "two-cns",
            "second",
            {
                "cn": [f"{host}_mycompany_{serial}", "second-cn"],
                "sans": ["10.1.2.3", f"https://{dns}/device"],
                "eku": [EMAIL_PROTECTION],
            },
        ),
        ("expired", "main", {"cn": f"{serial}_mycompany", "sans": good_sans, "validity": "expired"}),
        ("future", "main", {"cn": f"{serial}_mycompany", "sans": good_sans, "validity": "future"}),
        ("instant", "main", {"cn": f"{serial}-device", "sans": good_sans, "validity": "instant"}),
        ("bare", "main", {"cn": None, "other_name_only": True, "eku": None}),
        ("impostor", "impostor", {"cn": f"{serial}_mycompany", "sans": good_sans}),
        ("server", "main", {"cn": f"{serial}_mycompany", "sans": [dns], "eku": [SERVER_AUTH]}),
    ]


def build_pool(store_home: Path) -> Pool:
    """Make the CAs and leaves, store the CAs and turn every certificate into facts with the collector."""
    ca_start, ca_end = _utc(2000, 1, 1), _utc(2099, 1, 1)
    root = make_ca("Example Root CA", not_before=ca_start, not_after=ca_end)
    cas = {
        "main": make_ca("Example Device CA", not_before=ca_start, not_after=ca_end),
        "second": make_ca("Second Device CA", key_type="rsa", not_before=ca_start, not_after=ca_end),
        "issuing": make_ca("Example Issuing CA", parent=root, not_before=ca_start, not_after=ca_end),
        "root": root,
        # Same subject as the main CA, other key: its leaves name the main CA as issuer but fail the signature.
        "impostor": make_ca("Example Device CA", not_before=ca_start, not_after=ca_end),
    }
    store = Store(store_home)
    stored = {"main": ("ca-main", "Example Device CA"), "second": ("ca-second", None)}
    stored |= {"issuing": ("ca-issuing", "Issuing CA"), "root": ("ca-root", "Root CA")}
    for key, (certificate_id, name) in stored.items():
        _store_signing_certificate(store, cas[key], certificate_id, name)
    signers = [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]

    def facts_of(certificate: x509.Certificate) -> dict[str, Any]:
        placeholder_source = CertificateSource(type="pem", location="/")
        placeholder_key = PrivateKey(present=False, status="missing")
        return certificate_facts(certificate, placeholder_source, placeholder_key, signers).model_dump(
            mode="json"
        )

    certificates = [PoolCertificate(f"ca-{key}", None, facts_of(ca.cert)) for key, ca in cas.items()]
    for number, (host, serial) in enumerate(IDENTITIES):
        for label, issuer, arguments in _leaf_specs(host, serial):
            not_before, not_after = VALIDITY[arguments.pop("validity", "current")]
            key_type: KeyType = "rsa" if label == "server" and number == 0 else "ec"
            leaf = make_leaf(
                cas[issuer], not_before=not_before, not_after=not_after, key_type=key_type, **arguments
            )
            certificates.append(PoolCertificate(f"{label}-{number}", number, facts_of(leaf.cert)))
    return Pool(tuple(certificates), tuple(store.list_signing_certificates()))


# Generating one case


def _weighted(rng: random.Random, choices: list[tuple[Any, float]]) -> Any:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights)[0]


def _substitute(template: str, device: dict[str, Any]) -> str:
    """Substitute the variables in one pass, as the policy does."""
    serial_number = device["serial_number"] or ""
    hostname = device["hostname"] or ""
    return serial_number.join(
        part.replace("${hostname}", hostname) for part in template.split("${serial_number}")
    )


def _matching_device(rng: random.Random, identity: int) -> dict[str, Any]:
    """Return the device that the certificates of ``identity`` were made for."""
    host, serial = IDENTITIES[identity]
    family = _weighted(rng, [("linux", 90), ("mac", 5), ("windows", 5)])
    return {
        "hostname": host,
        "serial_number": serial,
        "os": {"family": family, "name": family, "version": "1"},
    }


def _device(rng: random.Random, identity: int) -> dict[str, Any]:
    host, serial = IDENTITIES[identity]
    other_host, other_serial = IDENTITIES[rng.randrange(len(IDENTITIES))]
    hostname = _weighted(rng, [(host, 65), (host.upper(), 10), (None, 8), ("", 4), (other_host, 13)])
    serial_number = _weighted(
        rng, [(serial, 65), (serial.lower(), 10), (None, 8), ("", 4), (other_serial, 13)]
    )
    family = _weighted(
        rng,
        [
            ("linux", 72),
            ("mac", 8),
            ("windows", 8),
            ("unknown", 4),
            ("ios", 3),
            ("android", 3),
            ("chromeos", 2),
        ],
    )
    return {
        "hostname": hostname,
        "serial_number": serial_number,
        "os": {"family": family, "name": f"{family} system", "version": "1"},
    }


def _source(rng: random.Random) -> dict[str, Any]:
    kind = _weighted(rng, [("pem", 65), ("nssdb", 20), ("keychain", 7.5), ("windows", 7.5)])
    if kind == "pem":
        return {"type": "pem", "location": rng.choice(PEM_FILES), "label": None}
    if kind == "nssdb":
        return {"type": "nssdb", "location": rng.choice(NSSDBS), "label": rng.choice(["corp-device", None])}
    return {
        "type": kind,
        "location": rng.choice(TRUST_STORE_LOCATIONS),
        "label": rng.choice(["device", None]),
    }


def _private_key(rng: random.Random, source: dict[str, Any]) -> dict[str, Any]:
    status = _weighted(rng, [("present", 60), ("missing", 20), ("unverified", 19), ("present-nowhere", 1)])
    if status == "present-nowhere":
        # The schema allows a present key without a location, and the policies then fail on both engines.
        return {"present": True, "status": "present", "location": None, "reason": None}
    if status == "present":
        if source["type"] == "pem":
            location = rng.choice([source["location"], source["location"], *KEY_FILES])
        else:
            location = source["location"]
        return {"present": True, "status": "present", "location": location, "reason": None}
    if status == "missing":
        reason = rng.choice([None, "no key with this public key in the collected locations"])
        return {"present": False, "status": "missing", "location": None, "reason": reason}
    reason = rng.choice([None, "the key is encrypted", "key algorithm ed448 differs from the certificate's"])
    return {
        "present": False,
        "status": "unverified",
        "location": rng.choice([None, *KEY_FILES]),
        "reason": reason,
    }


def _candidate(rng: random.Random, pool: Pool, identity: int) -> dict[str, Any]:
    group = pool.by_identity(identity) if rng.random() < 0.75 else list(pool.certificates)
    certificate = copy.deepcopy(rng.choice(group).facts)
    certificate["source"] = _source(rng)
    certificate["private_key"] = _private_key(rng, certificate["source"])
    # An id is never both verified and unverified: the facts schema rejects that.
    if rng.random() < 0.15:
        certificate["signed_by"] = rng.choice([[], ["ca-second"], ["ca-main", "ca-second"], ["ca-removed"]])
        certificate["unverified_signers"] = [
            entry
            for entry in certificate["unverified_signers"]
            if entry["id"] not in certificate["signed_by"]
        ]
    if rng.random() < 0.1:
        choices = [entry for entry in UNVERIFIED_SIGNERS if entry["id"] not in certificate["signed_by"]]
        certificate["unverified_signers"] = rng.sample(choices, rng.randint(1, len(choices)))
    if rng.random() < 0.1:
        # A collector that reports SANs as U-labels, in another case than the rule's.
        host = IDENTITIES[identity][0]
        certificate["subject_alternative_names"]["dns"] = [rng.choice([host, host.upper()]) + ".corp.example"]
    return certificate


def _varied_certificates(
    rng: random.Random, pool: Pool, identity: int, candidates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the scenario's certificates with some dropped, moved or with another key status."""
    varied = []
    for candidate in candidates:
        roll = rng.random()
        if roll < 0.2:
            continue
        changed = copy.deepcopy(candidate)
        if roll < 0.55:
            changed["source"] = _source(rng)
            changed["private_key"] = _private_key(rng, changed["source"])
        elif roll < 0.7:
            changed["private_key"] = _private_key(rng, changed["source"])
        varied.append(changed)
    if rng.random() < 0.4:
        varied.append(_candidate(rng, pool, identity))
    if varied and rng.random() < 0.1:
        # The same certificate found a second time, elsewhere.
        duplicate = copy.deepcopy(varied[0])
        duplicate["source"] = _source(rng)
        varied.append(duplicate)
    return varied


def _facts_document(
    device: dict[str, Any], certificates: list[dict[str, Any]], errors: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "collected_at": "2026-06-15T11:00:00Z",
        "collector": {"version": collector_version},
        "device": device,
        "certificates": certificates,
        "errors": errors,
    }


def _aimed_locations(rng: random.Random, candidate: dict[str, Any]) -> dict[str, Any] | None:
    """Return locations that include the candidate's own, so that a rule can pass."""
    source = candidate["source"]
    if source["type"] == "pem":
        folder = source["location"].rsplit("/", 1)[0]
        paths = [rng.choice([source["location"], folder, folder + "/"])]
        key_location = candidate["private_key"]["location"]
        if key_location and rng.random() < 0.5:
            paths.append(key_location)
        return {"paths": sorted(set(paths))}
    if source["type"] == "windows" and source["location"] in ("system", "user"):
        return {"trust_stores": [source["location"]]} if rng.random() < 0.7 else None
    if source["type"] == "keychain" and source["location"] == "system":
        # macOS rules can name only the System keychain.
        return {"trust_stores": ["system"]} if rng.random() < 0.7 else None
    return None


def _operating_system_for(source_type: str) -> str:
    return {"keychain": "mac", "windows": "windows"}.get(source_type, "linux")


def _aimed_conditions(
    rng: random.Random, candidate: dict[str, Any], device: dict[str, Any]
) -> dict[str, Any]:
    """Return cn, extended_key_usage and subject_alternative_names that the candidate mostly meets."""
    conditions: dict[str, Any] = {}
    common_names = {name.lower() for name in candidate["subject"]["common_names"]}
    matching_cns = [cn for cn in CN_TEMPLATES if _substitute(cn, device).lower() in common_names]
    if matching_cns and rng.random() < 0.8:
        conditions["cn"] = rng.choice(matching_cns)
    elif rng.random() < 0.3:
        conditions["cn"] = rng.choice(CN_TEMPLATES)

    names = [name for name, oid in EKU_NAMES.items() if oid in candidate["extended_key_usage"]]
    if names and rng.random() < 0.6:
        conditions["extended_key_usage"] = rng.sample(names, rng.randint(1, len(names)))
    elif rng.random() < 0.2:
        conditions["extended_key_usage"] = ["emailProtection"]

    sans = candidate["subject_alternative_names"]
    values = {value.lower() for kind in ("dns", "email", "uri", "ip") for value in sans.get(kind, [])}
    matching_sans = [
        templates
        for templates in SAN_TEMPLATES
        if any(_substitute(template, device).lower() in values for template in templates)
    ]
    if matching_sans and rng.random() < 0.6:
        conditions["subject_alternative_names"] = list(rng.choice(matching_sans))
    elif rng.random() < 0.2:
        conditions["subject_alternative_names"] = list(rng.choice(SAN_TEMPLATES))
    return conditions


def _random_conditions(rng: random.Random) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if rng.random() < 0.6:
        conditions["cn"] = rng.choice(CN_TEMPLATES)
    if rng.random() < 0.5:
        conditions["extended_key_usage"] = rng.choice(
            [["clientAuth"], ["emailProtection"], ["clientAuth", "emailProtection"]]
        )
    if rng.random() < 0.5:
        conditions["subject_alternative_names"] = list(rng.choice(SAN_TEMPLATES))
    return conditions


def _valid_rule(
    rng: random.Random, pool: Pool, candidates: list[dict[str, Any]], device: dict[str, Any], number: int
) -> dict[str, Any]:
    signer_ids = [record["id"] for record in pool.signing_records]
    rule_input: dict[str, Any] = {"check_private_key": rng.random() < 0.75}
    if candidates and rng.random() < 0.6:
        candidate = rng.choice(candidates)
        named = [*candidate["signed_by"], *(entry["id"] for entry in candidate["unverified_signers"])]
        aimed_id = rng.choice(named) if named and rng.random() < 0.85 else rng.choice(signer_ids)
        rule_input["certificate_id"] = aimed_id
        rule_input["operating_system"] = _operating_system_for(candidate["source"]["type"])
        locations = _aimed_locations(rng, candidate)
        rule_input |= _aimed_conditions(rng, candidate, device)
    else:
        rule_input["certificate_id"] = _weighted(rng, [(rng.choice(signer_ids), 90), ("ca-removed", 10)])
        rule_input["operating_system"] = _weighted(rng, [("linux", 85), ("mac", 7.5), ("windows", 7.5)])
        if rule_input["operating_system"] == "linux":
            paths = rng.sample(RULE_PATHS, rng.randint(1, 3))
            locations = rng.choice([None, {"paths": sorted(paths)}])
        else:
            stores = ["system", "user"] if rule_input["operating_system"] == "windows" else ["system"]
            locations = rng.choice([None, {"trust_stores": rng.sample(stores, rng.randint(1, len(stores)))}])
        rule_input |= _random_conditions(rng)
    if locations is not None:
        rule_input["locations"] = locations

    rule: dict[str, Any] = {
        "id": f"rule-{number}",
        "name": f"Rule {number}",
        "type": "client_certificate_v2",
        "input": rule_input,
    }
    if rng.random() < 0.2:
        rule |= {"schedule": "5m", "match": [{"platform": rule_input["operating_system"]}]}
    rules, problems = validate_rules([rule], lambda _certificate_id: True)
    assert problems == [], f"the generator made an invalid rule {rule}: {problems}"
    return rules[0]


def _rule(
    rng: random.Random, pool: Pool, candidates: list[dict[str, Any]], device: dict[str, Any], number: int
) -> dict[str, Any]:
    rule = _valid_rule(rng, pool, candidates, device, number)
    roll = rng.random()
    if roll < 0.04:
        rule["type"] = rng.choice(UNSUPPORTED_TYPES)
    elif roll < 0.11:
        for breaks in rng.sample(RULE_BREAKS, rng.randint(1, 2)):
            if isinstance(rule.get("input"), dict):
                breaks(rule)
    if rng.random() < 0.03:
        rule.pop("name")
    return rule


def _signing_records(rng: random.Random, pool: Pool) -> list[dict[str, Any]]:
    records = [dict(record) for record in pool.signing_records]
    if rng.random() < 0.2:
        records = rng.sample(records, rng.randint(0, len(records)))
    if records and rng.random() < 0.1:
        # A record edited by hand without a name: messages fall back to its subject.
        rng.choice(records)["name"] = ""
    return records


def _evaluated_at(rng: random.Random) -> dt.datetime:
    roll = rng.random()
    if roll < 0.5:
        return posture.parse_time(PINNED_TIMES[0])
    if roll < 0.8:
        return posture.parse_time(rng.choice(PINNED_TIMES[1:]))
    return _utc(2019, 1, 1) + dt.timedelta(seconds=rng.randrange(14 * 365 * 86400))


def build_scenario(pool: Pool, index: int) -> Scenario:
    """Build scenario ``index`` from ``SEED`` and the index alone."""
    rng = random.Random(f"{SEED}:{index}")
    identity = rng.randrange(len(IDENTITIES))
    device = _matching_device(rng, identity)
    candidates = [_candidate(rng, pool, identity) for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6]))]

    rules = [_rule(rng, pool, candidates, device, number) for number in range(rng.randint(1, 4))]
    config = engine.build_config(rules, _signing_records(rng, pool), _evaluated_at(rng))
    if rng.random() < 0.2:
        config["explain"] = True
    policy_dirs = None
    if EXAMPLES.is_dir() and rng.random() < 0.2:
        policy_dirs = (
            engine.shipped_policy_dir(),
            *sorted(path for path in EXAMPLES.iterdir() if path.is_dir()),
        )

    documents = [_facts_document(device, candidates, [])]
    for _ in range(FACTS_PER_SCENARIO - 1):
        errors = rng.sample(COLLECTION_ERRORS, rng.choice([0, 0, 0, 1, 2, 3]))
        certificates = _varied_certificates(rng, pool, identity, candidates)
        documents.append(_facts_document(_device(rng, identity), certificates, errors))
    facts = tuple(
        posture.parse_facts(orjson.dumps(document), f"case {index}.{number}")
        for number, document in enumerate(documents)
    )
    return Scenario(index, config, policy_dirs, facts)


# Running a scenario on both engines


def outcome_on_regorus(scenario: Scenario, number: int) -> Any:
    try:
        return engine.evaluate(scenario.facts[number], scenario.config, scenario.policy_dirs)
    except CertpostureError as error:
        return {"error": str(error)}


def outcomes_on_opa(opa: ModuleType, scenario: Scenario, sources: list[tuple[str, str]]) -> list[Any]:
    """Load the policies and the config into one OPA engine and evaluate every facts document of the scenario."""
    try:
        opa_instance = opa_engine(opa, sources, {engine.CONFIG_ROOT: scenario.config})
    except opa.OpaError as error:
        return [{"error": str(error)}] * len(scenario.facts)
    outcomes: list[Any] = []
    try:
        for facts in scenario.facts:
            try:
                outcomes.append(opa_instance.eval_document(RESULTS_DOCUMENT, facts.model_dump(mode="json")))
            except opa.OpaError as error:
                outcomes.append({"error": str(error)})
    finally:
        opa_instance.close()
    return outcomes


def result_codes(results: Any) -> list[str]:
    """Return every status ``passed`` and every rule and candidate reason code in ``results``."""
    if not isinstance(results, list):
        return []
    codes = []
    for result in results:
        if result.get("status") == "passed":
            codes.append("passed")
        codes.extend(reason["code"] for reason in result.get("reasons", []))
        for candidate in result.get("candidates", []):
            codes.extend(reason["code"] for reason in candidate.get("reasons", []))
    return codes


def compare_case(
    scenario: Scenario,
    number: int,
    regorus_outcome: Any,
    opa_outcome: Any,
    report: DifferentialReport,
    failures: Path,
) -> None:
    report.cases += 1
    report.codes["regorus"].update(result_codes(regorus_outcome))
    report.codes["opa"].update(result_codes(opa_outcome))
    if isinstance(regorus_outcome, dict) and isinstance(opa_outcome, dict):
        report.failed_on_both += 1
        return
    report.rule_results += len(scenario.config["rules"])
    differences = json_differences(regorus_outcome, opa_outcome, "results")
    if not differences:
        return
    path = failures / f"case-{scenario.case_id(number)}.json"
    case = {**scenario.describe(number), "regorus": regorus_outcome, "opa": opa_outcome}
    path.write_text(json.dumps(case, indent=2, ensure_ascii=False))
    report.mismatches.append(
        f"case {scenario.case_id(number)} (regorus left, OPA right; whole case in {path}):\n  "
        + "\n  ".join(differences)
    )


@pytest.fixture(scope="module")
def opa() -> ModuleType:
    return require_opa()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    return build_pool(tmp_path_factory.mktemp("pool-store"))


@pytest.fixture(scope="module")
def report(opa: ModuleType, pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> DifferentialReport:
    failures = tmp_path_factory.mktemp("differential-failures")
    sources_by_dirs: dict[tuple[Path, ...] | None, list[tuple[str, str]]] = {}
    report = DifferentialReport()
    for index in range(SCENARIO_COUNT):
        scenario = build_scenario(pool, index)
        if scenario.policy_dirs not in sources_by_dirs:
            sources_by_dirs[scenario.policy_dirs] = policy_sources(scenario.policy_dirs)

        regorus_outcomes = [outcome_on_regorus(scenario, number) for number in range(len(scenario.facts))]
        opa_outcomes = outcomes_on_opa(opa, scenario, sources_by_dirs[scenario.policy_dirs])
        for number, (regorus_outcome, opa_outcome) in enumerate(
            zip(regorus_outcomes, opa_outcomes, strict=True)
        ):
            compare_case(scenario, number, regorus_outcome, opa_outcome, report, failures)
    return report


# The generated cases


def test_engines_agree(report: DifferentialReport) -> None:
    first_mismatches = "\n".join(report.mismatches[:5])
    assert not report.mismatches, (
        f"{len(report.mismatches)} of {report.cases} cases differ:\n{first_mismatches}"
    )


def test_enough_cases(report: DifferentialReport) -> None:
    assert report.cases >= 500
    assert report.rule_results >= 1000


def test_few_cases_fail_on_both(report: DifferentialReport) -> None:
    # The generator makes both engines fail only with a present key without a location (1% of keys).
    assert report.failed_on_both < report.cases // 10


@pytest.mark.parametrize("engine_name", ["regorus", "opa"])
def test_every_code_covered(report: DifferentialReport, engine_name: str) -> None:
    seen = report.codes[engine_name]
    missing = sorted(REQUIRED_CODES - set(seen))

    assert not missing, f"{engine_name} never produced {missing}; seen: {dict(seen)}"


def test_generation_reproducible(pool: Pool) -> None:
    first = build_scenario(pool, 7)
    second = build_scenario(pool, 7)

    for number in range(FACTS_PER_SCENARIO):
        assert first.describe(number) == second.describe(number)


# Constructs the engines evaluate differently


def _single_rule_scenario(
    pool: Pool,
    common_name: str,
    rule_cn: str,
    rule_type: Any = "client_certificate_v2",
    key_location: str | None = PEM_FILES[0],
) -> Scenario:
    """Return one facts document, whose PEM candidate is the first good leaf with another CN, and one rule."""
    certificate = copy.deepcopy(next(item for item in pool.certificates if item.label == "good-0").facts)
    certificate["subject"]["common_names"] = [common_name]
    certificate["source"] = {"type": "pem", "location": PEM_FILES[0], "label": None}
    certificate["private_key"] = {
        "present": True,
        "status": "present",
        "location": key_location,
        "reason": None,
    }
    device = _matching_device(random.Random(0), 0) | {"os": {"family": "linux", "name": "l", "version": "1"}}
    rule = {
        "id": "rule-0",
        "name": "Rule 0",
        "type": rule_type,
        "input": {
            "certificate_id": "ca-main",
            "operating_system": "linux",
            "check_private_key": True,
            "cn": rule_cn,
            "locations": {"paths": [PEM_FILES[0]]},
        },
    }
    config = engine.build_config([rule], list(pool.signing_records), posture.parse_time(PINNED_TIMES[0]))
    facts = posture.parse_facts(orjson.dumps(_facts_document(device, [certificate], [])), "handmade case")
    return Scenario(-1, config, None, (facts,))


def _assert_engines_agree(opa: ModuleType, scenario: Scenario) -> list[dict[str, Any]]:
    """Evaluate on both engines, require identical results, and return regorus's."""
    regorus_outcome = outcome_on_regorus(scenario, 0)
    (opa_outcome,) = outcomes_on_opa(opa, scenario, policy_sources(None))

    differences = json_differences(regorus_outcome, opa_outcome, "results")
    assert not differences, "regorus left, OPA right:\n" + "\n".join(differences)
    assert isinstance(regorus_outcome, list), f"evaluation failed on both engines: {regorus_outcome}"
    return regorus_outcome


def _candidate_codes(results: list[dict[str, Any]]) -> list[str]:
    return [reason["code"] for candidate in results[0]["candidates"] for reason in candidate["reasons"]]


def test_present_key_without_location_agrees(opa: ModuleType, pool: Pool) -> None:
    scenario = _single_rule_scenario(
        pool, "PF2ABC12_mycompany", "${serial_number}_mycompany", key_location=None
    )
    results = _assert_engines_agree(opa, scenario)
    assert _candidate_codes(results) == ["private_key_outside_locations"]


def test_ascii_case_folded_on_both(opa: ModuleType, pool: Pool) -> None:
    results = _assert_engines_agree(
        opa, _single_rule_scenario(pool, "PF2ABC12_MyCompany", "pf2abc12_mycompany")
    )
    assert results[0]["status"] == "passed"


# lower() differs between the engines for these letters (OPA: simple case mapping, so İ
# lowers to i and Σ to σ; regorus: full mapping, i + U+0307 and final ς), and Unicode
# lowering makes the Kelvin sign equal k. The policies fold only A-Z, so these CNs fail
# the same way on both engines.
@pytest.mark.parametrize(
    ("common_name", "rule_cn"),
    [
        ("ÄÖÜ-Gerät_MyCompany", "äöü-gerÄt_mycompany"),
        ("İSTANBUL-PC", "istanbul-pc"),
        ("ΟΔΟΣ", "οδοσ"),
        ("\u212aorp-laptop", "korp-laptop"),
    ],
)
def test_non_ascii_case_not_folded_on_both(
    opa: ModuleType, pool: Pool, common_name: str, rule_cn: str
) -> None:
    results = _assert_engines_agree(opa, _single_rule_scenario(pool, common_name, rule_cn))
    assert _candidate_codes(results) == ["cn_mismatch"]


# json.marshal escapes <, > and & and keeps 2.0 in OPA, but not in regorus; messages name
# a non-string value by its type instead, so they are the same on both engines.
@pytest.mark.parametrize(
    ("rule_type", "phrase"),
    [({"kind": "<v2> & more"}, "(an object)"), (2.0, "(a number)"), (True, "(a boolean)")],
)
def test_non_string_rule_type_message_agrees(
    opa: ModuleType, pool: Pool, rule_type: Any, phrase: str
) -> None:
    results = _assert_engines_agree(opa, _single_rule_scenario(pool, "x", "x", rule_type=rule_type))
    assert results[0]["reasons"][0]["message"].startswith(f"rule type {phrase} is not supported")


# Bundle round trip


def test_bundle_round_trip(opa: ModuleType, tmp_path: Path) -> None:
    """Build a bundle from a store, load it into OPA and compare with regorus on collected facts."""
    ca = make_ca("Round Trip CA")
    store = Store(tmp_path / "home")
    store.add_signing_certificate(parse_signing_certificate(ca.cert_pem(), "ca.pem"), None, False, "ca-trip")

    certs = tmp_path / "certs"
    certs.mkdir()
    good = make_leaf(ca, "PF2ABC12_mycompany", sans=["pf2abc12.corp.example"])
    good.write_cert(certs / "client.pem")
    good.write_key(certs / "client.key")
    # Valid for three years: passes the shipped conditions, fails the example lifetime limit.
    long_lived = make_leaf(
        ca, "pf2abc12_long", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    )
    long_lived.write_cert(certs / "long.pem")

    base = {"certificate_id": "ca-trip", "check_private_key": True, "locations": {"paths": [str(certs)]}}
    documents = [
        {
            "id": "pass",
            "name": "Passes",
            "type": "client_certificate_v2",
            "input": {**base, "operating_system": "linux", "cn": "${serial_number}_mycompany"},
        },
        {
            "id": "cn",
            "name": "CN differs",
            "type": "client_certificate_v2",
            "input": {
                **base,
                "operating_system": "linux",
                "cn": "other",
                "subject_alternative_names": ["${hostname}.corp.example"],
            },
        },
        {
            "id": "mac",
            "name": "Mac only",
            "type": "client_certificate_v2",
            "input": {"certificate_id": "ca-trip", "check_private_key": False, "operating_system": "mac"},
        },
    ]
    rules, problems = validate_rules(documents, store.signing_certificate_exists)
    assert problems == []
    store.add_rules(rules)

    extra_dirs = [EXAMPLES] if EXAMPLES.is_dir() else []
    data = bundle.build_store_bundle(store, extra_dirs)
    files = bundle_files(data)
    manifest = json.loads(files.pop(bundle.MANIFEST_PATH))
    bundle_data = json.loads(files.pop(bundle.DATA_PATH))
    assert manifest["rego_version"] == 1
    roots = manifest["roots"]
    assert len(set(roots)) == len(roots)

    trip = opa_engine(opa, [(name, text.decode()) for name, text in files.items()], bundle_data)
    try:
        for name, text in files.items():
            package = bundle.policy_package(Path(name), text.decode())
            assert bundle.package_root(package) in roots, f"{name}: {package} is under no root of {roots}"
        signers = [
            Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()
        ]
        facts = collect(
            Locations(paths=(str(certs),)), signers, hostname="pf2abc12", serial_number="PF2ABC12"
        )
        opa_results = trip.eval_document(RESULTS_DOCUMENT, facts.model_dump(mode="json"))
    finally:
        trip.close()

    config = engine.build_config(store.list_rules(), store.list_signing_certificates(), None)
    regorus_results = engine.evaluate(facts, config, [engine.shipped_policy_dir(), *extra_dirs])

    assert [result["status"] for result in regorus_results] == ["passed", "failed", "not_applicable"]
    if extra_dirs:
        assert "lifetime_too_long" in result_codes(regorus_results)
    differences = json_differences(regorus_results, opa_results, "results")
    assert not differences, "regorus left, OPA right:\n" + "\n".join(differences)
