"""Template entries for generated facts: real certificates, placed as on a device and collected once.

A signing CA, a device certificate, a VPN certificate and a personal
certificate from an unknown issuer are built with ``cryptography``. The
device and personal certificates go with their keys into an NSS database
(``pk12util``), the CA beside them (``certutil``), and the VPN certificate and
key into a PEM folder. ``certposture collect`` then reads them, and the
entries it prints, moved to the paths a device uses, are the templates.
Variants are collected the same way: the device certificate without its key,
issued by another CA, and a damaged NSS database and PEM file for the
collection errors.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bench import certs
from bench.cli import run_cli
from collector.device import identify_device

DEVICE_CA_NAME = "Example Device CA"
LEGACY_CA_NAME = "Example Legacy Device CA"
PERSONAL_CA_NAME = "Personal Mail CA"
# Subject CN of the personal certificate, replaced by a user name on every device.
PERSONAL_NAME = "Jane Doe"

# Certificate locations on a device: the system NSS database, which rules without paths
# search, and the folder of the VPN client's certificate and key.
NSSDB = "/etc/pki/nssdb"
VPN_DIRECTORY = "/etc/corp/vpn"

# Identity of the device that the templates are collected for, replaced on every device.
TEMPLATE_HOSTNAME = "template-host"
TEMPLATE_SERIAL = "PF0TEMPLATE1"


@dataclass
class Templates:
    """Certificate and error entries of collected facts, relocated to the paths a device uses."""

    collector: dict[str, Any]
    device: dict[str, Any]
    device_no_key: dict[str, Any]
    device_other_ca: dict[str, Any]
    ca: dict[str, Any]
    personal: dict[str, Any]
    vpn: dict[str, Any]
    nssdb_error: dict[str, Any]
    vpn_file_error: dict[str, Any]
    serial_error: dict[str, Any]


def build_templates(work: Path, home: Path, at: dt.datetime) -> tuple[Templates, str]:
    """Build the template certificates, store the signing CA in ``home`` and collect them.

    Returns the templates and the id of the stored CA.
    """
    certs.require_nss_tools()
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / "transport.p12"

    device_ca = certs.make_ca(DEVICE_CA_NAME, at - dt.timedelta(days=730))
    legacy_ca = certs.make_ca(LEGACY_CA_NAME, at - dt.timedelta(days=3000))
    personal_ca = certs.make_ca(PERSONAL_CA_NAME, at - dt.timedelta(days=1000), organization="Example Mail")
    ca_file = work / "device-ca.pem"
    ca_file.write_bytes(device_ca.cert_pem())
    ca_id = orjson.loads(run_cli(home, "ca", "add", "--name", DEVICE_CA_NAME, str(ca_file)))["id"]

    not_before = at - dt.timedelta(days=100)
    device_key = certs.rsa_key()
    device_name = certs.name(f"{TEMPLATE_SERIAL}_corp")
    device_sans = [f"{TEMPLATE_HOSTNAME}.corp.example", TEMPLATE_HOSTNAME]
    device = certs.issue(
        device_ca,
        device_name,
        device_key,
        not_before,
        not_before + dt.timedelta(days=365),
        dns_names=device_sans,
    )
    device_other_ca = certs.issue(
        legacy_ca,
        device_name,
        device_key,
        not_before,
        not_before + dt.timedelta(days=365),
        dns_names=device_sans,
    )
    vpn = certs.issue(
        device_ca,
        certs.name(f"{TEMPLATE_SERIAL}_vpn"),
        certs.ec_key(),
        not_before,
        not_before + dt.timedelta(days=90),
        dns_names=[f"{TEMPLATE_HOSTNAME}.vpn.corp.example"],
    )
    personal = certs.issue(
        personal_ca,
        certs.name(PERSONAL_NAME, "Example Mail"),
        certs.ec_key(),
        not_before,
        not_before + dt.timedelta(days=730),
        emails=["jane.doe@mail.example"],
        email_protection=True,
    )

    nssdb = certs.create_nssdb(work / "nssdb")
    certs.import_key_pair(nssdb, device, "corp-device", scratch)
    certs.add_certificate(nssdb, device_ca.cert, DEVICE_CA_NAME, "CT,,", scratch)
    certs.import_key_pair(nssdb, personal, "jane-doe-mail", scratch)
    # The same certificate without its key, and the certificate issued by the legacy CA.
    nssdb_no_key = certs.create_nssdb(work / "nssdb-no-key")
    certs.add_certificate(nssdb_no_key, device.cert, "corp-device", ",,", scratch)
    nssdb_other_ca = certs.create_nssdb(work / "nssdb-other-ca")
    certs.import_key_pair(nssdb_other_ca, device_other_ca, "corp-device", scratch)
    # A damaged database: cert9.db is not an SQLite file.
    nssdb_damaged = certs.create_nssdb(work / "nssdb-damaged")
    (work / "nssdb-damaged" / "cert9.db").write_bytes(b"not a database\n" * 64)

    vpn_directory = work / "vpn"
    vpn_directory.mkdir()
    (vpn_directory / "client.pem").write_bytes(vpn.cert_pem())
    (vpn_directory / "client.key").write_bytes(vpn.key_pem())
    os.chmod(vpn_directory / "client.key", 0o600)
    vpn_damaged = work / "vpn-damaged"
    vpn_damaged.mkdir()
    # A certificate cut short, as a failed copy leaves it.
    (vpn_damaged / "client.pem").write_bytes(vpn.cert_pem()[:300] + b"\n-----END CERTIFICATE-----\n")
    (vpn_damaged / "client.key").write_bytes(vpn.key_pem())

    relocations = {
        str(work / "nssdb-no-key"): NSSDB,
        str(work / "nssdb-other-ca"): NSSDB,
        str(work / "nssdb-damaged"): NSSDB,
        str(work / "nssdb"): NSSDB,
        str(vpn_damaged): VPN_DIRECTORY,
        str(vpn_directory): VPN_DIRECTORY,
    }

    def collected(*locations: str) -> dict[str, Any]:
        raw = run_cli(
            home,
            "collect",
            "--hostname",
            TEMPLATE_HOSTNAME,
            "--serial-number",
            TEMPLATE_SERIAL,
            *locations,
        )
        document: dict[str, Any] = relocate(orjson.loads(raw), relocations)
        return document

    main = collected("--nssdb", nssdb, "--path", str(vpn_directory))
    by_fingerprint = {entry["fingerprint_sha256"]: entry for entry in main["certificates"]}
    no_key = collected("--nssdb", nssdb_no_key)
    other_ca = collected("--nssdb", nssdb_other_ca)
    damaged = collected("--nssdb", nssdb_damaged, "--path", str(vpn_damaged))
    for facts, name in ((main, "templates"), (no_key, "no-key"), (other_ca, "other-CA")):
        if facts["errors"]:
            raise RuntimeError(f"collecting the {name} certificates reported errors: {facts['errors']}")

    templates = Templates(
        collector=main["collector"],
        device=by_fingerprint[_fingerprint(device.cert)],
        device_no_key=only(no_key["certificates"]),
        device_other_ca=only(other_ca["certificates"]),
        ca=by_fingerprint[_fingerprint(device_ca.cert)],
        personal=by_fingerprint[_fingerprint(personal.cert)],
        vpn=by_fingerprint[_fingerprint(vpn.cert)],
        nssdb_error=only([error for error in damaged["errors"] if error["source"] == "nssdb"]),
        vpn_file_error=only([error for error in damaged["errors"] if error["source"] == "pem"]),
        serial_error=_serial_error(work),
    )
    return templates, ca_id


def _serial_error(work: Path) -> dict[str, Any]:
    """Return the collector's error for a device whose firmware has no serial number, at the real paths."""
    empty_sysfs = work / "sysfs"
    empty_proc = work / "proc"
    empty_sysfs.mkdir()
    empty_proc.mkdir()
    _, errors = identify_device(TEMPLATE_HOSTNAME, sysfs_root=str(empty_sysfs), proc_root=str(empty_proc))
    (error,) = errors
    document: dict[str, Any] = relocate(
        error.model_dump(mode="json"), {str(empty_sysfs): "/sys", str(empty_proc): "/proc"}
    )
    return document


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def only(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if len(items) != 1:
        raise RuntimeError(f"expected one collected entry, found {len(items)}: {items}")
    return items[0]


def relocate(value: Any, prefixes: dict[str, str]) -> Any:
    """Replace the temporary directories in every string of a JSON value with the device paths.

    ``prefixes`` is checked in insertion order, so a longer directory that
    starts with a shorter one must come first.
    """
    if isinstance(value, dict):
        return {key: relocate(item, prefixes) for key, item in value.items()}
    if isinstance(value, list):
        return [relocate(item, prefixes) for item in value]
    if isinstance(value, str):
        for old, new in prefixes.items():
            value = value.replace(f"sql:{old}", new).replace(old, new)
        return value
    return value
