"""`explain`, extra policies with `--policy`, and `collect --format opa-input`, on real certificates."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from certposture.engine import check_policies, examples_dir
from tests.certgen import CLIENT_AUTH, CertKey, make_ca, make_leaf
from tests.test_end_to_end import FULL_RULE, HOSTNAME, SERIAL, Cli, ca, cli, good_leaf, pem_pair

__all__ = ["ca", "cli"]  # fixtures, imported for pytest

BUILT_IN = ["signer", "validity", "cn", "extended_key_usage", "private_key", "subject_alternative_names"]
NOW = dt.datetime.now(dt.UTC)


def collect(cli: Cli, *paths: str) -> Path:
    facts_path = cli.work / "facts.json"
    args = [argument for path in paths for argument in ("--path", path)]
    code, _, err = cli.run(
        "collect", "--hostname", HOSTNAME, "--serial-number", SERIAL, *args, "-o", str(facts_path)
    )
    assert code == 0, err
    return facts_path


def condition_lines(text: str) -> dict[str, str]:
    """Map each condition name in an explanation to its status word."""
    statuses = {}
    for line in text.splitlines():
        match = re.match(r"^    (passed|FAILED|not checked)\s+(\w+)", line)
        if match:
            statuses[match.group(2)] = match.group(1)
    return statuses


# Each case: how to make the device fail exactly one condition, and the reason code expected.
FAILURES: dict[str, tuple[str, str]] = {
    "signer": ("signer_mismatch", "signed by another CA"),
    "validity": ("expired", "expired yesterday"),
    "cn": ("cn_mismatch", "CN of another device"),
    "extended_key_usage": ("eku_missing", "only clientAuth"),
    "private_key": ("private_key_missing", "no key file"),
    "subject_alternative_names": ("san_mismatch", "SAN of another host"),
}


def failing_leaf(ca: CertKey, condition: str) -> CertKey:
    if condition == "signer":
        return good_leaf(make_ca("Example Device CA"))  # same name, other key
    if condition == "validity":
        return good_leaf(ca, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    if condition == "cn":
        return make_leaf(
            ca, "OTHER_mycompany", sans=[f"{HOSTNAME}.corp.example"], eku=[CLIENT_AUTH, "1.3.6.1.5.5.7.3.4"]
        )
    if condition == "extended_key_usage":
        return good_leaf(ca, eku=[CLIENT_AUTH])
    if condition == "subject_alternative_names":
        return good_leaf(ca, sans=["other-host.corp.example"])
    return good_leaf(ca)


@pytest.mark.parametrize("condition", list(FAILURES))
def test_explain_each_failing_condition(cli: Cli, ca: CertKey, condition: str) -> None:
    ca_id = cli.add_ca(ca)
    leaf = failing_leaf(ca, condition)
    cert_path, key_path = pem_pair(cli, leaf)
    if condition == "private_key":
        Path(key_path).unlink()
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    facts_path = collect(cli, cert_path, key_path)

    code, out, err = cli.run("explain", str(facts_path))

    assert code == 1, err
    statuses = condition_lines(out)
    assert list(statuses) == BUILT_IN
    assert statuses == {name: ("FAILED" if name == condition else "passed") for name in BUILT_IN}
    code_name = FAILURES[condition][0]
    assert f"{code_name}: " in out
    assert "expected: " in out
    assert "actual:   " in out
    assert leaf.fingerprint in out

    code, out, _ = cli.run("explain", "--format", "json", str(facts_path))
    assert code == 1
    (candidate,) = json.loads(out)["results"][0]["candidates"]
    by_name = {item["condition"]: item for item in candidate["conditions"]}
    assert by_name[condition]["status"] == "failed"
    assert [reason["code"] for reason in candidate["reasons"]] == [code_name]


def test_explain_shows_expected_beside_actual(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca, eku=[CLIENT_AUTH])
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    _, out, _ = cli.run("explain", str(collect(cli, cert_path, key_path)))

    lines = out.splitlines()
    eku_line = next(
        index for index, line in enumerate(lines) if line.startswith("    FAILED      extended_key_usage")
    )
    assert lines[eku_line + 1].strip().startswith("expected: [")
    assert "emailProtection" in lines[eku_line + 1]
    assert lines[eku_line + 2].strip() == f"actual:   {CLIENT_AUTH}"
    cn_line = next(index for index, line in enumerate(lines) if line.startswith("    passed      cn"))
    assert lines[cn_line + 1].strip() == f"expected: {SERIAL}_mycompany"


def test_explain_passing_device(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, _ = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, check_private_key=False, locations={"paths": [cert_path]})

    code, out, _ = cli.run("explain", str(collect(cli, cert_path)))

    assert code == 0
    assert ": PASSED" in out
    assert condition_lines(out) == {
        "signer": "passed",
        "validity": "passed",
        "cn": "not checked",
        "extended_key_usage": "not checked",
        "private_key": "not checked",
        "subject_alternative_names": "not checked",
    }
    assert "(check_private_key is false)" in out


def test_explain_no_certificate_lists_errors(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    folder = cli.work / "certs"
    folder.mkdir()
    (folder / "client.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cli.add_rule(ca_id, locations={"paths": [str(folder)]})

    code, out, _ = cli.run("explain", str(collect(cli, str(folder))))

    assert code == 1
    assert "no_certificate: " in out
    assert f"searched: PEM and DER files under {folder}\n" in out
    assert "1 collection error(s) in the rule's locations" in out
    assert f"{folder / 'client.pem'} (load): " in out


def test_explain_rule_option(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, name="first", locations={"paths": [cert_path, key_path]})
    second = cli.add_rule(ca_id, name="second", cn="nobody", locations={"paths": [cert_path, key_path]})
    facts_path = collect(cli, cert_path, key_path)

    code, out, _ = cli.run("explain", "--rule", second, str(facts_path))

    assert code == 1
    assert "rule 'second'" in out
    assert "rule 'first'" not in out


def test_explain_invalid_facts_fail_closed(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    bad = cli.work / "facts.json"
    bad.write_text('{"schema_version": 1}')

    code, out, err = cli.run("explain", str(bad))

    assert code == 3
    assert ": ERROR" in out
    assert "facts are invalid" in err


def test_explain_bad_format(cli: Cli) -> None:
    code, _, err = cli.run("explain", "--format", "xml")
    assert code == 2
    assert "'xml' is not a format" in err


# Extra policies


def min_rsa() -> str:
    return str(examples_dir() / "min_rsa_key_size")


def test_extra_policy_changes_result(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca, key_type="rsa"))
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    facts_path = collect(cli, cert_path, key_path)

    code, out, _ = cli.run("evaluate", str(facts_path))
    assert code == 0
    assert json.loads(out)["results"][0]["status"] == "passed"

    code, out, _ = cli.run("evaluate", "--policy", min_rsa(), str(facts_path))
    assert code == 1
    (result,) = json.loads(out)["results"]
    assert result["status"] == "failed"
    (reason,) = result["candidates"][0]["reasons"]
    assert reason["condition"] == "min_rsa_key_size"
    assert reason["code"] == "rsa_key_too_small"
    assert reason["actual"] == 2048


def test_extra_policy_leaves_ec_certificate_passing(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca, key_type="ec"))
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})

    code, _, _ = cli.run("evaluate", "--policy", min_rsa(), str(collect(cli, cert_path, key_path)))

    assert code == 0


def test_check_and_explain_take_extra_policies(cli: Cli, ca: CertKey) -> None:
    ca_id = cli.add_ca(ca)
    leaf = good_leaf(ca, key_type="ec", not_after=NOW + dt.timedelta(days=3650))
    cert_path, key_path = pem_pair(cli, leaf)
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    lifetime = str(examples_dir() / "max_certificate_lifetime")

    code, out, _ = cli.run(
        "check", "--hostname", HOSTNAME, "--serial-number", SERIAL, "--path", cert_path, "--path", key_path,
        "--policy", lifetime, "--policy", min_rsa(),
    )  # fmt: skip
    assert code == 1
    codes = [reason["code"] for reason in json.loads(out)["results"][0]["candidates"][0]["reasons"]]
    assert codes == ["lifetime_too_long"]

    code, out, _ = cli.run(
        "explain", "--policy", lifetime, "--policy", min_rsa(), str(collect(cli, cert_path, key_path))
    )
    assert code == 1
    statuses = condition_lines(out)
    assert list(statuses) == [*BUILT_IN, "max_certificate_lifetime", "min_rsa_key_size"]
    assert statuses["max_certificate_lifetime"] == "FAILED"
    assert statuses["min_rsa_key_size"] == "passed"
    assert 'expected: {"maximum_days":398}' in out


def test_own_policy_written_against_extension_point(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, name="Laptops", locations={"paths": [cert_path, key_path]})
    own = tmp_path / "own"
    own.mkdir()
    (own / "hostname.rego").write_text(
        "package certposture.conditions.corp_hostname\n\n"
        "reasons contains {\"code\": \"hostname_not_corp\", \"message\": sprintf(\"%s is not a corp host\", [input.device.hostname])} if {\n"
        "\tinput.rule.name == \"Laptops\"\n"
        "\tnot startswith(input.device.hostname, \"corp-\")\n"
        "}\n"
    )  # fmt: skip
    (own / "hostname_test.rego").write_text("package broken_test\n\nthis does not parse\n")

    code, out, err = cli.run("evaluate", "--policy", str(own), str(collect(cli, cert_path, key_path)))

    assert code == 1, err
    (reason,) = json.loads(out)["results"][0]["candidates"][0]["reasons"]
    assert reason == {
        "condition": "corp_hostname",
        "code": "hostname_not_corp",
        "message": f"{HOSTNAME} is not a corp host",
        "expected": None,
        "actual": None,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--policy is empty"),
        ("/nonexistent/policies", "no such file or folder"),
        ("EMPTY", "no .rego file other than"),
        ("TEXT", "not a .rego file"),
    ],
)
def test_bad_policy_option(cli: Cli, ca: CertKey, tmp_path: Path, value: str, message: str) -> None:
    cli.add_rule(cli.add_ca(ca))
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    value = {"EMPTY": str(tmp_path / "empty"), "TEXT": str(tmp_path / "notes.txt")}.get(value, value)
    facts_path = collect(cli)

    code, out, err = cli.run("evaluate", "--policy", value, str(facts_path))

    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_broken_extra_policy_is_a_policy_error(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.rego").write_text("package certposture.conditions.bad\n\nreasons contains if {\n")

    code, out, err = cli.run("evaluate", "--policy", str(broken), str(collect(cli)))

    assert code == 3
    assert out == ""
    assert re.search(rf"{re.escape(str(broken / 'bad.rego'))}:\d+:\d+: ", err)
    assert "backtrace" not in err.lower()


def test_extra_policy_runtime_error_fails_closed(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, locations={"paths": [cert_path, key_path]})
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "divide.rego").write_text(
        "package certposture.conditions.divide\n\nreasons contains {\"code\": \"x\", \"message\": \"y\"} if {\n"
        "\t1 / 0 > count(input.certificate.signed_by)\n}\n"
    )  # fmt: skip

    code, out, _ = cli.run("evaluate", "--policy", str(failing), str(collect(cli, cert_path, key_path)))

    assert code in (1, 3)
    assert not any(result["passed"] for result in json.loads(out)["results"])


# collect --format opa-input


def test_collect_opa_input(cli: Cli, ca: CertKey) -> None:
    cert_path, _ = pem_pair(cli, good_leaf(ca))
    code, plain, _ = cli.run("collect", "--hostname", HOSTNAME, "--path", cert_path)
    assert code == 0
    code, wrapped, _ = cli.run(
        "collect", "--hostname", HOSTNAME, "--path", cert_path, "--format", "opa-input"
    )
    assert code == 0
    document: dict[str, Any] = json.loads(wrapped)
    assert list(document) == ["input"]
    facts = json.loads(plain)
    assert document["input"]["certificates"] == facts["certificates"]
    assert document["input"]["device"] == facts["device"]

    out_file = cli.work / "input.json"
    code, out, _ = cli.run("collect", "--path", cert_path, "--format", "opa-input", "-o", str(out_file))
    assert code == 0
    assert out == ""
    assert list(json.loads(out_file.read_text())) == ["input"]


def test_collect_bad_format(cli: Cli) -> None:
    code, out, err = cli.run("collect", "--format", "yaml")
    assert code == 2
    assert out == ""
    assert "'yaml' is not a format; choose one of: json, opa-input" in err


def test_policy_option_rejects_test_file(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    test_file = tmp_path / "always_test.rego"
    test_file.write_text(
        'package certposture.conditions.always\n\nreasons contains {"code": "x", "message": "y"}\n'
    )

    code, out, err = cli.run("evaluate", "--policy", str(test_file), str(collect(cli)))

    assert code == 2
    assert out == ""
    assert "a *_test.rego file contains tests, which evaluation never loads" in err


def test_policy_option_rejects_fifo(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    fifo = tmp_path / "policy.rego"
    os.mkfifo(fifo)

    code, _, err = cli.run("evaluate", "--policy", str(fifo), str(collect(cli)))

    assert code == 2
    assert "not a regular file or folder" in err


def test_policy_option_rejects_non_utf8_name(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "good.rego").write_text("package certposture.conditions.good\n\nreasons := set()\n")
    (Path(os.fsdecode(bytes(folder) + b"/\xff\xfe.rego"))).write_text("package x\n")

    code, _, err = cli.run("evaluate", "--policy", str(folder), str(collect(cli)))

    assert code == 2
    assert (
        err.strip() == f"error: policy file name {folder}/\\xff\\xfe.rego is not valid UTF-8; rename the file"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('package certposture.conditions.typo\n\nreason contains {"code": "x", "message": "y"}\n',
         "package certposture.conditions.typo has no rule reasons"),
        ('package certposture.conditions.cn\n\nreasons := set()\n', "has the name of a built-in condition"),
    ],
)  # fmt: skip
def test_misplaced_condition_fails_rule(
    cli: Cli, ca: CertKey, tmp_path: Path, source: str, message: str
) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, locations={"paths": [cert_path, key_path]})
    policy = tmp_path / "condition.rego"
    policy.write_text(source)

    code, out, _ = cli.run("evaluate", "--policy", str(policy), str(collect(cli, cert_path, key_path)))

    assert code == 3
    (result,) = json.loads(out)["results"]
    assert result["status"] == "error"
    assert [item["code"] for item in result["reasons"]] == ["invalid_extension"]
    (reason,) = result["candidates"][0]["reasons"]
    assert reason["code"] == "invalid_extension"
    assert message in reason["message"]


def test_invalid_reason_for_one_certificate_is_rule_error(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    good_cert, good_key = pem_pair(cli, good_leaf(ca), name="good")
    odd_cert, odd_key = pem_pair(cli, make_leaf(ca, "odd-one"), name="odd")
    cli.add_rule(ca_id, locations={"paths": [good_cert, good_key, odd_cert, odd_key]})
    policy = tmp_path / "odd.rego"
    policy.write_text(
        'package certposture.conditions.odd\n\nreasons contains "not an object" if {\n'
        '\t"odd-one" in input.certificate.subject.common_names\n}\n'
    )
    facts_path = collect(cli, good_cert, good_key, odd_cert, odd_key)

    code, out, _ = cli.run("evaluate", "--policy", str(policy), str(facts_path))

    assert code == 3
    (result,) = json.loads(out)["results"]
    assert result["status"] == "error"
    assert result["passed"] is False
    codes = sorted(reason["code"] for candidate in result["candidates"] for reason in candidate["reasons"])
    assert codes == ["invalid_extension_reason"]


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("certposture.posture", "adds rules to the shipped package data.certposture.posture"),
        ("certposture_config", "under the data root certposture_config"),
    ],
)
def test_extra_policy_cannot_change_shipped_packages(
    cli: Cli, ca: CertKey, tmp_path: Path, package: str, message: str
) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "override.rego"
    policy.write_text(f"package {package}\n\nextra_rule := 1\n")

    code, out, err = cli.run("evaluate", "--policy", str(policy), str(collect(cli)))

    assert code == 3
    assert out == ""
    assert message in err


def test_evaluate_opa_input_names_the_wrapper(cli: Cli, ca: CertKey) -> None:
    cli.add_rule(cli.add_ca(ca))
    wrapped = cli.work / "input.json"
    assert cli.run("collect", "--format", "opa-input", "-o", str(wrapped))[0] == 0

    code, _, err = cli.run("evaluate", str(wrapped))

    assert code == 3
    assert "this is an OPA input document" in err


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
def test_unwritable_stdout_exits_3(cli: Cli, ca: CertKey, redirect: str) -> None:
    cli.add_rule(cli.add_ca(ca))
    facts_path = collect(cli)
    command = f'"{sys.executable}" -m certposture --home "{cli.home}" evaluate "{facts_path}" {redirect}'

    completed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)

    assert completed.returncode == 3
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error: ")


# Calls to undefined functions in extra policies

UNDEFINED_CALL = (
    'package certposture.conditions.c\n\nreasons contains {"code": "x", "message": "y"} if undefined_fn(1)\n'
)

# A helper package and a condition that calls it through an import, and calls the
# shipped reason builder by its full path.
CROSS_FILE_HELPERS = "package corp.rsa\n\ntoo_small(size) if size < 3072\n"
CROSS_FILE_CONDITION = (
    "package certposture.conditions.corp_rsa\n"
    "\n"
    "import data.corp.rsa\n"
    "\n"
    'reasons contains data.certposture.client_certificate.reason("corp_rsa", "rsa_too_small", '
    '"RSA key is too small", 3072, size) if {\n'
    "\tsize := input.certificate.public_key.size\n"
    "\trsa.too_small(size)\n"
    "}\n"
)


def write_cross_file_policies(folder: Path) -> Path:
    """Write the helper and the condition that calls it into two files of ``folder``, and return ``folder``."""
    folder.mkdir()
    (folder / "helpers.rego").write_text(CROSS_FILE_HELPERS)
    (folder / "condition.rego").write_text(CROSS_FILE_CONDITION)
    return folder


@pytest.mark.parametrize("command", ["evaluate", "explain"])
def test_undefined_function_rejected_at_load(cli: Cli, ca: CertKey, tmp_path: Path, command: str) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "c.rego"
    policy.write_text(UNDEFINED_CALL)

    code, out, err = cli.run(command, "--policy", str(policy), str(collect(cli)))

    assert code == 3
    assert out == ""
    assert err.startswith(f"error: {policy}:3:51: function undefined_fn is not defined in the loaded files")
    assert len(err.strip().splitlines()) == 1


def test_check_rejects_undefined_function(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "c.rego"
    policy.write_text(UNDEFINED_CALL)

    code, out, err = cli.run(
        "check", "--hostname", HOSTNAME, "--serial-number", SERIAL, "--policy", str(policy)
    )

    assert code == 3
    assert out == ""
    assert f"{policy}:3:51: function undefined_fn is not defined" in err


def test_undefined_shipped_function_named_with_import(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    cli.add_rule(cli.add_ca(ca))
    policy = tmp_path / "typo.rego"
    policy.write_text(
        "package certposture.conditions.typo\n\n"
        "import data.certposture.client_certificate\n\n"
        'reasons contains client_certificate.reasn("typo", "x", "y", null, null) if input.certificate\n'
    )  # fmt: skip

    code, _, err = cli.run("evaluate", "--policy", str(policy), str(collect(cli)))

    assert code == 3
    assert (
        f"{policy}:5:18: function client_certificate.reasn, "
        "imported from data.certposture.client_certificate.reasn, is not defined"
    ) in err


def test_functions_from_other_files_accepted(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca, key_type="rsa"))
    cli.add_rule(ca_id, **FULL_RULE, locations={"paths": [cert_path, key_path]})
    policies = write_cross_file_policies(tmp_path / "corp")

    code, out, err = cli.run("evaluate", "--policy", str(policies), str(collect(cli, cert_path, key_path)))

    assert code == 1, err
    (reason,) = json.loads(out)["results"][0]["candidates"][0]["reasons"]
    assert reason == {
        "condition": "corp_rsa",
        "code": "rsa_too_small",
        "message": "RSA key is too small",
        "expected": 3072,
        "actual": 2048,
    }


@pytest.mark.parametrize("example", ["min_rsa_key_size", "max_certificate_lifetime"])
def test_examples_pass_function_check(example: str) -> None:
    check_policies([examples_dir() / example])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.rego": 'package certposture.conditions.acme.cn_prefix\n\nreasons contains {"code": "x", "message": "y"}\n'},
         "nested below a condition"),
        ({"a.rego": "package certposture\n\nposture := {}\n"}, "inside the shipped certposture packages"),
        ({"a.rego": "package certposture.posture.results\n\nx := 1\n"}, "inside the shipped certposture packages"),
        ({"a.rego": "package certposture.client_certificate.reason\n\nx := 1\n"},
         "inside the shipped certposture packages"),
        ({"a.rego": "package acme.lib\n\nx := 1\n", "b.rego": "package acme.lib.x\n\ny := 1\n"},
         "conflicts with the rule data.acme.lib.x"),
        ({"a.rego": 'package certposture.conditions.arity\n\nimport data.certposture.client_certificate.reason\n\n'
                    'reasons contains reason("arity", "c", "m")\n'},
         "function reason takes 5 argument(s), but the call passes 3"),
        ({"a.rego": 'package certposture.conditions.min_rsa_key_size\n\nsprintf(_, _) := "never" if false\n'},
         "sprintf is the name of a regorus builtin"),
        ({"a.rego": 'package certposture.conditions["\u0455igner"]\n\nreasons := set()\n'},
         "which is not an ASCII identifier"),
        ({"a.rego": 'package certposture.conditions[""]\n\nreasons := set()\n'}, "which is not an ASCII identifier"),
    ],
)  # fmt: skip
def test_extra_policy_rejected_at_load(
    cli: Cli, ca: CertKey, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    cli.add_rule(cli.add_ca(ca))
    folder = tmp_path / "extra"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    facts_path = collect(cli)

    for command in ("evaluate", "bundle"):
        arguments = [str(facts_path)] if command == "evaluate" else ["-o", str(cli.work / "b.tar.gz")]
        code, out, err = cli.run(command, "--policy", str(folder), *arguments)

        assert code == 3, f"{command}: {err}"
        assert out == ""
        assert message in err
    assert not (cli.work / "b.tar.gz").exists()


def test_builtin_shadowing_cannot_disable_condition(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca, key_type="rsa"))
    cli.add_rule(ca_id, locations={"paths": [cert_path, key_path]})
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "p.rego").write_text(
        'package certposture.conditions.min_rsa_key_size\n\nsprintf(_, _) := x if {\n\tx := "never"\n\tfalse\n}\n'
    )

    code, out, err = cli.run(
        "evaluate", "--policy", min_rsa(), "--policy", str(shadow), str(collect(cli, cert_path, key_path))
    )

    assert code == 3
    assert out == ""
    assert f"{shadow / 'p.rego'}:3:1: sprintf is the name of a regorus builtin" in err


def test_extra_reason_with_large_float(cli: Cli, ca: CertKey, tmp_path: Path) -> None:
    ca_id = cli.add_ca(ca)
    cert_path, key_path = pem_pair(cli, good_leaf(ca))
    cli.add_rule(ca_id, locations={"paths": [cert_path, key_path]})
    policy = tmp_path / "big.rego"
    policy.write_text(
        'package certposture.conditions.big\n\nreasons contains {"code": "c", "message": "m", "actual": 1e308}\n'
    )

    code, out, err = cli.run("evaluate", "--policy", str(policy), str(collect(cli, cert_path, key_path)))

    assert code == 1, err
    (reason,) = json.loads(out)["results"][0]["candidates"][0]["reasons"]
    assert reason["actual"] == 1e308
