"""What the CLI imports at startup: `collect` and `--version` must run where regorus cannot be imported.

Each test runs ``certposture.cli.main`` in a fresh interpreter whose meta path
rejects every import of regorus, then reads the exit code and the names in
``sys.modules`` that the interpreter wrote to a report file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import certposture
from certposture.cli import main
from collector.facts import load_facts
from tests.certgen import CertKey, make_ca, make_leaf

ROOT = Path(__file__).resolve().parent.parent

# The interpreter's argv: the CLI arguments as JSON, then the report file to write.
BLOCKED_REGORUS_PROGRAM = """
import json
import sys


class RegorusBlocker:
    def find_spec(self, name, path=None, target=None):
        if name == "regorus" or name.startswith("regorus."):
            raise ImportError(f"{name} is blocked: this command must not import regorus")
        return None


sys.meta_path.insert(0, RegorusBlocker())

from certposture.cli import main

exit_code = main(json.loads(sys.argv[1]))
sys.stdout.flush()
with open(sys.argv[2], "w", encoding="utf-8") as report:
    json.dump({"exit_code": exit_code, "modules": sorted(sys.modules)}, report)
"""


@dataclass
class BlockedRun:
    exit_code: int
    stdout: str
    stderr: str
    modules: set[str]


def run_without_regorus(arguments: list[str], report: Path) -> BlockedRun:
    """Run the CLI in a new interpreter in which importing regorus raises ImportError."""
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKED_REGORUS_PROGRAM, json.dumps(arguments), str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    written = json.loads(report.read_text())
    return BlockedRun(written["exit_code"], completed.stdout, completed.stderr, set(written["modules"]))


def modules_under(package: str, modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name == package or name.startswith(f"{package}."))


@pytest.fixture
def home(tmp_path: Path) -> str:
    return str(tmp_path / "home")


@pytest.fixture
def ca() -> CertKey:
    return make_ca("Example Device CA")


@pytest.fixture
def leaf(ca: CertKey) -> CertKey:
    return make_leaf(ca, "pf2abc12_mycompany")


def test_collect_path_without_regorus(tmp_path: Path, home: str, leaf: CertKey) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    leaf.write_cert(folder / "client.pem")

    run = run_without_regorus(["--home", home, "collect", "--path", str(folder)], tmp_path / "report.json")

    assert run.exit_code == 0, run.stderr
    facts = load_facts(run.stdout)
    assert [certificate.fingerprint_sha256 for certificate in facts.certificates] == [leaf.fingerprint]
    assert facts.certificates[0].source.location == str(folder / "client.pem")
    assert modules_under("regorus", run.modules) == []


def test_collect_empty_folder_without_regorus(tmp_path: Path, home: str) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()

    run = run_without_regorus(["--home", home, "collect", "--path", str(folder)], tmp_path / "report.json")

    assert run.exit_code == 0, run.stderr
    facts = load_facts(run.stdout)
    assert facts.certificates == []
    assert modules_under("regorus", run.modules) == []


# On macOS and Windows, collect reads the trust stores instead of a Linux rule's paths.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a Linux rule's paths")
def test_collect_stored_rule_without_regorus(
    tmp_path: Path, home: str, ca: CertKey, leaf: CertKey, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "certificates"
    folder.mkdir()
    leaf.write_cert(folder / "client.pem")
    ca_file = ca.write_cert(tmp_path / "ca.pem")
    assert main(["--home", home, "ca", "add", str(ca_file)]) == 0
    ca_id = json.loads(capsys.readouterr().out)["id"]
    rule = {
        "name": "Corp device certificate",
        "type": "client_certificate_v2",
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": False,
            "locations": {"paths": [str(folder)]},
        },
    }
    rule_file = tmp_path / "rule.json"
    rule_file.write_text(json.dumps(rule))
    assert main(["--home", home, "rules", "add", str(rule_file)]) == 0
    capsys.readouterr()

    run = run_without_regorus(["--home", home, "collect"], tmp_path / "report.json")

    assert run.exit_code == 0, run.stderr
    facts = load_facts(run.stdout)
    assert [certificate.fingerprint_sha256 for certificate in facts.certificates] == [leaf.fingerprint]
    assert modules_under("regorus", run.modules) == []


def test_version_loads_no_command_code(tmp_path: Path) -> None:
    run = run_without_regorus(["--version"], tmp_path / "report.json")

    assert run.exit_code == 0, run.stderr
    assert run.stdout == f"{certposture.__version__}\n"
    assert modules_under("regorus", run.modules) == []
    assert modules_under("collector.facts", run.modules) == []
    assert modules_under("cryptography", run.modules) == []


def test_blocker_rejects_regorus(tmp_path: Path, home: str) -> None:
    """Control for the tests above: a command that needs regorus fails under the blocker."""
    run = run_without_regorus(["--home", home, "test", "--with-shipped"], tmp_path / "report.json")

    assert run.exit_code == 3
    assert "regorus is blocked" in run.stderr
    assert modules_under("regorus", run.modules) == []
