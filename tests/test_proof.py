"""Proof of possession: `challenge`, `collect --challenge` and `evaluate --require-proof`, end to end.

Certificates and keys are generated per test; the proofs are made by the
collector and checked by the evaluator with real signatures. Tampering is
done on the JSON a device would send.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from collector.facts import load_facts
from collector.proofs import document_digest, proof_message, sign_with_key
from tests.certgen import CLIENT_AUTH, EMAIL_PROTECTION, CertKey, make_ca, make_leaf
from tests.test_end_to_end import HOSTNAME, SERIAL, Cli, pem_pair

Document = dict[str, Any]

PROOF_CODES = {
    "proof_missing",
    "proof_invalid",
    "proof_facts_altered",
    "proof_nonce_invalid",
    "proof_fingerprint_mismatch",
}


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "home", work, capsys)


@pytest.fixture
def ca() -> CertKey:
    return make_ca("Example Device CA")


class Device:
    """A device with one client certificate and its key in PEM files, and a rule that names them."""

    def __init__(self, cli: Cli, ca: CertKey, key_type: str = "ec") -> None:
        self.cli = cli
        self.ca_id = cli.add_ca(ca)
        self.leaf = make_leaf(ca, "dev1", sans=["dev1.corp.example"], eku=[CLIENT_AUTH], key_type=key_type)  # type: ignore[arg-type]
        self.cert_path, self.key_path = pem_pair(cli, self.leaf)
        cli.add_rule(self.ca_id, cn="dev1", locations={"paths": [self.cert_path, self.key_path]})

    def challenge(self, *args: str) -> str:
        code, out, err = self.cli.run("challenge", "--format", "nonce", *args)
        assert code == 0, err
        return out.strip()

    def collect(self, nonce: str | None, *paths: str) -> Document:
        arguments = ["collect", "--hostname", HOSTNAME, "--serial-number", SERIAL]
        for path in paths or (self.cert_path, self.key_path):
            arguments += ["--path", path]
        if nonce is not None:
            arguments += ["--challenge", nonce]
        code, out, err = self.cli.run(*arguments)
        assert code == 0, err
        document: Document = json.loads(out)
        return document

    def evaluate(self, facts: Document, nonce: str, *extra: str) -> tuple[int, Document, str]:
        path = self.cli.work / "facts.json"
        path.write_text(json.dumps(facts))
        code, out, err = self.cli.run("evaluate", str(path), "--require-proof", nonce, *extra)
        assert "Traceback" not in err
        return code, json.loads(out), err


def candidate_codes(document: Document) -> list[str]:
    return [
        reason["code"]
        for result in document["results"]
        for candidate in result["candidates"]
        for reason in candidate["reasons"]
    ]


def proof_reasons(document: Document) -> list[dict[str, Any]]:
    return [
        reason
        for result in document["results"]
        for candidate in result["candidates"]
        for reason in candidate["reasons"]
        if reason["condition"] == "proof"
    ]


def resign(facts: Document, key: Any) -> Document:
    """Sign ``facts`` again as a device holding ``key`` would: a new digest and new signatures."""
    document = copy.deepcopy(facts)
    proofs = document.pop("proofs")
    digest = document_digest(load_facts(json.dumps(document)))
    proofs["document_sha256"] = digest
    for proof in proofs["certificates"]:
        message = proof_message(proofs["nonce"], digest, proof["fingerprint_sha256"])
        proof["signature"] = base64.b64encode(sign_with_key(key, message)[1]).decode()
    document["proofs"] = proofs
    return document


# challenge


def test_challenge_prints_stored_nonce_with_expiry(cli: Cli) -> None:
    code, out, err = cli.run("challenge", "--ttl", "10m")
    assert code == 0, err
    document = json.loads(out)
    assert list(document) == ["nonce", "issued_at", "expires_at"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", document["nonce"])
    issued = time.strptime(document["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    expires = time.strptime(document["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert time.mktime(expires) - time.mktime(issued) == 600
    code, out, _ = cli.run("challenge")
    assert json.loads(out)["nonce"] != document["nonce"]


@pytest.mark.parametrize("ttl", ["0s", "2d", "5", "5 m", "-1m", "1w", ""])
def test_challenge_rejects_bad_ttl(cli: Cli, ttl: str) -> None:
    code, out, err = cli.run("challenge", "--ttl", ttl)
    assert code == 2
    assert out == ""
    assert "--ttl" in err
    assert len(err.strip().splitlines()) == 1


# A valid proof


@pytest.mark.parametrize(
    ("key_type", "algorithm"), [("rsa", "rsa-pss-sha256"), ("ec", "ecdsa-sha256"), ("ed25519", "ed25519")]
)
def test_valid_proof_passes(cli: Cli, ca: CertKey, key_type: str, algorithm: str) -> None:
    device = Device(cli, ca, key_type)
    nonce = device.challenge()
    facts = device.collect(nonce)

    (proof,) = facts["proofs"]["certificates"]
    assert facts["proofs"]["nonce"] == nonce
    assert proof["algorithm"] == algorithm
    assert proof["fingerprint_sha256"] == device.leaf.fingerprint
    assert base64.b64decode(proof["certificate"]) == device.leaf.cert_der()
    assert facts["proofs"]["errors"] == []

    code, results, _ = device.evaluate(facts, nonce)
    assert code == 0
    assert results["results"][0]["status"] == "passed"


def test_proof_signature_is_standard(cli: Cli, ca: CertKey) -> None:
    """The signature verifies with cryptography over the documented message, so other verifiers can check it."""
    device = Device(cli, ca, "rsa")
    nonce = device.challenge()
    facts = device.collect(nonce)
    (proof,) = facts["proofs"]["certificates"]
    without_proofs = {key: value for key, value in facts.items() if key != "proofs"}
    canonical = json.dumps(without_proofs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = __import__("hashlib").sha256(canonical.encode()).hexdigest()
    assert facts["proofs"]["document_sha256"] == digest
    message = f"certposture-proof-v1\n{nonce}\n{digest}\n{device.leaf.fingerprint}\n".encode()
    public_key = device.leaf.cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(
        base64.b64decode(proof["signature"]),
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_collect_without_challenge_has_no_proofs(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    assert "proofs" not in device.collect(None)


def test_explain_shows_proof_condition(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    path = cli.work / "facts.json"
    path.write_text(json.dumps(device.collect(nonce)))
    code, out, err = cli.run("explain", str(path), "--require-proof", nonce, "--format", "json")
    assert code == 0, err
    conditions = json.loads(out)["results"][0]["candidates"][0]["conditions"]
    assert conditions[0] == {
        "condition": "proof",
        "status": "passed",
        "expected": {"status": "verified", "nonce": nonce},
        "actual": {"status": "verified"},
    }


# Each field altered after signing


def _leaves(value: Any, pointer: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*pointer, key))]
    if isinstance(value, list):
        return [(pointer, value)] + [
            leaf for index, item in enumerate(value) for leaf in _leaves(item, (*pointer, index))
        ]
    return [(pointer, value)]


# Values that keep the facts valid, so the change reaches the proof check instead of failing validation.
_REPLACEMENTS: dict[str, Any] = {
    "schema_version": None,
    "collected_at": "2026-01-02T03:04:05Z",
    "not_before": "2020-01-01T00:00:00Z",
    "not_after": "2099-01-01T00:00:00Z",
    "family": "mac",
    "type": "nssdb",
    "algorithm": "rsa",
    # private_key.status changes together with present, in _change_at.
    "status": None,
    "present": None,
    "fingerprint_sha256": "0" * 64,
    "size": 4096,
    "other_name_count": 3,
    "is_ca": True,
}


def _altered(value: Any, name: str | int) -> Any:
    if isinstance(name, str) and name in _REPLACEMENTS:
        return _REPLACEMENTS[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        if name in ("extended_key_usage",):
            return [*value, "1.3.6.1.5.5.7.3.4"]
        if name == "errors":
            return [*value, {"source": "pem", "location": "/x", "step": "open", "message": "gone"}]
        if name == "unverified_signers":
            return [{"id": "x", "status": "invalid", "signature_algorithm": "a", "reason": "r"}]
        if name == "notes":
            return [*value, {"source": "pem", "location": "/x", "message": "note"}]
        return [*value, "added"] if all(isinstance(item, str) for item in value) else None
    if value is None:
        return "added"
    return None


def _field_changes() -> list[tuple[str, Callable[[Document], None]]]:
    """One change per field of a collected facts document, named by its JSON pointer."""
    ca = make_ca("Field CA")
    leaf = make_leaf(ca, "dev1", sans=["dev1.corp.example"], eku=[CLIENT_AUTH])
    sample = {
        "schema_version": 1,
        "collected_at": "2026-12-04T19:00:00Z",
        "collector": {"version": "0.1.0"},
        "device": {
            "hostname": "h",
            "serial_number": "s",
            "os": {"family": "linux", "name": "n", "version": "1"},
        },
        "certificates": [
            {
                "source": {"type": "pem", "location": "/p", "label": None},
                "fingerprint_sha256": leaf.fingerprint,
                "subject": {"dn": "CN=dev1", "common_names": ["dev1"]},
                "issuer": {"dn": "CN=Field CA"},
                "serial_number": "0A",
                "not_before": "2026-01-01T00:00:00Z",
                "not_after": "2027-01-01T00:00:00Z",
                "subject_alternative_names": {
                    "dns": [],
                    "email": [],
                    "uri": [],
                    "ip": [],
                    "other_name_count": 0,
                },
                "extended_key_usage": [],
                "is_ca": False,
                "public_key": {"algorithm": "ec", "size": 256, "curve": "secp256r1"},
                "private_key": {"present": True, "status": "present", "location": "/p", "reason": None},
                "signed_by": [],
                "unverified_signers": [],
            }
        ],
        "errors": [],
        "notes": [],
    }
    changes: list[tuple[str, Callable[[Document], None]]] = []
    for pointer, value in _leaves(sample):
        if not pointer:
            continue
        name = pointer[-1]
        if _altered(value, name) is None and not (isinstance(name, str) and name in ("present",)):
            continue
        changes.append(("/" + "/".join(str(part) for part in pointer), _change_at(pointer, name)))
    return changes


def _change_at(pointer: tuple[str | int, ...], name: str | int) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        parent: Any = document
        for part in pointer[:-1]:
            parent = parent[part]
        if name == "present":
            parent["present"], parent["status"] = False, "unverified"
            return
        parent[name] = _altered(parent[name], name)

    return change


FIELD_CHANGES = _field_changes()


def _run(home: Path, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "certposture", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def signed_device(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Document, str]:
    """One home with a CA, a rule, a challenge and the facts that respond to it, shared by the field tests."""
    work = tmp_path_factory.mktemp("fields")
    home = work / "home"
    ca = make_ca("Example Device CA")
    leaf = make_leaf(ca, "dev1", sans=["dev1.corp.example"], eku=[CLIENT_AUTH])
    ca_path = ca.write_cert(work / "ca.pem")
    cert_path, key_path = leaf.write_cert(work / "client.pem"), leaf.write_key(work / "client.key")
    ca_id = json.loads(_run(home, "ca", "add", str(ca_path)))["id"]
    rule = {
        "name": "Corp device certificate",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            "cn": "dev1",
            "locations": {"paths": [str(cert_path), str(key_path)]},
        },
    }
    (work / "rule.json").write_text(json.dumps(rule))
    _run(home, "rules", "add", str(work / "rule.json"))
    nonce = _run(home, "challenge", "--format", "nonce").strip()
    collect = ["collect", "--hostname", HOSTNAME, "--serial-number", SERIAL, "--challenge", nonce]
    facts = json.loads(_run(home, *collect, "--path", str(cert_path), "--path", str(key_path)))
    return home, facts, nonce


def test_field_changes_cover_every_field() -> None:
    pointers = {pointer for pointer, _ in FIELD_CHANGES}
    for expected in (
        "/collected_at",
        "/collector/version",
        "/device/hostname",
        "/device/serial_number",
        "/device/os/family",
        "/device/os/name",
        "/device/os/version",
        "/certificates/0/source/location",
        "/certificates/0/fingerprint_sha256",
        "/certificates/0/subject/dn",
        "/certificates/0/subject/common_names",
        "/certificates/0/issuer/dn",
        "/certificates/0/serial_number",
        "/certificates/0/not_before",
        "/certificates/0/not_after",
        "/certificates/0/subject_alternative_names/dns",
        "/certificates/0/subject_alternative_names/other_name_count",
        "/certificates/0/extended_key_usage",
        "/certificates/0/is_ca",
        "/certificates/0/public_key/algorithm",
        "/certificates/0/public_key/size",
        "/certificates/0/private_key/present",
        "/certificates/0/private_key/location",
        "/certificates/0/signed_by",
        "/errors",
        "/notes",
    ):
        assert expected in pointers


@pytest.mark.parametrize(("pointer", "change"), FIELD_CHANGES, ids=[pointer for pointer, _ in FIELD_CHANGES])
def test_field_altered_after_signing_fails(
    signed_device: tuple[Path, Document, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pointer: str,
    change: Callable[[Document], None],
) -> None:
    home, facts, nonce = signed_device
    cli = Cli(home, tmp_path, capsys)
    altered = copy.deepcopy(facts)
    change(altered)
    if pointer == "/certificates/0/source/location":
        # Another path the rule names, so that the certificate stays a candidate.
        certificate = altered["certificates"][0]
        certificate["source"]["location"] = certificate["private_key"]["location"]
    assert altered != facts
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(altered))
    code, out, err = cli.run("evaluate", str(path), "--require-proof", nonce)
    assert "Traceback" not in err
    (result,) = json.loads(out)["results"]
    assert code != 0
    assert result["status"] != "passed"
    if pointer == "/device/os/family":
        assert result["status"] == "not_applicable"
    elif pointer == "/certificates/0/fingerprint_sha256":
        assert [reason["code"] for reason in proof_reasons(json.loads(out))] == ["proof_missing"]
    elif pointer == "/certificates/0/source/type":
        # An NSS certificate is outside the rule's PEM paths, so there is no candidate at all.
        assert result["candidates"] == []
    else:
        assert "proof_facts_altered" in candidate_codes(json.loads(out)), out


def test_unaltered_shared_facts_pass(
    signed_device: tuple[Path, Document, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control for the field tests: the same facts, unchanged, pass."""
    home, facts, nonce = signed_device
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    code, out, err = Cli(home, tmp_path, capsys).run("evaluate", str(path), "--require-proof", nonce)
    assert code == 0, err + out


def test_reformatted_facts_still_pass(cli: Cli, ca: CertKey) -> None:
    """The digest is over the canonical form: key order and white space do not matter."""
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    reordered = dict(reversed(list(facts.items())))
    code, _, _ = device.evaluate(reordered, nonce)
    assert code == 0


@pytest.mark.parametrize("field", ["extended_key_usage", "not_after", "subject"])
def test_key_holder_cannot_lie_about_certificate_fields(cli: Cli, ca: CertKey, field: str) -> None:
    """A device that has the key and signs altered facts still fails: the fields are read from the DER."""
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    certificate = facts["certificates"][0]
    if field == "extended_key_usage":
        certificate["extended_key_usage"] = [*certificate["extended_key_usage"], "1.3.6.1.5.5.7.3.4"]
    elif field == "not_after":
        certificate["not_after"] = "2099-01-01T00:00:00Z"
    else:
        certificate["subject"] = {"dn": "CN=admin", "common_names": ["admin"]}
    code, results, _ = device.evaluate(resign(facts, device.leaf.key), nonce)
    assert code == 1
    (reason,) = proof_reasons(results)
    assert reason["code"] == "proof_facts_altered"
    assert field in reason["message"]


def test_signed_by_is_recomputed_from_der(cli: Cli, ca: CertKey) -> None:
    """A certificate from another CA, whose holder claims the stored CA signed it, fails the signer condition."""
    device = Device(cli, ca)
    other_ca = make_ca("Example Device CA")  # same name, different key
    rogue = make_leaf(other_ca, "dev1", sans=["dev1.corp.example"], eku=[CLIENT_AUTH])
    cert_path, key_path = pem_pair(cli, rogue, "rogue")
    nonce = device.challenge()
    facts = device.collect(nonce, cert_path, key_path)
    assert facts["certificates"][0]["signed_by"] == []
    cli.add_rule(device.ca_id, cn="dev1", locations={"paths": [cert_path, key_path]}, name="rogue rule")

    facts["certificates"][0]["signed_by"] = [device.ca_id]
    facts["certificates"][0]["unverified_signers"] = []
    code, results, _ = device.evaluate(resign(facts, rogue.key), nonce, "--rule", _rule_id(cli, "rogue rule"))
    assert code == 1
    assert candidate_codes(results) == ["signer_mismatch"]
    # Without --require-proof the same lie passes, which is what the proof prevents.
    path = cli.work / "facts.json"
    code, _, _ = cli.run("evaluate", str(path), "--rule", _rule_id(cli, "rogue rule"))
    assert code == 0


def _rule_id(cli: Cli, name: str) -> str:
    _, out, _ = cli.run("rules", "list")
    return str(next(rule["id"] for rule in json.loads(out) if rule["name"] == name))


# Nonces


def test_replay_with_another_nonce_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    first = device.challenge()
    facts = device.collect(first)
    second = device.challenge()
    code, results, _ = device.evaluate(facts, second)
    assert code == 1
    (reason,) = proof_reasons(results)
    assert reason["code"] == "proof_nonce_invalid"
    assert first in reason["message"]
    assert second in reason["message"]


def test_nonce_rewritten_in_proofs_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    facts = device.collect(device.challenge())
    second = device.challenge()
    facts["proofs"]["nonce"] = second
    code, results, _ = device.evaluate(facts, second)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_invalid"]


def test_nonce_not_issued_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    made_up = "A" * 43
    facts = device.collect(made_up)
    code, results, _ = device.evaluate(facts, made_up)
    assert code == 1
    (reason,) = proof_reasons(results)
    assert reason["code"] == "proof_nonce_invalid"
    assert "unknown to this store" in reason["message"]


def test_expired_nonce_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge("--ttl", "1s")
    facts = device.collect(nonce)
    time.sleep(1.2)
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    (reason,) = proof_reasons(results)
    assert reason["code"] == "proof_nonce_invalid"
    assert "expired" in reason["message"]


def test_nonce_from_other_store_is_unknown(
    cli: Cli, ca: CertKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = Device(cli, ca)
    other = Cli(tmp_path / "other-home", cli.work, capsys)
    code, out, _ = other.run("challenge", "--format", "nonce")
    assert code == 0
    nonce = out.strip()
    code, results, _ = device.evaluate(device.collect(nonce), nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_nonce_invalid"]


# Keys the device does not hold


def test_copied_certificate_without_key_fails(cli: Cli, ca: CertKey) -> None:
    """The certificate alone, copied from the device, gives no proof."""
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce, device.cert_path)
    assert facts["proofs"]["certificates"] == []
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert "proof_missing" in candidate_codes(results)


def test_copied_certificate_with_claimed_key_fails(cli: Cli, ca: CertKey) -> None:
    """Facts that claim the key and carry the copied DER with a made-up signature fail."""
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce, device.cert_path)
    certificate = facts["certificates"][0]
    certificate["private_key"] = {
        "present": True,
        "status": "present",
        "location": device.key_path,
        "reason": None,
    }
    facts["proofs"]["certificates"] = [
        {
            "fingerprint_sha256": device.leaf.fingerprint,
            "certificate": base64.b64encode(device.leaf.cert_der()).decode(),
            "algorithm": "ecdsa-sha256",
            "signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode(),
        }
    ]
    facts = resign_digest_only(facts)
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_invalid"]


def resign_digest_only(facts: Document) -> Document:
    """Set the document digest to the altered document's, as an attacker without the key can."""
    document = copy.deepcopy(facts)
    proofs = document.pop("proofs")
    proofs["document_sha256"] = document_digest(load_facts(json.dumps(document)))
    document["proofs"] = proofs
    return document


def test_proof_by_another_certificates_key_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    stranger = make_leaf(ca, "stranger", key_type="ec")
    code, results, _ = device.evaluate(resign(facts, stranger.key), nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_invalid"]


def test_proof_with_another_certificates_der_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    stranger = make_leaf(ca, "stranger", key_type="ec")
    facts["proofs"]["certificates"][0]["certificate"] = base64.b64encode(stranger.cert_der()).decode()
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_fingerprint_mismatch"]


def test_algorithm_that_does_not_fit_the_key_fails(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca, "ec")
    nonce = device.challenge()
    facts = device.collect(nonce)
    facts["proofs"]["certificates"][0]["algorithm"] = "rsa-pss-sha256"
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_invalid"]


def test_ecdsa_signature_over_other_message_fails(cli: Cli, ca: CertKey) -> None:
    """A signature by the right key over the bare nonce, without the document digest, is not a proof."""
    device = Device(cli, ca, "ec")
    nonce = device.challenge()
    facts = device.collect(nonce)
    assert isinstance(device.leaf.key, ec.EllipticCurvePrivateKey)
    signature = device.leaf.key.sign(nonce.encode(), ec.ECDSA(hashes.SHA256()))
    facts["proofs"]["certificates"][0]["signature"] = base64.b64encode(signature).decode()
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert [reason["code"] for reason in proof_reasons(results)] == ["proof_invalid"]


def test_facts_without_proofs_fail(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    code, results, _ = device.evaluate(device.collect(None), nonce)
    assert code == 1
    (reason,) = proof_reasons(results)
    assert reason["code"] == "proof_missing"
    assert f"--challenge {nonce}" in reason["message"]


def test_without_require_proof_proofs_are_not_needed(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    path = cli.work / "facts.json"
    path.write_text(json.dumps(device.collect(None)))
    code, _, _ = cli.run("evaluate", str(path))
    assert code == 0


# Usage errors


@pytest.mark.parametrize("nonce", ["short", "has space in it 12345", "é" * 20, "a" * 129])
def test_bad_nonce_is_usage_error(cli: Cli, ca: CertKey, nonce: str) -> None:
    device = Device(cli, ca)
    code, out, err = cli.run("collect", "--path", device.cert_path, "--challenge", nonce)
    assert (code, out) == (2, "")
    assert "--challenge" in err
    path = cli.work / "facts.json"
    path.write_text(json.dumps(device.collect(None)))
    code, out, err = cli.run("evaluate", str(path), "--require-proof", nonce)
    assert (code, out) == (2, "")
    assert "--require-proof" in err


def test_password_file_needs_challenge(cli: Cli, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    code, out, err = cli.run("collect", "--path", str(tmp_path), "--nssdb-password-file", str(password))
    assert (code, out) == (2, "")
    assert "--challenge" in err


# Batch


def test_batch_requires_proof_per_line(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    good = device.collect(nonce)
    altered = copy.deepcopy(good)
    altered["device"]["hostname"] = "elsewhere"
    lines = cli.work / "fleet.jsonl"
    lines.write_text("\n".join(json.dumps(item) for item in (good, altered, device.collect(None))) + "\n")
    code, out, err = cli.run("evaluate", "--batch", str(lines), "--require-proof", nonce, "--jobs", "2")
    assert code == 1, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["results"][0]["status"] for record in records] == ["passed", "failed", "failed"]
    assert [candidate_codes(record) for record in records[1:]] == [["proof_facts_altered"], ["proof_missing"]]


def test_batch_without_require_proof_ignores_proofs(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    lines = cli.work / "fleet.jsonl"
    lines.write_text(json.dumps(device.collect(device.challenge())) + "\n")
    code, out, err = cli.run("evaluate", "--batch", str(lines))
    assert code == 0, err
    assert json.loads(out)["results"][0]["status"] == "passed"


def test_eku_rule_with_proof(cli: Cli, ca: CertKey) -> None:
    """Proof and the other conditions combine: a proved certificate without the EKU still fails on EKU."""
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    cli.add_rule(
        device.ca_id,
        name="needs email",
        extended_key_usage=["emailProtection"],
        locations={"paths": [device.cert_path, device.key_path]},
    )
    code, results, _ = device.evaluate(facts, nonce)
    assert code == 1
    assert candidate_codes(results) == ["eku_missing"]
    assert EMAIL_PROTECTION not in facts["certificates"][0]["extended_key_usage"]


# The same verdicts on an OPA server, through a bundle built with --require-proof


def test_opa_bundle_with_require_proof_agrees(tmp_path: Path) -> None:
    from certposture import bundle, engine
    from certposture.challenge import issue_challenge, nonce_problem
    from certposture.proofcheck import ProofVerifier
    from certposture.rules import validate_rules
    from certposture.signing import parse_signing_certificate
    from certposture.store import Store
    from collector.collect import Locations, collect
    from collector.signers import Signer
    from tests.opa_support import bundle_files, json_differences, opa_engine, require_opa

    opa = require_opa()
    ca = make_ca("OPA Proof CA")
    store = Store(tmp_path / "home")
    store.add_signing_certificate(parse_signing_certificate(ca.cert_pem(), "ca.pem"), None, False, "ca-proof")
    leaf = make_leaf(ca, "dev1", key_type="rsa")
    cert_path, key_path = leaf.write_cert(tmp_path / "dev.pem"), leaf.write_key(tmp_path / "dev.key")
    document = {
        "id": "proof",
        "name": "Proved",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": "ca-proof",
            "operating_system": "linux",
            "check_private_key": True,
            "locations": {"paths": [str(cert_path), str(key_path)]},
        },
    }
    rules, problems = validate_rules([document], store.signing_certificate_exists)
    assert problems == []
    store.add_rules(rules)

    files = bundle_files(bundle.build_store_bundle(store, require_proof=True))
    files.pop(bundle.MANIFEST_PATH)
    bundle_data = json.loads(files.pop(bundle.DATA_PATH))
    assert bundle_data[engine.CONFIG_ROOT]["require_proof"] is True

    signers = [Signer(certificate_id, certificate) for certificate_id, certificate in store.load_signers()]
    nonce = issue_challenge(store).nonce
    facts = collect(
        Locations(paths=(str(cert_path), str(key_path))),
        signers,
        hostname="h",
        serial_number="s",
        challenge=nonce,
    )
    verifier = ProofVerifier(nonce=nonce, nonce_problem=nonce_problem(store, nonce), signers=signers)
    altered = facts.model_copy(update={"device": facts.device.model_copy(update={"hostname": "other"})})
    inputs = {
        "verified": verifier.verify(facts),
        "facts_altered": verifier.verify(altered),
        "absent": None,
    }
    assert inputs["verified"]["certificates"][leaf.fingerprint]["status"] == "verified"
    assert inputs["facts_altered"]["certificates"][leaf.fingerprint]["status"] == "facts_altered"

    config = engine.build_config(
        store.list_rules(), store.list_signing_certificates(), None, require_proof=True
    )
    server = opa_engine(opa, [(name, text.decode()) for name, text in files.items()], bundle_data)
    statuses = {}
    try:
        for name, verification in inputs.items():
            regorus_results = engine.evaluate(facts, config, None, verification)
            opa_input = facts.model_dump(mode="json", exclude={"proofs"})
            if verification is not None:
                opa_input["proof_verification"] = verification
            opa_results = server.eval_document("certposture.posture.results", opa_input)
            differences = json_differences(regorus_results, opa_results, "results")
            assert not differences, f"{name}: regorus left, OPA right:\n" + "\n".join(differences)
            statuses[name] = [candidate_codes({"results": regorus_results}), regorus_results[0]["status"]]
    finally:
        server.close()
    assert statuses == {
        "verified": [[], "passed"],
        "facts_altered": [["proof_facts_altered"], "failed"],
        "absent": [["proof_missing"], "failed"],
    }


# Keys in NSS databases, signing inside NSS


def _nss_device(
    cli: Cli, ca: CertKey, tmp_path: Path, password: str | None, key_type: str
) -> tuple[str, CertKey]:
    from tests.certgen import create_nssdb

    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "dev1", eku=[CLIENT_AUTH], key_type=key_type)  # type: ignore[arg-type]
    database = create_nssdb(tmp_path / "nssdb", password=password)
    database.import_key_pair(leaf, "dev1")
    database.add_certificate(make_leaf(ca, "no key here").cert, "other")
    cli.add_rule(ca_id, cn="dev1")
    return str(database.directory), leaf


def _collect_nss(cli: Cli, directory: str, nonce: str, *extra: str) -> tuple[Document, str]:
    code, out, err = cli.run(
        "collect",
        "--hostname",
        HOSTNAME,
        "--serial-number",
        SERIAL,
        "--nssdb",
        directory,
        "--challenge",
        nonce,
        *extra,
    )
    assert code == 0, err
    document: Document = json.loads(out)
    return document, err


@pytest.mark.parametrize(("key_type", "algorithm"), [("rsa", "rsa-pss-sha256"), ("ec", "ecdsa-sha256")])
def test_nss_key_without_password_signs(
    cli: Cli, ca: CertKey, tmp_path: Path, key_type: str, algorithm: str
) -> None:
    directory, leaf = _nss_device(cli, ca, tmp_path, None, key_type)
    device_nonce = _as_device(cli).challenge()
    facts, err = _collect_nss(cli, directory, device_nonce)
    (proof,) = facts["proofs"]["certificates"]
    assert proof["fingerprint_sha256"] == leaf.fingerprint
    assert proof["algorithm"] == algorithm
    assert facts["proofs"]["errors"] == []
    assert "signed 1 proof(s)" in err
    code, results, _ = _as_device(cli).evaluate(facts, device_nonce)
    assert code == 0
    assert results["results"][0]["status"] == "passed"


def test_nss_key_with_password_file_signs(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    directory, leaf = _nss_device(cli, ca, tmp_path, "s3cret-db", "ec")
    password_file = tmp_path / "db-password"
    password_file.write_text("s3cret-db\n")
    nonce = _as_device(cli).challenge()
    facts, err = _collect_nss(cli, directory, nonce, "--nssdb-password-file", str(password_file))
    assert [proof["fingerprint_sha256"] for proof in facts["proofs"]["certificates"]] == [leaf.fingerprint]
    assert "s3cret-db" not in err + json.dumps(facts)
    code, _, _ = _as_device(cli).evaluate(facts, nonce)
    assert code == 0


def test_nss_password_missing_gives_proof_error(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    directory, leaf = _nss_device(cli, ca, tmp_path, "s3cret-db", "rsa")
    nonce = _as_device(cli).challenge()
    facts, err = _collect_nss(cli, directory, nonce)
    assert facts["proofs"]["certificates"] == []
    (error,) = facts["proofs"]["errors"]
    assert error["fingerprint_sha256"] == leaf.fingerprint
    assert "password" in error["message"]
    assert "warning: no proof for certificate" in err
    code, results, _ = _as_device(cli).evaluate(facts, nonce)
    assert code == 1
    (candidate,) = [
        item for item in results["results"][0]["candidates"] if item["fingerprint_sha256"] == leaf.fingerprint
    ]
    assert candidate["reasons"][0]["code"] == "proof_missing"
    assert "password" in candidate["reasons"][0]["message"]


def test_nss_wrong_password_gives_proof_error(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    directory, _ = _nss_device(cli, ca, tmp_path, "s3cret-db", "ec")
    password_file = tmp_path / "db-password"
    password_file.write_text("not-it\n")
    nonce = _as_device(cli).challenge()
    facts, err = _collect_nss(cli, directory, nonce, "--nssdb-password-file", str(password_file))
    assert facts["proofs"]["certificates"] == []
    assert "password" in facts["proofs"]["errors"][0]["message"]
    assert "not-it" not in err + json.dumps(facts)


def test_nss_password_prompt_on_terminal(tmp_path: Path) -> None:
    """Without a password file, collect prompts on the terminal and signs with the typed password."""
    import os
    import pty

    from tests.certgen import create_nssdb

    ca = make_ca("Prompt CA")
    leaf = make_leaf(ca, "dev1", key_type="ec")
    database = create_nssdb(tmp_path / "nssdb", password="typed-secret")
    database.import_key_pair(leaf, "dev1")
    home = tmp_path / "home"
    nonce = _run(home, "challenge", "--format", "nonce").strip()
    output = tmp_path / "facts.json"
    argv = [sys.executable, "-m", "certposture", "--home", str(home), "collect", "--hostname", "h"]
    argv += [
        "--serial-number",
        "s",
        "--nssdb",
        str(database.directory),
        "--challenge",
        nonce,
        "-o",
        str(output),
    ]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal and its stdin
        os.execv(sys.executable, argv)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Password for NSS database" not in seen and time.monotonic() < deadline:
        seen += os.read(terminal, 1024)
    assert b"Password for NSS database" in seen
    os.write(terminal, b"typed-secret\n")
    while True:
        try:
            chunk = os.read(terminal, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert b"typed-secret" not in seen.split(b"Password for NSS database", 1)[1].split(b"\n", 1)[1]
    facts = json.loads(output.read_text())
    assert [proof["fingerprint_sha256"] for proof in facts["proofs"]["certificates"]] == [leaf.fingerprint]


def _as_device(cli: Cli) -> Device:
    """A Device view of a home set up by hand, for its challenge and evaluate helpers."""
    device = Device.__new__(Device)
    device.cli = cli
    return device


def test_duplicate_proof_makes_facts_invalid(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    facts["proofs"]["certificates"].append(copy.deepcopy(facts["proofs"]["certificates"][0]))
    code, results, err = device.evaluate(facts, nonce)
    assert code == 3
    assert results["results"][0]["status"] == "error"
    assert "more than once" in err


def test_batch_warns_about_unknown_nonce(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    lines = cli.work / "fleet.jsonl"
    lines.write_text(json.dumps(device.collect("B" * 43)) + "\n")
    code, _, err = cli.run("evaluate", "--batch", str(lines), "--require-proof", "B" * 43)
    assert code == 1
    assert "warning: challenge BBBB" in err
    assert "unknown to this store" in err


@pytest.mark.parametrize("flag", [True, False])
def test_bundle_require_proof_flag(cli: Cli, ca: CertKey, flag: bool) -> None:
    Device(cli, ca)
    bundle_path = cli.work / "bundle.tar.gz"
    code, _, err = cli.run("bundle", "-o", str(bundle_path), *(["--require-proof"] if flag else []))
    assert code == 0, err
    from tests.opa_support import bundle_files

    config = json.loads(bundle_files(bundle_path.read_bytes())["data.json"])["certposture_config"]
    assert config.get("require_proof") is (True if flag else None)


# Problems found by trying the feature as a new user


def test_fifo_key_database_is_not_opened(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    import os

    directory, _ = _nss_device(cli, ca, tmp_path, None, "ec")
    os.remove(os.path.join(directory, "key4.db"))
    os.mkfifo(os.path.join(directory, "key4.db"))
    # Opening the FIFO would block the NSS child until its timeout; the check before NSS starts names the file.
    facts, _ = _collect_nss(cli, directory, _as_device(cli).challenge())
    assert facts["proofs"]["certificates"] == []
    assert facts["proofs"]["errors"]
    assert all("not a regular file" in error["message"] for error in facts["proofs"]["errors"])


def test_encrypted_pem_key_error_says_encrypted(cli: Cli, ca: CertKey) -> None:
    leaf = make_leaf(ca, "dev1")
    cert_path = leaf.write_cert(cli.work / "enc.pem")
    key_path = leaf.write_key(cli.work / "enc.key", password=b"pem-secret")
    device = _as_device(cli)
    code, out, err = cli.run(
        "collect", "--path", str(cert_path), "--path", str(key_path), "--challenge", device.challenge()
    )
    assert code == 0, err
    (error,) = json.loads(out)["proofs"]["errors"]
    assert "encrypted" in error["message"]
    assert "encrypted" in err


def test_warning_escapes_location(cli: Cli, ca: CertKey) -> None:
    leaf = make_leaf(ca, "dev1")
    folder = cli.work / "odd"
    folder.mkdir()
    leaf.write_cert(folder / "x\x1b[31mred\nwarning: forged.pem")
    leaf.write_key(folder / "x.key", password=b"pem-secret")
    code, _, err = cli.run("collect", "--path", str(folder), "--challenge", _as_device(cli).challenge())
    assert code == 0, err
    assert "\x1b" not in err
    assert not any(line.startswith("warning: forged") for line in err.splitlines())


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"ab\0cd\n", "NUL"), (None, "--nssdb-password-file"), (b"x" * 70_000, "--nssdb-password-file")],
)
def test_bad_password_file_is_usage_error(
    cli: Cli, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    password = tmp_path / "password"
    if content is not None:
        password.write_bytes(content)
    code, out, err = cli.run(
        "collect", "--path", str(tmp_path), "--challenge", "C" * 43, "--nssdb-password-file", str(password)
    )
    assert (code, out) == (2, "")
    assert expected in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [("0s", "shorter than 1s"), ("9999999999s", "longer than 1d"), ("2d", "longer than 1d")],
)
def test_ttl_out_of_range_message(cli: Cli, ttl: str, expected: str) -> None:
    code, _, err = cli.run("challenge", "--ttl", ttl)
    assert code == 2
    assert expected in err


def test_evaluate_warns_about_unknown_nonce(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    code, _, err = device.evaluate(device.collect("D" * 43), "D" * 43)
    assert code == 1
    assert "warning: challenge DDDD" in err


def test_duplicate_proof_error_makes_facts_invalid(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    entry = {"fingerprint_sha256": "0" * 64, "source": {"type": "pem", "location": "/x"}, "message": "m"}
    facts["proofs"]["errors"] = [entry, entry]
    code, _, err = device.evaluate(facts, nonce)
    assert code == 3
    assert "more than once" in err


def test_verify_proofs_prints_opa_input(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    path = cli.work / "facts.json"
    path.write_text(json.dumps(facts))
    code, out, err = cli.run("verify-proofs", str(path), "--require-proof", nonce)
    assert code == 0, err
    document = json.loads(out)["input"]
    assert "proofs" not in document
    assert document["device"] == facts["device"]
    verdict = document["proof_verification"]["certificates"][device.leaf.fingerprint]
    assert verdict["status"] == "verified"
    assert verdict["signed_by"] == [device.ca_id]

    facts["device"]["hostname"] = "elsewhere"
    path.write_text(json.dumps(facts))
    code, out, err = cli.run("verify-proofs", str(path), "--require-proof", nonce, "--format", "json")
    assert code == 0
    assert json.loads(out)["certificates"][device.leaf.fingerprint]["status"] == "facts_altered"
    assert "0 of 1 certificate(s) have a verified proof" in err


def test_verify_proofs_usage_errors(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    path = cli.work / "facts.json"
    path.write_text(json.dumps(device.collect(None)))
    code, out, err = cli.run("verify-proofs", str(path))
    assert (code, out) == (2, "")
    assert "--require-proof" in err
    path.write_text("{}")
    code, out, err = cli.run("verify-proofs", str(path), "--require-proof", device.challenge())
    assert (code, out) == (3, "")
    assert "facts are invalid" in err


def test_decision_log_input_is_policy_input(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    log = cli.work / "decisions.jsonl"
    code, _, _ = device.evaluate(device.collect(nonce), nonce, "--decision-log", str(log))
    assert code == 0
    event = json.loads(log.read_text())
    assert "proofs" not in event["input"]
    assert (
        event["input"]["proof_verification"]["certificates"][device.leaf.fingerprint]["status"] == "verified"
    )


def test_old_expired_challenges_are_forgotten(tmp_path: Path) -> None:
    import datetime as dt

    from certposture.challenge import issue_challenge, nonce_problem
    from certposture.store import Store

    store = Store(tmp_path / "home")
    now = dt.datetime.now(dt.UTC)
    old = issue_challenge(store, dt.timedelta(minutes=5), now=now - dt.timedelta(days=8))
    recent = issue_challenge(store, dt.timedelta(minutes=5), now=now - dt.timedelta(days=1))
    assert "expired" in (nonce_problem(store, old.nonce, now) or "")
    issue_challenge(store, now=now)
    assert "unknown to this store" in (nonce_problem(store, old.nonce, now) or "")
    assert "expired at" in (nonce_problem(store, recent.nonce, now) or "")


def test_many_duplicates_give_short_message(cli: Cli, ca: CertKey) -> None:
    device = Device(cli, ca)
    nonce = device.challenge()
    facts = device.collect(nonce)
    entries = [
        {"fingerprint_sha256": f"{index:064x}", "source": {"type": "pem", "location": "/x"}, "message": "m"}
        for index in range(5)
    ]
    facts["proofs"]["errors"] = entries + entries
    code, _, err = device.evaluate(facts, nonce)
    assert code == 3
    assert "and 2 more" in err
    assert len(err) < 1000
