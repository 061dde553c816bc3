"""OPA bundle contents: manifest, roots, data, policy files, reproducible bytes. No OPA engine needed."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import regorus

from certposture import bundle, engine
from certposture.errors import InputError, PolicyError
from certposture.rules import validate_rules
from certposture.signing import parse_signing_certificate
from certposture.store import Store
from tests.certgen import CertKey, make_ca
from tests.opa_support import bundle_files, read_bundle

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"

RULE: dict[str, Any] = {
    "id": "corp-device",
    "name": "Corp device certificate",
    "type": "client_certificate_v2",
    "input": {
        "certificate_id": "ca-device",
        "operating_system": "linux",
        "check_private_key": True,
        "cn": "${serial_number}_mycompany",
        "locations": {"paths": ["/usr/local/mycompany/certs/client.pem"]},
    },
}

CUSTOM_POLICY = """package acme.device_rules

import rego.v1

allowed if input.device.os.family == "linux"
"""


@pytest.fixture(scope="module")
def ca() -> CertKey:
    return make_ca("Example Device CA")


@pytest.fixture
def store(tmp_path: Path, ca: CertKey) -> Store:
    """A store with one rule and its signing certificate, whose private key the store keeps."""
    store = Store(tmp_path / "home")
    parsed = parse_signing_certificate(ca.cert_pem() + ca.key_pem(), "ca.pem")
    store.add_signing_certificate(
        parsed, "Example Device CA", keep_private_key=True, certificate_id="ca-device"
    )
    rules, problems = validate_rules([RULE], store.signing_certificate_exists)
    assert problems == []
    store.add_rules(rules)
    return store


@pytest.fixture
def config(store: Store) -> dict[str, Any]:
    return engine.build_config(store.list_rules(), store.list_signing_certificates(), None)


def write_policy(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def manifest_of(data: bytes) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(bundle_files(data)[bundle.MANIFEST_PATH])
    return manifest


def rego_packages(data: bytes) -> dict[str, str]:
    """Return the package of every .rego file in a bundle, parsed by regorus."""
    return {
        name: regorus.Engine().add_policy(name, content.decode())
        for name, content in bundle_files(data).items()
        if name.endswith(".rego")
    }


def covers(root: str, package: str) -> bool:
    segments = package.removeprefix("data.").split(".")
    return segments[: len(root.split("/"))] == root.split("/")


# Manifest and layout


def test_manifest_fields(config: dict[str, Any]) -> None:
    manifest = manifest_of(bundle.build_bundle(config, []))

    assert set(manifest) == {"revision", "roots", "rego_version"}
    assert manifest["rego_version"] == 1
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["revision"])
    assert manifest["roots"] == ["certposture", "certposture_config"]


def test_layout_shipped_policies_without_tests(config: dict[str, Any]) -> None:
    names = list(read_bundle(bundle.build_bundle(config, [])))

    shipped = [f"certposture/{path.name}" for path in engine.policy_files([engine.shipped_policy_dir()])]
    assert names == sorted([".manifest", "data.json", *shipped])
    assert not [name for name in names if name.endswith("_test.rego")]


def test_policy_files_unchanged(config: dict[str, Any]) -> None:
    files = bundle_files(bundle.build_bundle(config, []))

    for path in engine.policy_files([engine.shipped_policy_dir()]):
        assert files[f"certposture/{path.name}"] == path.read_bytes()


def test_roots_cover_every_package(config: dict[str, Any], tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write_policy(extra, "custom.rego", CUSTOM_POLICY)
    data = bundle.build_bundle(config, [extra, EXAMPLES])

    roots = manifest_of(data)["roots"]
    packages = rego_packages(data)
    assert "data.acme.device_rules" in packages.values()
    for name, package in packages.items():
        assert any(covers(root, package) for root in roots), f"{name}: {package} is under no root of {roots}"
    assert covers(engine.CONFIG_ROOT, f"data.{engine.CONFIG_ROOT}")


def test_roots_do_not_overlap(config: dict[str, Any], tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write_policy(extra, "custom.rego", CUSTOM_POLICY)
    write_policy(extra, "more.rego", "package acme.other\n\nimport rego.v1\n\nx := 1\n")
    roots = manifest_of(bundle.build_bundle(config, [extra]))["roots"]

    assert roots == ["acme", "certposture", "certposture_config"]
    for root in roots:
        for other in roots:
            if other != root:
                assert not other.startswith(f"{root}/"), f"root {other} lies under root {root}"


def test_roots_of_quoted_package() -> None:
    assert bundle.package_root('data.acme["device.rules"].x') == "acme"
    assert bundle.bundle_roots(["data.certposture.posture", "data.acme.x", "data.acme.y"]) == [
        "acme",
        "certposture",
        "certposture_config",
    ]


def test_tar_headers_fixed(config: dict[str, Any]) -> None:
    data = bundle.build_bundle(config, [])

    assert data[:2] == b"\x1f\x8b"
    assert data[4:8] == b"\0\0\0\0", "gzip header mtime is not 0"
    for member in read_bundle(data).values():
        assert member.type == tarfile.REGTYPE, member.name
        assert member.mtime == 0, member.name
        assert (member.uid, member.gid) == (0, 0), member.name
        assert (member.uname, member.gname) == ("", ""), member.name
        assert member.mode == 0o644, member.name


# Data


def test_data_is_config(config: dict[str, Any]) -> None:
    data = json.loads(bundle_files(bundle.build_bundle(config, []))[bundle.DATA_PATH])

    assert data == {"certposture_config": config}
    assert "evaluated_at" not in data["certposture_config"]
    assert data["certposture_config"]["rules"][0]["id"] == "corp-device"
    assert list(data["certposture_config"]["signing_certificates"]) == ["ca-device"]


def test_store_bundle_equals_config_bundle(store: Store, config: dict[str, Any]) -> None:
    assert bundle.build_store_bundle(store) == bundle.build_bundle(config, [])


def test_store_private_key_left_out(store: Store, ca: CertKey) -> None:
    key_file = store.home / "private" / "ca-device.pem"
    assert key_file.is_file(), "the fixture should keep the CA key in the store"
    key_body = b"".join(key_file.read_bytes().splitlines()[1:-1])

    files = bundle_files(bundle.build_store_bundle(store))
    record = json.loads(files[bundle.DATA_PATH])["certposture_config"]["signing_certificates"]["ca-device"]

    assert record["private_key_stored"] is True
    for name, content in files.items():
        assert b"PRIVATE KEY" not in content, name
        assert key_body[:40] not in content.replace(b"\n", b""), name


def test_private_key_in_data_rejected(config: dict[str, Any], ca: CertKey) -> None:
    config["rules"][0]["description"] = ca.key_pem().decode()

    with pytest.raises(PolicyError, match="PEM private key"):
        bundle.build_bundle(config, [])


def test_pinned_time_rejected(store: Store) -> None:
    config = engine.build_config(store.list_rules(), store.list_signing_certificates(), None)
    config["evaluated_at"] = "2026-12-04T19:00:00Z"

    with pytest.raises(ValueError, match="evaluated_at"):
        bundle.build_bundle(config, [])


def test_unexpected_config_key_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected exactly"):
        bundle.build_bundle({**config, "explain": True}, [])


def test_empty_store_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no rules stored"):
        bundle.build_store_bundle(Store(tmp_path / "empty"))


# Reproducible bytes and revision


def test_same_inputs_same_bytes(config: dict[str, Any], tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write_policy(extra, "custom.rego", CUSTOM_POLICY)

    first = bundle.build_bundle(config, [extra])
    write_policy(extra, "custom.rego", CUSTOM_POLICY)  # a new mtime must not matter
    assert bundle.build_bundle(json.loads(json.dumps(config)), [extra]) == first


def test_key_order_does_not_matter(config: dict[str, Any]) -> None:
    reordered = {
        "signing_certificates": config["signing_certificates"],
        "rules": [dict(reversed(list(rule.items()))) for rule in config["rules"]],
    }

    assert bundle.build_bundle(reordered, []) == bundle.build_bundle(config, [])


def test_revision_follows_content(config: dict[str, Any]) -> None:
    first = manifest_of(bundle.build_bundle(config, []))["revision"]
    config["rules"][0]["name"] = "Renamed rule"
    second = manifest_of(bundle.build_bundle(config, []))["revision"]

    assert first != second


def test_explicit_revision(config: dict[str, Any]) -> None:
    manifest = manifest_of(bundle.build_bundle(config, [], revision="2026-12-04.1"))

    assert manifest["revision"] == "2026-12-04.1"


@pytest.mark.parametrize("revision", ["", "  ", "a\nb"])
def test_bad_revision_rejected(config: dict[str, Any], revision: str) -> None:
    with pytest.raises(InputError, match="--revision"):
        bundle.build_bundle(config, [], revision=revision)


# Extra policy folders


def test_extra_folder_included(config: dict[str, Any], tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write_policy(extra / "acme", "custom.rego", CUSTOM_POLICY)
    write_policy(extra / "acme", "custom_test.rego", "package acme.device_rules_test\n\nimport rego.v1\n")
    files = bundle_files(bundle.build_bundle(config, [extra]))

    assert files["extra/1/acme/custom.rego"] == CUSTOM_POLICY.encode()
    assert "extra/1/acme/custom_test.rego" not in files


def test_extra_folders_numbered(config: dict[str, Any], tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    write_policy(first, "custom.rego", CUSTOM_POLICY)
    write_policy(second, "custom.rego", "package acme.second\n\nimport rego.v1\n\nx := 2\n")
    names = list(read_bundle(bundle.build_bundle(config, [first, second])))

    assert "extra/1/custom.rego" in names
    assert "extra/2/custom.rego" in names


def test_extra_file_included(config: dict[str, Any], tmp_path: Path) -> None:
    path = write_policy(tmp_path / "loose", "custom.rego", CUSTOM_POLICY)
    files = bundle_files(bundle.build_bundle(config, [path]))

    assert files["extra/1/custom.rego"] == CUSTOM_POLICY.encode()


def test_example_conditions_included(config: dict[str, Any]) -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} does not exist")
    packages = rego_packages(bundle.build_bundle(config, [EXAMPLES]))

    example_packages = sorted(package for name, package in packages.items() if name.startswith("extra/1/"))
    assert example_packages
    assert all(package.startswith("data.certposture.conditions.") for package in example_packages)


def test_parse_error_has_location(config: dict[str, Any], tmp_path: Path) -> None:
    broken = write_policy(tmp_path / "extra", "broken.rego", "package acme.broken\n\nallow if {\n")

    with pytest.raises(PolicyError) as raised:
        bundle.build_bundle(config, [broken.parent])

    assert re.search(rf"{re.escape(str(broken))}:\d+:\d+: ", str(raised.value)), str(raised.value)


def test_rego_v0_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    old = write_policy(tmp_path / "extra", "old.rego", "package acme.old\n\nallow {\n\ttrue\n}\n")

    with pytest.raises(PolicyError, match=re.escape(f"{old}:")):
        bundle.build_bundle(config, [old.parent])


def test_not_utf8_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "latin1.rego").write_bytes(b"package acme.latin\n\n# caf\xe9\n")

    with pytest.raises(PolicyError, match="not UTF-8"):
        bundle.build_bundle(config, [folder])


def test_package_under_data_root_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    write_policy(folder, "clash.rego", "package certposture_config.extra\n\nimport rego.v1\n\nx := 1\n")

    with pytest.raises(PolicyError, match="under the data root certposture_config"):
        bundle.build_bundle(config, [folder])


def test_missing_folder_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        bundle.build_bundle(config, [tmp_path / "missing"])


def test_folder_without_policies_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "tests-only"
    write_policy(folder, "only_test.rego", "package acme.only_test\n")

    with pytest.raises(InputError, match=r"no \.rego files other than"):
        bundle.build_bundle(config, [folder])


def test_shipped_folder_twice_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="would be included twice"):
        bundle.build_bundle(config, [engine.shipped_policy_dir()])


def test_nested_folders_rejected(config: dict[str, Any], tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    write_policy(outer / "inner", "custom.rego", CUSTOM_POLICY)

    with pytest.raises(InputError, match="would be included twice"):
        bundle.build_bundle(config, [outer, outer / "inner"])
