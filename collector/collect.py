"""Collect the facts document from the given locations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from collector import __version__
from collector.device import identify_device
from collector.facts import SCHEMA_VERSION, Certificate, CollectionError, CollectorInfo, Facts
from collector.signers import Signer
from collector.sources.nssdb import collect_nssdb, database_directory
from collector.sources.pem import collect_pem


@dataclass(frozen=True)
class Locations:
    """Certificate locations to search.

    ``paths`` are PEM or DER files and directories; ``nssdbs`` are NSS
    database directories, given as ``DIR`` or ``sql:DIR``. Empty locations
    collect no certificates: the caller picks defaults such as
    ``collector.sources.nssdb.DEFAULT_NSSDB``.
    """

    paths: tuple[str, ...] = ()
    nssdbs: tuple[str, ...] = ()


def collect(
    locations: Locations,
    signers: Sequence[Signer],
    *,
    hostname: str | None = None,
    serial_number: str | None = None,
    now: datetime | None = None,
) -> Facts:
    """Collect certificates from every location, identify the device and build the facts.

    ``hostname`` and ``serial_number`` override what the system reports;
    ``now``, an aware datetime, replaces the current time as ``collected_at``.
    Raises ValueError for an empty override.
    """
    certificates: list[Certificate] = []
    errors: list[CollectionError] = []

    if locations.paths:
        pem = collect_pem(locations.paths, signers)
        certificates += pem.certificates
        errors += pem.errors
    for nssdb in _distinct_nssdbs(locations.nssdbs):
        result = collect_nssdb(nssdb, signers)
        certificates += result.certificates
        errors += result.errors

    device, device_errors = identify_device(hostname, serial_number)
    errors += device_errors

    return Facts(
        schema_version=SCHEMA_VERSION,
        collected_at=now if now is not None else datetime.now(UTC),
        collector=CollectorInfo(version=__version__),
        device=device,
        certificates=_unique(certificates),
        errors=errors,
    )


def _unique(certificates: Sequence[Certificate]) -> list[Certificate]:
    """Drop repeats of a certificate at the same location, keeping the first.

    The same certificate at two locations stays listed once per location,
    because a rule matches only the locations it names.
    """
    seen: set[tuple[str, str, str]] = set()
    unique: list[Certificate] = []
    for certificate in certificates:
        key = (certificate.source.type, certificate.source.location, certificate.fingerprint_sha256)
        if key not in seen:
            seen.add(key)
            unique.append(certificate)
    return unique


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
