"""The CLI on each platform: where it collects, and iOS, Android and ChromeOS refused."""

from __future__ import annotations

from typing import Any

import pytest

from certposture import posture
from tests.test_end_to_end import Cli, cli

__all__ = ["cli"]  # fixture, imported for pytest
from tests.certgen import make_ca


def _rule(operating_system: str, **locations: Any) -> dict[str, Any]:
    rule_input: dict[str, Any] = {
        "certificate_id": "ca",
        "operating_system": operating_system,
        "check_private_key": True,
    }
    if locations:
        rule_input["locations"] = locations
    return {"name": f"{operating_system} rule", "type": "client_certificate_v2", "input": rule_input}


@pytest.mark.parametrize("family", ["ios", "android", "chromeos"])
@pytest.mark.parametrize("command", ["collect", "check"])
def test_unsupported_platform_exits_2(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
    command: str,
) -> None:
    monkeypatch.setattr(posture, "detect_platform", lambda: family)

    code, out, err = cli.run(command, "--hostname", "h", "--serial-number", "s")

    assert code == 2
    assert out == ""
    assert err == (
        f"error: client certificate checks are not supported on {family}; "
        "supported operating systems: linux, mac, windows\n"
    )


def test_trust_store_option_on_linux_exits_2(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(posture, "detect_platform", lambda: "linux")

    code, out, err = cli.run("collect", "--trust-store", "system", "--hostname", "h", "--serial-number", "s")

    assert code == 2
    assert out == ""
    assert "trust store 'system' cannot be read on linux" in err
    assert "--path" in err


def test_empty_trust_store_option_exits_2(cli: Cli) -> None:
    code, _, err = cli.run("collect", "--trust-store", " ", "--hostname", "h", "--serial-number", "s")

    assert code == 2
    assert "--trust-store is empty; give system or user" in err


def test_windows_rule_with_user_store_is_accepted(cli: Cli) -> None:
    ca_id = cli.add_ca(make_ca("Example Device CA"))

    cli.add_rule(ca_id, "windows", locations={"trust_stores": ["system", "user"]})

    code, out, _ = cli.run("rules", "list")
    assert code == 0
    assert '"user"' in out


def test_locations_on_linux_ignore_store_rules() -> None:
    rules = [
        _rule("mac"),
        _rule("windows", trust_stores=["user"]),
        _rule("linux", paths=["/etc/corp/client.pem"]),
    ]

    locations = posture.locations_for_rules(rules, "linux")

    assert locations.paths == ("/etc/corp/client.pem",)
    assert locations.nssdbs == ()
    assert locations.trust_stores == ()


def test_locations_on_mac_default_to_system() -> None:
    rules = [_rule("linux"), _rule("mac"), _rule("windows", trust_stores=["user"])]

    locations = posture.locations_for_rules(rules, "mac")

    assert locations.trust_stores == ("system",)
    assert locations.paths == ()
    assert locations.nssdbs == ()


def test_locations_on_windows_union_of_rules() -> None:
    rules = [
        _rule("windows", trust_stores=["user"]),
        _rule("windows"),
        _rule("windows", trust_stores=["system", "user"]),
        _rule("mac"),
    ]

    assert posture.locations_for_rules(rules, "windows").trust_stores == ("user", "system")


def test_locations_without_rules_use_each_default() -> None:
    assert posture.locations_for_rules([], "linux").nssdbs == ("/etc/pki/nssdb",)
    assert posture.locations_for_rules([], "mac").trust_stores == ("system",)
    assert posture.locations_for_rules([], "windows").trust_stores == ("system",)


def test_locations_on_mac_without_mac_rules_are_empty() -> None:
    locations = posture.locations_for_rules([_rule("linux"), _rule("windows")], "mac")

    assert locations.trust_stores == ()
    assert locations.paths == ()
    assert locations.nssdbs == ()


@pytest.mark.parametrize(
    "locations",
    [
        {"trust_stores": "system"},
        {"trust_stores": [7, None, "login"]},
        "system",
        {"paths": "/etc/corp/client.pem"},
        {"paths": ["relative.pem", 3]},
    ],
)
def test_locations_skip_malformed_rule(locations: Any) -> None:
    # Rules edited by hand in the store: the policy reports them, and collection of the others goes on.
    for platform in ("linux", "mac", "windows"):
        rule = _rule(platform)
        rule["input"]["locations"] = locations
        good = _rule(platform)

        result = posture.locations_for_rules([rule, good], platform)

        assert result.paths == ()
        assert result.trust_stores == (() if platform == "linux" else ("system",))
        assert result.nssdbs == (("/etc/pki/nssdb",) if platform == "linux" else ())


def test_locations_skip_rule_without_input_object() -> None:
    rule: dict[str, Any] = {"name": "broken", "type": "client_certificate_v2", "input": ["mac"]}

    assert posture.locations_for_rules([rule, _rule("mac")], "mac").trust_stores == ("system",)
