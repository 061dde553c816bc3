"""`certposture bundle`: the OPA bundle built from the store, through the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from certposture.bundle import DATA_PATH, MANIFEST_PATH
from certposture.engine import examples_dir
from tests.certgen import CertKey
from tests.opa_support import bundle_files, opa_engine, require_opa
from tests.test_end_to_end import Cli, ca, cli
from tests.test_explain import UNDEFINED_CALL, write_cross_file_policies

__all__ = ["ca", "cli"]  # fixtures, imported for pytest


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


def test_bundle_holds_store_and_policies(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    rule_id = cli.add_rule(ca_id, cn="${serial_number}_corp", locations={"paths": ["/etc/corp/client.pem"]})
    output = cli.work / "bundle.tar.gz"

    code, out, err = cli.run(
        "bundle", "-o", str(output), "--policy", str(examples_dir() / "min_rsa_key_size")
    )

    assert code == 0, err
    assert out == ""
    assert f"wrote OPA bundle {output}" in err
    files = members(output.read_bytes())
    manifest: dict[str, Any] = json.loads(files[".manifest"])
    assert manifest["rego_version"] == 1
    assert manifest["roots"] == ["certposture", "certposture_config"]
    assert manifest["revision"]
    assert "certposture/client_certificate.rego" in files
    assert "certposture/posture.rego" in files
    assert any(name.endswith("min_rsa_key_size.rego") for name in files)
    assert not any(name.endswith("_test.rego") for name in files)

    config = json.loads(files["data.json"])["certposture_config"]
    _, rules_out, _ = cli.run("rules", "list")
    _, cas_out, _ = cli.run("ca", "list")
    assert config["rules"] == json.loads(rules_out)
    assert [rule["id"] for rule in config["rules"]] == [rule_id]
    assert config["signing_certificates"] == {record["id"]: record for record in json.loads(cas_out)}
    assert "evaluated_at" not in config
    assert b"PRIVATE KEY" not in output.read_bytes()


def test_bundle_to_stdout_with_revision(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    command = [sys.executable, "-m", "certposture", "--home", str(cli.home)]

    completed = subprocess.run(
        [*command, "bundle", "-o", "-", "--revision", "2026-12-04.1"], capture_output=True, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(members(completed.stdout)[".manifest"])["revision"] == "2026-12-04.1"


def test_bundle_same_store_same_bytes(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    first, second = cli.work / "a.tar.gz", cli.work / "b.tar.gz"
    assert cli.run("bundle", "-o", str(first))[0] == 0
    assert cli.run("bundle", "-o", str(second))[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_bundle_without_rules_is_usage_error(cli: Cli) -> None:
    code, out, err = cli.run("bundle", "-o", str(cli.work / "b.tar.gz"))
    assert code == 2
    assert out == ""
    assert "no rules stored" in err
    assert not (cli.work / "b.tar.gz").exists()


def test_bundle_bad_policy_folder(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    code, _, err = cli.run("bundle", "-o", str(cli.work / "b.tar.gz"), "--policy", str(tmp_path / "missing"))
    assert code == 2
    assert "no such file or folder" in err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.rego").write_text("package certposture.conditions.bad\n\nreasons contains if {\n")
    code, _, err = cli.run("bundle", "-o", str(cli.work / "b.tar.gz"), "--policy", str(broken))
    assert code == 3
    assert f"{broken / 'bad.rego'}:" in err
    assert not (cli.work / "b.tar.gz").exists()


def test_bundle_requires_output(cli: Cli) -> None:
    code, _, err = cli.run("bundle")
    assert code == 2
    assert "--output" in err


def test_bundle_rejects_rules_in_shipped_package(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "override.rego"
    policy.write_text("package certposture.posture\n\nsummary_extra := 1\n")

    code, _, err = cli.run("bundle", "-o", str(cli.work / "b.tar.gz"), "--policy", str(policy))

    assert code == 3
    assert "adds rules to the shipped package data.certposture.posture" in err
    assert not (cli.work / "b.tar.gz").exists()


def test_bundle_rejects_undefined_function(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "c.rego"
    policy.write_text(UNDEFINED_CALL)

    code, out, err = cli.run("bundle", "-o", str(cli.work / "b.tar.gz"), "--policy", str(policy))

    assert code == 3
    assert out == ""
    assert err.startswith(f"error: {policy}:3:51: function undefined_fn is not defined in the loaded files")
    assert not (cli.work / "b.tar.gz").exists()


def test_bundle_cross_file_functions_load_in_opa(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    opa = require_opa()
    cli.add_rule(cli.add_ca(ca))
    policies = write_cross_file_policies(tmp_path / "corp")
    output = cli.work / "bundle.tar.gz"

    code, _, err = cli.run("bundle", "-o", str(output), "--policy", str(policies))

    assert code == 0, err
    files = bundle_files(output.read_bytes())
    data = json.loads(files.pop(DATA_PATH))
    files.pop(MANIFEST_PATH)
    server = opa_engine(opa, [(name, text.decode()) for name, text in files.items()], data)
    try:
        reasons = server.eval_document(
            "certposture.conditions.corp_rsa.reasons", {"certificate": {"public_key": {"size": 2048}}}
        )
    finally:
        server.close()
    assert reasons == [
        {
            "condition": "corp_rsa",
            "code": "rsa_too_small",
            "message": "RSA key is too small",
            "expected": 3072,
            "actual": 2048,
        }
    ]
