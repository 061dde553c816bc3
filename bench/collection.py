"""Collection measurements: a folder of PEM files and an NSS database, each against a bare cryptography loop."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench import certs
from bench.cli import certposture_command, run_cli
from certposture import posture
from certposture.store import Store

HOSTNAME = "bench-host"
SERIAL_NUMBER = "BENCH0001"


@dataclass(frozen=True)
class CollectionSet:
    """The inputs of the collection benchmark: a home with the CA stored, a PEM folder and an NSS database."""

    home: Path
    ca: x509.Certificate
    pem_directory: Path
    pem_files: int
    nssdb: str
    nss_ders: list[bytes]
    empty_directory: Path
    seconds: float


def build_collection_set(
    directory: Path, pem_files: int, nss_certificates: int, at: dt.datetime
) -> CollectionSet:
    """Issue ``pem_files`` certificates from one CA, one per PEM file, and put the first ``nss_certificates`` in NSS.

    The leaves share one EC P-256 key, because generating a key per
    certificate would only slow the setup. The CA is stored in the home, so
    the collector checks every certificate's signature.
    """
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca("Bench Collection CA", at - dt.timedelta(days=30))
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    home = directory / "home"
    run_cli(home, "ca", "add", "--name", "Bench Collection CA", str(ca_file))

    leaf_key = certs.ec_key()
    pem_directory = directory / "pem"
    pem_directory.mkdir()
    issued: list[x509.Certificate] = []
    for index in range(pem_files):
        leaf = certs.issue(
            ca,
            certs.name(f"device-{index:05d}_corp"),
            leaf_key,
            at - dt.timedelta(days=10),
            at + dt.timedelta(days=355),
            dns_names=[f"device-{index:05d}.corp.example"],
        )
        (pem_directory / f"cert-{index:05d}.pem").write_bytes(leaf.cert_pem())
        issued.append(leaf.cert)

    in_nss = issued[:nss_certificates]
    nssdb = certs.create_nssdb(directory / "nssdb")
    certs.import_certificates(nssdb, in_nss, "device", directory / "transport.p12")
    empty_directory = directory / "empty"
    empty_directory.mkdir()
    return CollectionSet(
        home=home,
        ca=ca.cert,
        pem_directory=pem_directory,
        pem_files=pem_files,
        nssdb=nssdb,
        nss_ders=[certificate.public_bytes(serialization.Encoding.DER) for certificate in in_nss],
        empty_directory=empty_directory,
        seconds=time.perf_counter() - started,
    )


def collect_arguments(*locations: str) -> list[str]:
    return ["collect", *locations, "--hostname", HOSTNAME, "--serial-number", SERIAL_NUMBER]


def time_cli_collect(home: Path, *locations: str) -> float:
    """Time one ``certposture --home HOME collect LOCATIONS`` end to end, with the facts sent to /dev/null."""
    argv = [*certposture_command(), "--home", str(home), *collect_arguments(*locations)]
    start = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(
            f"certposture collect exited with {completed.returncode}: {completed.stderr.decode(errors='replace')}"
        )
    return seconds


def time_in_process_collect(home: Path, paths: list[str], nssdbs: list[str]) -> tuple[float, int]:
    """Time ``certposture.posture.collect_facts`` in this process and return the seconds and the certificate count."""
    store = Store(home)
    start = time.perf_counter()
    facts = posture.collect_facts(
        store,
        rule_id=None,
        paths=paths,
        nssdbs=nssdbs,
        hostname=HOSTNAME,
        serial_number=SERIAL_NUMBER,
    )
    seconds = time.perf_counter() - start
    signed = sum(1 for certificate in facts.certificates if certificate.signed_by)
    if facts.errors or signed != len(facts.certificates):
        raise RuntimeError(
            f"collection reported {len(facts.errors)} error(s) and {len(facts.certificates) - signed} "
            "certificate(s) not signed by the stored CA"
        )
    return seconds, len(facts.certificates)


def time_pem_floor(directory: Path, ca: x509.Certificate) -> float:
    """Time listing the folder, reading each file, loading its certificate and verifying its signature."""
    start = time.perf_counter()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            data = handle.read()
        x509.load_pem_x509_certificate(data).verify_directly_issued_by(ca)
    return time.perf_counter() - start


def time_der_floor(ders: list[bytes], ca: x509.Certificate) -> float:
    """Time loading each DER certificate held in memory and verifying its signature."""
    start = time.perf_counter()
    for der in ders:
        x509.load_der_x509_certificate(der).verify_directly_issued_by(ca)
    return time.perf_counter() - start
