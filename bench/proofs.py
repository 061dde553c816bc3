"""Measure what proof of possession costs: signing in collect, verifying and evaluating (``make bench-proofs``).

One device has four certificates (two RSA 2048, two EC P-256), once as PEM
files and once in an NSS database without a password. The script times, in
this process, the median of several runs of:

- ``collect`` without and with ``challenge`` (PEM keys sign in process; NSS
  keys sign in one child process per database);
- ``ProofVerifier.verify`` on the collected facts;
- one policy evaluation without and with ``require_proof``.

It writes ``bench/proofs.md`` and puts the same text into ``bench/RESULTS.md``
between the markers that ``bench/report.py`` writes, so ``make bench`` keeps it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import machine
from bench.report import PROOFS_BEGIN, PROOFS_END, PROOFS_FINDINGS
from certposture import engine
from certposture.challenge import issue_challenge, nonce_problem
from certposture.proofcheck import ProofVerifier
from certposture.rules import validate_rules
from certposture.signing import parse_signing_certificate
from certposture.store import Store
from collector.collect import Locations, collect
from collector.facts import Facts
from collector.signers import Signer
from tests.certgen import CertKey, create_nssdb, make_ca, make_leaf

RESULTS = Path(__file__).with_name("RESULTS.md")
REPOSITORY = Path(__file__).resolve().parent.parent
RUNS = 31
NSS_RUNS = 11


def _median_ms(action: Callable[[], object], runs: int) -> float:
    action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(work: Path) -> list[tuple[str, int, float]]:
    """Return (measurement, runs, median milliseconds) rows."""
    ca = make_ca("Bench Proof CA")
    store = Store(work / "home")
    store.add_signing_certificate(parse_signing_certificate(ca.cert_pem(), "ca.pem"), None, False, "ca")
    leaves: list[CertKey] = [
        make_leaf(ca, f"device-{index}", key_type="rsa" if index % 2 else "ec") for index in range(4)
    ]
    paths: list[str] = []
    for index, leaf in enumerate(leaves):
        paths.append(str(leaf.write_cert(work / f"device-{index}.pem")))
        paths.append(str(leaf.write_key(work / f"device-{index}.key")))
    database = create_nssdb(work / "nssdb")
    for index, leaf in enumerate(leaves):
        database.import_key_pair(leaf, f"device-{index}")
    rule = {
        "name": "bench",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": "ca",
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": paths},
        },
    }
    rules, problems = validate_rules([rule], store.signing_certificate_exists)
    assert not problems, problems
    store.add_rules(rules)
    signers = [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]
    nonce = issue_challenge(store).nonce

    def collect_pem(challenge: str | None) -> Callable[[], Facts]:
        locations = Locations(paths=tuple(paths))
        return lambda: collect(locations, signers, hostname="h", serial_number="s", challenge=challenge)

    def collect_nss(challenge: str | None) -> Callable[[], Facts]:
        locations = Locations(nssdbs=(str(database.directory),))
        return lambda: collect(locations, signers, hostname="h", serial_number="s", challenge=challenge)

    facts = collect_pem(nonce)()
    assert facts.proofs is not None and len(facts.proofs.certificates) == 4, facts.proofs
    verifier = ProofVerifier(nonce=nonce, nonce_problem=nonce_problem(store, nonce), signers=signers)
    verification = verifier.verify(facts)
    plain = engine.Evaluator(engine.build_config(store.list_rules(), store.list_signing_certificates(), None))
    proved = engine.Evaluator(
        engine.build_config(store.list_rules(), store.list_signing_certificates(), None, require_proof=True)
    )
    assert proved.evaluate(facts, verification)[0]["status"] == "passed"

    return [
        ("collect, 4 PEM certificates, no challenge", RUNS, _median_ms(collect_pem(None), RUNS)),
        ("collect, 4 PEM certificates, with challenge", RUNS, _median_ms(collect_pem(nonce), RUNS)),
        ("collect, 4 NSS certificates, no challenge", NSS_RUNS, _median_ms(collect_nss(None), NSS_RUNS)),
        ("collect, 4 NSS certificates, with challenge", NSS_RUNS, _median_ms(collect_nss(nonce), NSS_RUNS)),
        ("verify 4 proofs (ProofVerifier.verify)", RUNS, _median_ms(lambda: verifier.verify(facts), RUNS)),
        ("evaluate 1 rule, no require_proof", RUNS, _median_ms(lambda: plain.evaluate(facts), RUNS)),
        (
            "evaluate 1 rule, require_proof with verdicts",
            RUNS,
            _median_ms(lambda: proved.evaluate(facts, verification), RUNS),
        ),
    ]


def render(rows: list[tuple[str, int, float]]) -> str:
    lines = [
        "## Proof of possession",
        "",
        f"Measured by `make bench-proofs` (bench/proofs.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine.cpu_model()}, {os.cpu_count()} cores, NSS {machine.nss_version()}, "
        f"commit {machine.git_commit(REPOSITORY)}. One device with four certificates (two RSA 2048, two EC P-256); "
        "each figure is the median of the runs in process, after one warm-up run. "
        "Collection includes reading the device identity. Most of the PEM collection time is "
        "cryptography loading the two RSA private keys, which it checks on load (about 35 ms each here).",
        "",
        "| measurement | runs | median ms |",
        "|---|---|---|",
        *[f"| {name} | {runs} | {value:.2f} |" for name, runs, value in rows],
        "",
    ]
    return "\n".join(lines)


def update_results(text: str) -> None:
    """Replace the proof section of RESULTS.md, or append it when the file has none."""
    if not RESULTS.is_file():
        return
    current = RESULTS.read_text(encoding="utf-8")
    section = f"{PROOFS_BEGIN}\n{text}{PROOFS_END}\n"
    if PROOFS_BEGIN in current and PROOFS_END in current:
        start = current.index(PROOFS_BEGIN)
        end = current.index(PROOFS_END) + len(PROOFS_END) + 1
        current = current[:start] + section + current[end:]
    else:
        current = current.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(current, encoding="utf-8")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="certposture-bench-proofs-") as scratch:
        rows = measure(Path(scratch))
    text = render(rows)
    PROOFS_FINDINGS.write_text(text, encoding="utf-8")
    update_results(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
