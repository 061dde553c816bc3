"""`certposture rules`: validation of every field, storage order, the Cloudflare API envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from certposture.cli import main
from tests.certgen import make_ca


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def ca_id(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> str:
    make_ca("Device CA").write_cert(tmp_path / "ca.pem")
    code, out, _ = run(capsys, home, "ca", "add", str(tmp_path / "ca.pem"))
    assert code == 0
    return str(json.loads(out)["id"])


def linux_rule(ca_id: str, **input_fields: Any) -> dict[str, Any]:
    return {
        "name": "Corp device certificate",
        "type": "client_certificate_v2",
        "schedule": "5m",
        "match": [{"platform": "linux"}],
        "input": {
            "certificate_id": ca_id,
            "operating_system": "linux",
            "check_private_key": True,
            **input_fields,
        },
    }


def add(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], document: Any
) -> tuple[int, str, str]:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    return run(capsys, home, "rules", "add", str(path))


def test_add_assigns_ids_in_order(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    first = linux_rule(ca_id, cn="${serial_number}_corp")
    second = {**linux_rule(ca_id), "name": "Second"}
    code, out, _ = add(tmp_path, home, capsys, [first, second])
    assert code == 0
    ids = out.split()
    assert len(ids) == 2
    _, listed, _ = run(capsys, home, "rules", "list")
    stored = json.loads(listed)
    assert [rule["id"] for rule in stored] == ids
    assert stored[0]["input"]["cn"] == "${serial_number}_corp"
    assert next(iter(stored[0])) == "id"


def test_add_keeps_given_id(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    rule = {**linux_rule(ca_id), "id": "f5b2a0c4-exported"}
    code, out, _ = add(tmp_path, home, capsys, rule)
    assert code == 0
    assert out.strip() == "f5b2a0c4-exported"
    code, _, err = add(tmp_path, home, capsys, rule)
    assert code == 2
    assert "already stored" in err


def test_add_cloudflare_envelope(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    envelope = {"success": True, "errors": [], "messages": [], "result": linux_rule(ca_id)}
    code, out, _ = add(tmp_path, home, capsys, envelope)
    assert code == 0
    assert len(out.split()) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["input"].pop("certificate_id"), "input.certificate_id: required field is missing"),
        (lambda r: r["input"].pop("check_private_key"), "input.check_private_key: required field is missing"),
        (lambda r: r["input"].pop("operating_system"), "input.operating_system: required field is missing"),
        (lambda r: r.pop("name"), "name: required field is missing"),
        (
            lambda r: r["input"].update(operating_system="solaris"),
            "input.operating_system: 'solaris' is not allowed; allowed values: 'windows', 'linux' or 'mac'",
        ),
        (
            lambda r: r.update(type="file"),
            "type: 'file' is not allowed; allowed values: 'client_certificate_v2'",
        ),
        (
            lambda r: r["input"].update(extended_key_usage=["serverAuth"]),
            "input.extended_key_usage.0: 'serverAuth' is not allowed; allowed values: 'clientAuth' or 'emailProtection'",
        ),
        (
            lambda r: r["input"].update(locations={"trust_stores": ["system"]}),
            "locations.trust_stores applies to windows and mac rules only",
        ),
        (
            lambda r: r["input"].update(locations={"paths": ["relative/client.pem"]}),
            "input.locations.paths: path 'relative/client.pem' is not absolute",
        ),
        (
            lambda r: r["input"].update(cn="${user}_corp"),
            "input.cn: unknown variable ${user} in '${user}_corp'; allowed: ${serial_number}, ${hostname}",
        ),
        (
            lambda r: r["input"].update(subject_alternative_names=["${hostname}.corp", "${mac_address}"]),
            "unknown variable ${mac_address}",
        ),
        (lambda r: r["input"].update(cn="${serial_number"), "unterminated variable"),
        (
            lambda r: r["input"].update(colour="blue"),
            "input.colour: unknown field; allowed fields here: certificate_id",
        ),
        (lambda r: r.update(schedule="soon"), "schedule: 'soon' is not a duration"),
        (lambda r: r.update(expiration="1h\n"), "expiration: '1h\\n' is not a duration"),
        (lambda r: r.update(expiration="9999999999d"), "expiration: '9999999999d' is not a duration"),
        (lambda r: r.update(match=[{"platform": "windows"}]), "match platform 'windows' differs"),
        *[
            (
                lambda r, os_name=os_name: r["input"].update(operating_system=os_name),
                f"input.operating_system: client certificate checks are not supported on {os_name}; "
                "supported operating systems: linux, mac, windows",
            )
            for os_name in ("ios", "android", "chromeos")
        ],
        (
            lambda r: r.update(match=[{"platform": "chromeos"}]),
            "match.0.platform: client certificate checks are not supported on chromeos; "
            "supported operating systems: linux, mac, windows",
        ),
        (
            lambda r: r["input"].update(
                operating_system="mac", locations={"trust_stores": ["system", "user"]}
            ),
            "locations.trust_stores 'user' exists on windows only; mac rules read the System keychain",
        ),
        (
            lambda r: r["input"].update(check_private_key="no"),
            "input.check_private_key: must be true or false (got the string 'no')",
        ),
        (
            lambda r: r["input"].update(check_private_key=1),
            "input.check_private_key: must be true or false (got a number)",
        ),
        (
            lambda r: r["input"].update(locations={"paths": ["/etc/x/../pki/client.pem"]}),
            "path '/etc/x/../pki/client.pem' is not normalized; write '/etc/pki/client.pem'",
        ),
        (
            lambda r: r["input"].update(locations={"paths": ["/etc//pki"]}),
            "path '/etc//pki' is not normalized; write '/etc/pki'",
        ),
        (
            lambda r: r["input"].update(locations={"paths": ["/tmp/a\x00b"]}),
            "contains a NUL character",
        ),
        (
            lambda r: r["input"].update(locations="/etc/pki"),
            "input.locations: must be a JSON object (got the string '/etc/pki')",
        ),
        (
            lambda r: r["input"].update(extended_key_usage="clientAuth"),
            "input.extended_key_usage: must be a list (got the string 'clientAuth')",
        ),
        (lambda r: r.update(id="../../etc/passwd"), "id: '../../etc/passwd' is not a valid id"),
        (
            lambda r: r["input"].update(locations={"paths": ["//"]}),
            "path '//' is not normalized; write '/'",
        ),
        (
            lambda r: r["input"].update(locations={"paths": ["//etc/pki"]}),
            "path '//etc/pki' is not normalized; write '/etc/pki'",
        ),
    ],
)
def test_add_rejects_invalid_field(
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    ca_id: str,
    change: Any,
    expected: str,
) -> None:
    rule = linux_rule(ca_id)
    change(rule)
    code, out, err = add(tmp_path, home, capsys, rule)
    assert code == 2
    assert out == ""
    assert expected in err
    assert "Traceback" not in err
    assert run(capsys, home, "rules", "list")[1].strip() == "[]"


def test_add_rejects_unknown_certificate(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = add(tmp_path, home, capsys, linux_rule("0000-not-stored"))
    assert code == 2
    assert "signing certificate '0000-not-stored' is not stored" in err
    assert "certposture ca add --id 0000-not-stored FILE" in err


def test_add_is_all_or_nothing(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    bad = linux_rule(ca_id)
    bad["input"]["operating_system"] = "beos"
    code, _, err = add(tmp_path, home, capsys, [linux_rule(ca_id), bad])
    assert code == 2
    assert "rule 1" in err
    assert run(capsys, home, "rules", "list")[1].strip() == "[]"


def test_add_reports_every_problem(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    rule = linux_rule(ca_id)
    rule["input"]["operating_system"] = "beos"
    rule["input"]["cn"] = "${nope}"
    rule.pop("name")
    code, _, err = add(tmp_path, home, capsys, rule)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert any("name: required" in line for line in lines)
    assert any("operating_system" in line for line in lines)
    assert any("${nope}" in line for line in lines)


def test_add_invalid_json(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(capsys, home, "rules", "add", str(tmp_path / "bad.json"))
    assert code == 2
    assert "invalid JSON" in err


def test_validate_does_not_store(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str
) -> None:
    (tmp_path / "rule.json").write_text(json.dumps(linux_rule(ca_id)))
    code, _, err = run(capsys, home, "rules", "validate", str(tmp_path / "rule.json"))
    assert code == 0
    assert "1 rule(s) valid" in err
    assert run(capsys, home, "rules", "list")[1].strip() == "[]"


def test_show_and_remove(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str) -> None:
    _, out, _ = add(tmp_path, home, capsys, linux_rule(ca_id))
    rule_id = out.strip()
    code, show_output, _ = run(capsys, home, "rules", "show", rule_id)
    assert code == 0
    assert json.loads(show_output)["id"] == rule_id
    assert run(capsys, home, "rules", "remove", rule_id)[0] == 0
    code, _, err = run(capsys, home, "rules", "show", rule_id)
    assert code == 2
    assert "not found" in err


def test_list_table(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], ca_id: str) -> None:
    add(tmp_path, home, capsys, linux_rule(ca_id))
    code, out, _ = run(capsys, home, "rules", "list", "--format", "table")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["ID", "NAME", "TYPE"]
    assert "linux" in out.splitlines()[1]


def test_list_unknown_format(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, home, "rules", "list", "--format", "yaml")
    assert code == 2
    assert "json, table" in err


def test_cloudflare_export_loads_unchanged(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = Path(__file__).resolve().parent.parent / "fixtures" / "rules" / "cloudflare-get-response.json"
    certificate_id = json.loads(exported.read_text())["result"]["input"]["certificate_id"]
    make_ca("Device CA").write_cert(tmp_path / "ca.pem")
    code, out, err = run(capsys, home, "ca", "add", "--id", certificate_id, str(tmp_path / "ca.pem"))
    assert code == 0, err
    assert json.loads(out)["id"] == certificate_id

    code, out, err = run(capsys, home, "rules", "add", str(exported))
    assert code == 0, err
    assert out.strip() == "6bb4d1f2-3c4e-4a0e-9d1c-0f6f2b1e7a55"
    _, shown, _ = run(capsys, home, "rules", "show", out.strip())
    assert json.loads(shown)["input"]["cn"] == "${serial_number}_mycompany"


def test_ca_add_rejects_bad_id(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_ca("Device CA").write_cert(tmp_path / "ca.pem")
    code, _, err = run(capsys, home, "ca", "add", "--id", "has space", str(tmp_path / "ca.pem"))
    assert code == 2
    assert "is not a valid id" in err
