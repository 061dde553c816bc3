"""Generate a fleet of Linux devices for the evaluation benchmarks.

The fleet is a certposture home and a JSON Lines file with one facts document
per device, in the compact form of ``certposture collect``. The home contains a
signing CA, stored with ``certposture ca add``, and ``client_certificate_v2``
rules, stored with ``certposture rules add``.

Facts are not generated per device from scratch. A handful of real
certificates is built once with ``cryptography``, put where a device keeps
them (an NSS database made with ``certutil`` and ``pk12util``, and a PEM
folder), and collected with ``certposture collect``. Those entries are the
templates. Each device gets its own hostname and serial number, and copies of
the templates with the subject CN and SANs that embed them, random
fingerprints, certificate serial numbers and dates. A share of the devices
gets one failure each, drawn from ``OUTCOMES``.

Use it as a module (:func:`build_fleet`) or as a script::

    .venv/bin/python -m bench.fleet --devices 10000 --out /tmp/fleet
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import certs
from bench.cli import parse_time, run_cli
from bench.templates import (
    LEGACY_CA_NAME,
    PERSONAL_NAME,
    TEMPLATE_SERIAL,
    VPN_DIRECTORY,
    Templates,
    build_templates,
)
from collector.facts import Facts, format_utc

DEFAULT_AT = "2026-12-01T12:00:00Z"
DEFAULT_CERTIFICATES = 4
DEFAULT_RULES = 3
DEFAULT_SEED = 7

OPERATING_SYSTEMS = (
    {"family": "linux", "name": "Debian GNU/Linux", "version": "12"},
    {"family": "linux", "name": "Ubuntu", "version": "24.04"},
    {"family": "linux", "name": "Fedora Linux", "version": "41"},
)

# Outcome per device: its name, its share of the fleet and what differs from a passing device.
# The shares add up to 1. Each failure affects one certificate or one location only.
OUTCOMES: tuple[tuple[str, float, str], ...] = (
    ("pass", 0.870, "every rule passes"),
    ("device_expired", 0.030, "the device certificate in NSS has expired"),
    ("vpn_expired", 0.015, "the VPN certificate has expired"),
    ("key_missing", 0.020, "the NSS database has the device certificate but not its private key"),
    ("cn_mismatch", 0.015, "the device certificate's CN names another serial number"),
    ("san_mismatch", 0.015, "the device certificate's SANs name the old hostname"),
    ("other_ca", 0.015, f"the device certificate was issued by {LEGACY_CA_NAME}, which is not stored"),
    ("device_absent", 0.005, "the NSS database has no device certificate"),
    ("vpn_absent", 0.005, "the VPN folder has no certificate"),
    ("nssdb_error", 0.005, "cert9.db of the NSS database is damaged (collection error, step database)"),
    ("vpn_file_error", 0.0025, "client.pem of the VPN folder is damaged (collection error, step load)"),
    ("serial_unreadable", 0.0025, "the firmware reports no serial number (collection error, step identity)"),
)

# Status of each base rule (device NSS, VPN, device NSS short name) per outcome, with the
# default four certificates per device. Rule i of the fleet is base rule i % 3.
EXPECTED_STATUSES: dict[str, tuple[str, str, str]] = {
    "pass": ("passed", "passed", "passed"),
    "device_expired": ("failed", "passed", "failed"),
    "vpn_expired": ("passed", "failed", "passed"),
    "key_missing": ("failed", "passed", "failed"),
    "cn_mismatch": ("failed", "passed", "failed"),
    "san_mismatch": ("failed", "passed", "failed"),
    "other_ca": ("failed", "passed", "failed"),
    "device_absent": ("failed", "passed", "failed"),
    "vpn_absent": ("passed", "failed", "passed"),
    "nssdb_error": ("failed", "passed", "failed"),
    "vpn_file_error": ("passed", "failed", "passed"),
    "serial_unreadable": ("error", "error", "error"),
}

DAY = 86_400


@dataclass(frozen=True)
class FleetSpec:
    """Size of a fleet: ``devices`` facts documents with ``certificates`` certificates each, and ``rules`` rules."""

    devices: int
    certificates: int = DEFAULT_CERTIFICATES
    rules: int = DEFAULT_RULES
    seed: int = DEFAULT_SEED
    at: str = DEFAULT_AT


@dataclass
class Fleet:
    """A generated fleet: the home, the facts file, and the outcome drawn for each device.

    ``outcomes`` has one line per device, in the order of ``facts``, so the
    first N lines of both describe a smaller fleet of the same devices.
    """

    spec: FleetSpec
    directory: Path
    home: Path
    facts: Path
    outcomes: Path
    ca_id: str
    rule_ids: list[str]
    mix: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def mix_of_first(self, devices: int) -> Counter[str]:
        """Count the outcomes of the first ``devices`` devices."""
        with self.outcomes.open() as lines:
            return Counter(line.strip() for _, line in zip(range(devices), lines, strict=False))

    def expected_statuses(self, mix: Counter[str]) -> Counter[tuple[int, str]]:
        """Count of (rule index, status) that the policy should report for devices with this outcome mix.

        Valid for fleets with four or more certificates per device; with fewer,
        the VPN or device certificate may be left out.
        """
        counts: Counter[tuple[int, str]] = Counter()
        for outcome, devices in mix.items():
            for index in range(self.spec.rules):
                counts[(index, EXPECTED_STATUSES[outcome][index % 3])] += devices
        return counts

    def summary(self) -> dict[str, Any]:
        return {
            "devices": self.spec.devices,
            "certificates_per_device": self.spec.certificates,
            "rules": self.spec.rules,
            "seed": self.spec.seed,
            "at": self.spec.at,
            "home": str(self.home),
            "facts": str(self.facts),
            "outcomes": str(self.outcomes),
            "ca_id": self.ca_id,
            "rule_ids": self.rule_ids,
            "mix": dict(sorted(self.mix.items(), key=lambda item: -item[1])),
            "seconds": round(self.seconds, 2),
        }


def base_rules(ca_id: str) -> list[dict[str, Any]]:
    """Return the three rules a deployment of this fleet uses, in the Cloudflare rule format."""
    common = {"type": "client_certificate_v2", "schedule": "5m", "match": [{"platform": "linux"}]}
    checks = {
        "certificate_id": ca_id,
        "operating_system": "linux",
        "check_private_key": True,
        "extended_key_usage": ["clientAuth"],
    }
    return [
        {
            "name": "Corp device certificate (NSS)",
            **common,
            "input": {
                **checks,
                "cn": "${serial_number}_corp",
                "subject_alternative_names": ["${hostname}.corp.example"],
            },
        },
        {
            "name": "VPN client certificate",
            **common,
            "input": {
                **checks,
                "cn": "${serial_number}_vpn",
                "subject_alternative_names": ["${hostname}.vpn.corp.example"],
                "locations": {"paths": [VPN_DIRECTORY]},
            },
        },
        {
            "name": "Corp device certificate, short host name (NSS)",
            **common,
            "input": {
                **checks,
                "cn": "${serial_number}_corp",
                "subject_alternative_names": ["${hostname}"],
            },
        },
    ]


def fleet_rules(ca_id: str, count: int) -> list[dict[str, Any]]:
    """Return ``count`` rules: the base rules in turn, numbered from the second round on."""
    bases = base_rules(ca_id)
    rules = []
    for index in range(count):
        rule = dict(bases[index % len(bases)])
        if index >= len(bases):
            rule["name"] = f"{rule['name']} #{index // len(bases) + 1}"
        rules.append(rule)
    return rules


class DeviceFactory:
    """Build one facts document per device from the templates, with a seeded random generator."""

    def __init__(self, templates: Templates, spec: FleetSpec) -> None:
        self.templates = templates
        self.spec = spec
        self.random = random.Random(spec.seed)
        self.at = int(parse_time(spec.at).timestamp())
        names = [name for name, _, _ in OUTCOMES]
        shares = [share for _, share, _ in OUTCOMES]
        self._outcome_names = names
        self._outcome_bounds = [sum(shares[: index + 1]) for index in range(len(shares))]

    def outcome(self) -> str:
        index = bisect.bisect_right(self._outcome_bounds, self.random.random())
        return self._outcome_names[min(index, len(self._outcome_names) - 1)]

    def facts(self, index: int, outcome: str) -> dict[str, Any]:
        templates = self.templates
        rng = self.random
        hostname = f"lt-{index:06d}"
        serial = f"PF{rng.getrandbits(40):010X}"
        device_certificate = self._device_certificate(outcome, hostname, serial)
        vpn = self._vpn_certificate(outcome, hostname, serial)

        nss: list[dict[str, Any]] = []
        if device_certificate is not None:
            nss.append(device_certificate)
        nss.append(templates.ca)
        nss.append(self._personal_certificate(index))
        pem = [vpn] if vpn is not None else []

        # The device, VPN, CA and personal certificates come first. More certificates are personal
        # ones, and with fewer than four the last ones are left out.
        certificates = [*nss[:1], *pem, *nss[1:]]
        while len(certificates) < self.spec.certificates:
            certificates.append(self._personal_certificate(index * 1000 + len(certificates)))
        certificates = certificates[: self.spec.certificates]

        errors: list[dict[str, Any]] = []
        device_serial: str | None = serial
        if outcome == "nssdb_error":
            certificates = [entry for entry in certificates if entry["source"]["type"] != "nssdb"]
            errors.append(templates.nssdb_error)
        elif outcome == "vpn_file_error":
            errors.append(templates.vpn_file_error)
        elif outcome == "serial_unreadable":
            device_serial = None
            errors.append(templates.serial_error)

        return {
            "schema_version": 1,
            "collected_at": _utc(self.at - rng.randrange(3600)),
            "collector": templates.collector,
            "device": {
                "hostname": hostname,
                "serial_number": device_serial,
                "os": OPERATING_SYSTEMS[index % len(OPERATING_SYSTEMS)],
            },
            "certificates": certificates,
            "errors": errors,
            "notes": [],
        }

    def _device_certificate(self, outcome: str, hostname: str, serial: str) -> dict[str, Any] | None:
        if outcome == "device_absent":
            return None
        template = {
            "key_missing": self.templates.device_no_key,
            "other_ca": self.templates.device_other_ca,
        }.get(outcome, self.templates.device)
        common_name = serial
        if outcome == "cn_mismatch":
            common_name = f"PF{self.random.getrandbits(40):010X}"
        san_host = f"old-{hostname}" if outcome == "san_mismatch" else hostname
        if outcome == "device_expired":
            not_before = self.at - self.random.randrange(400 * DAY, 700 * DAY)
        else:
            not_before = self.at - self.random.randrange(10 * DAY, 300 * DAY)
        subject = template["subject"]
        return {
            **template,
            "fingerprint_sha256": self._fingerprint(),
            "subject": {
                "dn": subject["dn"].replace(TEMPLATE_SERIAL, common_name),
                "common_names": [f"{common_name}_corp"],
            },
            "serial_number": self._serial_number(),
            "not_before": _utc(not_before),
            "not_after": _utc(not_before + 365 * DAY),
            "subject_alternative_names": {
                **template["subject_alternative_names"],
                "dns": [f"{san_host}.corp.example", san_host],
            },
        }

    def _vpn_certificate(self, outcome: str, hostname: str, serial: str) -> dict[str, Any] | None:
        if outcome in ("vpn_absent", "vpn_file_error"):
            return None
        template = self.templates.vpn
        if outcome == "vpn_expired":
            not_before = self.at - self.random.randrange(100 * DAY, 300 * DAY)
        else:
            not_before = self.at - self.random.randrange(5 * DAY, 80 * DAY)
        return {
            **template,
            "fingerprint_sha256": self._fingerprint(),
            "subject": {
                "dn": template["subject"]["dn"].replace(TEMPLATE_SERIAL, serial),
                "common_names": [f"{serial}_vpn"],
            },
            "serial_number": self._serial_number(),
            "not_before": _utc(not_before),
            "not_after": _utc(not_before + 90 * DAY),
            "subject_alternative_names": {
                **template["subject_alternative_names"],
                "dns": [f"{hostname}.vpn.corp.example"],
            },
        }

    def _personal_certificate(self, number: int) -> dict[str, Any]:
        template = self.templates.personal
        user = f"user{number:07d}"
        not_before = self.at - self.random.randrange(10 * DAY, 600 * DAY)
        return {
            **template,
            "fingerprint_sha256": self._fingerprint(),
            "subject": {
                "dn": template["subject"]["dn"].replace(PERSONAL_NAME, user),
                "common_names": [user],
            },
            "serial_number": self._serial_number(),
            "not_before": _utc(not_before),
            "not_after": _utc(not_before + 730 * DAY),
            "subject_alternative_names": {
                **template["subject_alternative_names"],
                "email": [f"{user}@mail.example"],
            },
        }

    def _fingerprint(self) -> str:
        return f"{self.random.getrandbits(256):064x}"

    def _serial_number(self) -> str:
        # 159 random bits with the top one set, as x509.random_serial_number draws them: 40 hex digits.
        return f"{self.random.getrandbits(158) | (1 << 158):040X}"


def _utc(timestamp: int) -> str:
    return format_utc(dt.datetime.fromtimestamp(timestamp, dt.UTC))


def build_fleet(directory: Path, spec: FleetSpec, *, validate_every: int = 997) -> Fleet:
    """Generate the fleet in ``directory``: ``home/``, ``facts.jsonl``, ``outcomes.txt`` and ``fleet.json``.

    Every ``validate_every``-th device, and the first device of each outcome,
    is validated strictly against the facts schema. ``fleet.json`` records
    the specification and the outcome mix.
    """
    if spec.devices < 1 or spec.certificates < 1 or spec.rules < 1 or validate_every < 1:
        raise ValueError("devices, certificates, rules and validate-every must each be at least 1")
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "home"
    at = parse_time(spec.at)
    with tempfile.TemporaryDirectory(prefix="templates-", dir=directory) as work:
        templates, ca_id = build_templates(Path(work), home, at)

    rules_file = directory / "rules.json"
    rules_file.write_bytes(orjson.dumps(fleet_rules(ca_id, spec.rules), option=orjson.OPT_INDENT_2))
    rule_ids = run_cli(home, "rules", "add", str(rules_file)).decode().split()

    factory = DeviceFactory(templates, spec)
    fleet = Fleet(
        spec, directory, home, directory / "facts.jsonl", directory / "outcomes.txt", ca_id, rule_ids
    )
    validated: set[str] = set()
    with fleet.facts.open("wb") as output, fleet.outcomes.open("w") as outcomes:
        batch: list[bytes] = []
        for index in range(spec.devices):
            outcome = factory.outcome()
            fleet.mix[outcome] += 1
            outcomes.write(outcome + "\n")
            line = orjson.dumps(factory.facts(index, outcome)) + b"\n"
            if index % validate_every == 0 or outcome not in validated:
                Facts.model_validate_json(line, strict=True)
                validated.add(outcome)
            batch.append(line)
            if len(batch) == 4096:
                output.writelines(batch)
                batch.clear()
        output.writelines(batch)
    fleet.seconds = time.perf_counter() - started
    (directory / "fleet.json").write_bytes(orjson.dumps(fleet.summary(), option=orjson.OPT_INDENT_2) + b"\n")
    return fleet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, required=True, help="number of devices (facts lines)")
    parser.add_argument(
        "--certificates", type=int, default=DEFAULT_CERTIFICATES, help="certificates per device (default 4)"
    )
    parser.add_argument("--rules", type=int, default=DEFAULT_RULES, help="number of rules (default 3)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 7)")
    parser.add_argument(
        "--at",
        default=DEFAULT_AT,
        help=f"evaluation time that the dates are drawn around (default {DEFAULT_AT})",
    )
    parser.add_argument("--out", type=Path, help="output folder (default a new temporary folder)")
    parser.add_argument(
        "--validate-every",
        type=int,
        default=997,
        help="validate every Nth facts document strictly, and the first of each outcome (1 validates all)",
    )
    arguments = parser.parse_args(argv)
    directory = arguments.out or Path(tempfile.mkdtemp(prefix="certposture-fleet-"))
    spec = FleetSpec(arguments.devices, arguments.certificates, arguments.rules, arguments.seed, arguments.at)
    try:
        fleet = build_fleet(directory, spec, validate_every=arguments.validate_every)
    except (ValueError, RuntimeError, certs.ToolMissingError) as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(orjson.dumps(fleet.summary(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
