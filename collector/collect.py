"""Collect the facts document from the given locations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from collector import __version__
from collector.device import checked_serial_override, identify_device, resolve_hostname
from collector.facts import (
    NONCE_PATTERN,
    SCHEMA_VERSION,
    Certificate,
    CollectionError,
    CollectionNote,
    CollectorInfo,
    Device,
    Facts,
)
from collector.platforms import TRUST_STORES, Platform, detect_platform, require_supported
from collector.proofs import KeyMaterial, PasswordPrompt, add_proofs
from collector.signers import Signer
from collector.sources import SourceResult
from collector.sources.nssdb import collect_nssdb, database_directory
from collector.sources.pem import DEFAULT_LIMITS, PemLimits, collect_pem


@dataclass(frozen=True)
class Locations:
    """Certificate locations to search.

    ``paths`` are PEM or DER files and directories; ``nssdbs`` are NSS
    database directories, given as ``DIR`` or ``sql:DIR``; ``trust_stores``
    are ``system`` and ``user``, read on macOS and Windows only. Empty
    locations collect no certificates: the caller picks defaults such as
    ``collector.sources.nssdb.DEFAULT_NSSDB``.
    """

    paths: tuple[str, ...] = ()
    nssdbs: tuple[str, ...] = ()
    trust_stores: tuple[str, ...] = ()


def collect(
    locations: Locations,
    signers: Sequence[Signer],
    *,
    hostname: str | None = None,
    serial_number: str | None = None,
    now: datetime | None = None,
    platform: Platform | None = None,
    pem_limits: PemLimits = DEFAULT_LIMITS,
    challenge: str | None = None,
    nss_password: str | None = None,
    password_prompt: PasswordPrompt | None = None,
) -> Facts:
    """Collect certificates from every location, identify the device and build the facts.

    ``hostname`` and ``serial_number`` override what the system reports;
    ``now``, an aware datetime, replaces the current time as ``collected_at``;
    ``platform`` replaces the detected operating system family;
    ``pem_limits`` bounds each PEM or DER file read from ``locations.paths``.
    ``challenge``, a nonce, adds ``proofs``: a signature over the nonce and
    the document by each certificate's private key that can sign (see
    ``collector.proofs``); ``nss_password`` opens NSS databases that have a
    password, and ``password_prompt`` is asked for one when it is not given. Raises
    ``UnsupportedPlatformError`` on iOS, Android and ChromeOS, and ValueError
    for an empty override or a trust store the platform does not have.
    """
    family = detect_platform() if platform is None else platform
    require_supported(family)
    _check_trust_stores(family, locations.trust_stores)

    if challenge is not None and not re.fullmatch(NONCE_PATTERN, challenge):
        raise ValueError(
            f"challenge {challenge!r} is not a nonce: give 16 to 128 characters from A-Z, a-z, 0-9, - and _, "
            "as `certposture challenge` prints"
        )
    material = KeyMaterial() if challenge is not None else None
    results: list[SourceResult] = []
    if locations.paths:
        results.append(collect_pem(locations.paths, signers, pem_limits, material))
    for nssdb in _distinct_nssdbs(locations.nssdbs):
        results.append(collect_nssdb(nssdb, signers, material))
    if locations.trust_stores:
        results.append(_collect_trust_stores(family, _distinct(locations.trust_stores), signers))

    device, device_errors, device_notes = _identify(family, hostname, serial_number)

    certificates: list[Certificate] = [
        certificate for result in results for certificate in result.certificates
    ]
    errors: list[CollectionError] = [error for result in results for error in result.errors]
    notes: list[CollectionNote] = [note for result in results for note in result.notes]
    facts = Facts(
        schema_version=SCHEMA_VERSION,
        collected_at=now if now is not None else datetime.now(UTC),
        collector=CollectorInfo(version=__version__),
        device=device,
        certificates=_unique(certificates),
        errors=errors + device_errors,
        notes=notes + device_notes,
    )
    if challenge is None or material is None:
        return facts
    return add_proofs(facts, challenge, material, nss_password=nss_password, prompt=password_prompt)


def _check_trust_stores(family: Platform, trust_stores: Sequence[str]) -> None:
    available = TRUST_STORES.get(family, ())
    for store in trust_stores:
        if store in available:
            continue
        if not available:
            raise ValueError(
                f"trust store {store!r} cannot be read on {family}: trust stores exist on mac and windows; "
                "on linux give PEM files with --path or an NSS database with --nssdb"
            )
        raise ValueError(f"trust store {store!r} does not exist on {family}; use {', '.join(available)}")


def _collect_trust_stores(
    family: Platform, trust_stores: Sequence[str], signers: Sequence[Signer]
) -> SourceResult:
    # Imported here so that each platform loads only its own backend.
    if family == "mac":
        from collector.sources.keychain import collect_keychain

        return collect_keychain(trust_stores, signers)
    from collector.sources.windows import collect_windows

    return collect_windows(trust_stores, signers)


def _identify(
    family: Platform, hostname: str | None, serial_number: str | None
) -> tuple[Device, list[CollectionError], list[CollectionNote]]:
    if family == "mac":
        return _identify_mac(hostname, serial_number)
    if family == "windows":
        return _identify_windows(hostname, serial_number)
    device, errors = identify_device(hostname, serial_number, system="Linux")
    return device, errors, []


def _identify_mac(
    hostname: str | None, serial_number: str | None
) -> tuple[Device, list[CollectionError], list[CollectionNote]]:
    from collector.device_mac import read_mac_os, read_mac_serial_number

    device_hostname, errors = resolve_hostname(hostname)
    if serial_number is not None:
        device_serial: str | None = checked_serial_override(serial_number)
    else:
        device_serial, serial_error = read_mac_serial_number()
        if serial_error is not None:
            errors.append(serial_error)
    operating_system, os_error = read_mac_os()
    if os_error is not None:
        errors.append(os_error)
    return Device(hostname=device_hostname, serial_number=device_serial, os=operating_system), errors, []


def _identify_windows(
    hostname: str | None, serial_number: str | None
) -> tuple[Device, list[CollectionError], list[CollectionNote]]:
    from collector.device_windows import read_windows_identity, system_account_note

    device_hostname, errors = resolve_hostname(hostname)
    override = checked_serial_override(serial_number) if serial_number is not None else None
    identity = read_windows_identity()
    if override is None:
        device_serial = identity.serial_number
        errors += identity.errors
    else:
        # The firmware serial number is not needed, so only the other identity errors count.
        device_serial = override
        errors += [error for error in identity.errors if error.location != "Win32_BIOS"]
    notes = [system_account_note()] if identity.running_as_system else []
    return Device(hostname=device_hostname, serial_number=device_serial, os=identity.os), errors, notes


# Ranks of key evidence: of two copies of one certificate at one location, the stronger is kept.
_KEY_EVIDENCE = {"present": 2, "unverified": 1, "missing": 0}


def _unique(certificates: Sequence[Certificate]) -> list[Certificate]:
    """Drop repeats of a certificate at the same location, keeping the copy with the strongest key evidence.

    A store can list one certificate twice, once with its key and once
    without, and the order must not decide the outcome. The same
    certificate at two locations stays listed once per location, because a
    rule matches only the locations it names.
    """
    kept: dict[tuple[str, str, str], Certificate] = {}
    for certificate in certificates:
        key = (certificate.source.type, certificate.source.location, certificate.fingerprint_sha256)
        previous = kept.get(key)
        if previous is None or (
            _KEY_EVIDENCE[certificate.private_key.status] > _KEY_EVIDENCE[previous.private_key.status]
        ):
            kept[key] = certificate
    return list(kept.values())


def _distinct(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _distinct_nssdbs(specs: Sequence[str]) -> list[str]:
    """Keep the first of the specs naming the same database, such as ``/x`` and ``sql:/x``."""
    distinct: dict[str, str] = {}
    for spec in specs:
        try:
            directory = database_directory(spec)
        except ValueError:
            directory = spec
        distinct.setdefault(directory, spec)
    return list(distinct.values())
