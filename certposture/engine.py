"""Host of the Rego engine: load the shipped policies, pass rules and signing-certificate data, evaluate facts.

The policies read the facts document as ``input`` and the store under
``data.certposture_config`` (``rules``, ``signing_certificates`` keyed by id,
and ``evaluated_at`` when the evaluation time is pinned). Any engine failure or
result of an unexpected shape raises :class:`PolicyError`; no caller may turn
that into a pass.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import regorus

from certposture.errors import InputError, PolicyError
from certposture.regoast import check_builtin_shadowing, check_function_calls, package_path, rule_paths
from certposture.regofiles import RegoLoadError
from collector.facts import Facts, format_utc

logger = logging.getLogger(__name__)

RESULTS_QUERY = "data.certposture.posture.results"
CONFIG_ROOT = "certposture_config"
STATUSES = ("passed", "failed", "not_applicable", "error")

_ENGINE_LOCATION = re.compile(r"-->\s*(\S+:\d+:\d+)")
_ENGINE_MESSAGE = re.compile(r"^error:\s*(.+)$", re.MULTILINE)


def _policy_root() -> Path:
    """Return the ``policies`` folder: inside the wheel, or at the top of a source tree."""
    packaged = Path(__file__).resolve().parent / "policies"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parent.parent / "policies"
    if source_tree.is_dir():
        return source_tree
    raise PolicyError(f"shipped policies not found in {packaged} or {source_tree}; reinstall certposture")


def shipped_policy_dir() -> Path:
    """Return the folder of the policies that every evaluation loads (``policies/certposture``)."""
    return _policy_root() / "certposture"


def examples_dir() -> Path:
    """Return the folder of the example extra conditions (``policies/examples``), loaded only with ``--policy``."""
    return _policy_root() / "examples"


def policy_files(directories: Iterable[Path]) -> list[Path]:
    """Return the non-test ``.rego`` files under ``directories`` (folders or single files), in a stable load order."""
    files: list[Path] = []
    for directory in directories:
        candidates = sorted(directory.rglob("*.rego")) if directory.is_dir() else [directory]
        files.extend(path for path in candidates if not path.name.endswith("_test.rego"))
    return files


def extra_policy_dirs(values: Sequence[str]) -> list[Path]:
    """Check the ``--policy`` values: each must be a ``.rego`` file or a folder with at least one."""
    directories: list[Path] = []
    for value in values:
        if not value.strip():
            raise InputError("--policy is empty; give a folder of .rego files (an unset shell variable?)")
        path = Path(value)
        if path.is_dir():
            if not policy_files([path]):
                raise InputError(
                    f"--policy {value}: the folder has no .rego file other than *_test.rego files; "
                    "give a folder of policy files"
                )
        elif path.is_file():
            if path.suffix != ".rego":
                raise InputError(f"--policy {value}: not a .rego file; give a folder of .rego files")
            if path.name.endswith("_test.rego"):
                raise InputError(
                    f"--policy {value}: a *_test.rego file contains tests, which evaluation never loads; "
                    "give the policy file, and run the tests with certposture test"
                )
        elif path.exists():
            raise InputError(f"--policy {value}: not a regular file or folder; give a folder of .rego files")
        else:
            raise InputError(f"--policy {value}: no such file or folder; give a folder of .rego files")
        for file in policy_files([path]):
            _check_utf8_name(file)
        directories.append(path)
    return directories


def _check_utf8_name(path: Path) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        escaped = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"policy file name {escaped} is not valid UTF-8; rename the file") from None


def load_policies(engine: Any, directories: Sequence[Path]) -> list[str]:
    """Add the non-test policies of ``directories`` to ``engine`` and return their packages, in load order.

    Raises PolicyError for a file that cannot be read or parsed.
    """
    packages: list[str] = []
    for path in policy_files(directories):
        _check_utf8_name(path)
        try:
            packages.append(str(engine.add_policy_from_file(str(path))))
        except RuntimeError as error:
            raise PolicyError(f"policy {path} cannot be loaded: {describe_engine_error(error)}") from None
        except OSError as error:
            raise PolicyError(f"policy {path} cannot be read: {error.strerror}") from None
    return packages


def check_policies(extra_dirs: Sequence[Path]) -> None:
    """Load the shipped and extra policies once, so that a broken extra file is reported before evaluation.

    An extra policy must declare a package ``certposture.conditions.NAME``
    or a package outside ``certposture`` and ``certposture_config``, so that
    it cannot change the shipped rules or the stored configuration. It may
    not define a rule named like a builtin, which would replace the builtin
    for every file of its package. Three more mistakes are rejected, because
    OPA refuses to load a bundle with them and regorus would fail only when
    evaluation reaches them. They are a package that coincides with a rule
    of another module, a call to a function that no loaded policy defines
    and regorus does not provide, and a call to a defined function with the
    wrong number of arguments.
    """
    engine = regorus.Engine()
    shipped = set(load_policies(engine, [shipped_policy_dir()]))
    for path in policy_files(extra_dirs):
        (package,) = load_policies(engine, [path])
        _check_extra_package(path, package, shipped)

    modules = {module["source"]["file"]: module for module in orjson.loads(engine.get_ast_as_json())}
    _check_package_conflicts(modules)
    extra_files = {str(path) for path in policy_files(extra_dirs)}
    try:
        for file, module in modules.items():
            if file in extra_files:
                check_builtin_shadowing(module)
        check_function_calls(modules, list(modules))
    except RegoLoadError as error:
        raise PolicyError(str(error)) from None


_CONDITIONS_PACKAGE = "data.certposture.conditions"
# Condition names appear in results and explain output beside the built-in ones, so they are
# plain ASCII: an empty name or a look-alike letter (Cyrillic s in "signer") is rejected.
_CONDITION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_extra_package(path: Path, package: str, shipped: set[str]) -> None:
    if package in shipped:
        raise PolicyError(
            f"policy {path} adds rules to the shipped package {package}; "
            "put an extra condition in its own package certposture.conditions.NAME"
        )
    if package == f"data.{CONFIG_ROOT}" or package.startswith(f"data.{CONFIG_ROOT}."):
        raise PolicyError(
            f"policy {path} declares package {package}, under the data root {CONFIG_ROOT}; "
            "move it to another package"
        )
    if package.startswith(f"{_CONDITIONS_PACKAGE}."):
        name = package.removeprefix(f"{_CONDITIONS_PACKAGE}.")
        if "." in name or "[" in name:
            raise PolicyError(
                f"policy {path} declares package {package}, nested below a condition; "
                "a condition is a package certposture.conditions.NAME with one more name"
            )
        if not _CONDITION_NAME.fullmatch(name):
            raise PolicyError(
                f"policy {path} declares condition name {name!r}, which is not an ASCII identifier; "
                "name the condition with letters A-Z and a-z, digits and underscores"
            )
    elif package == "data.certposture" or package.startswith("data.certposture."):
        raise PolicyError(
            f"policy {path} declares package {package} inside the shipped certposture packages; "
            "use certposture.conditions.NAME for an extra condition and a package outside certposture for helpers"
        )


def _check_package_conflicts(modules: dict[str, dict[str, Any]]) -> None:
    """Reject a package that lies at or below the document of a rule in another module, which OPA rejects."""
    rules = {path: file for file, module in modules.items() for path in rule_paths(module)}
    for file, module in modules.items():
        package = package_path(module)
        for length in range(1, len(package) + 1):
            owner = rules.get(package[:length])
            if owner is not None:
                raise PolicyError(
                    f"policy {file} declares package data.{'.'.join(package)}, which conflicts with the "
                    f"rule data.{'.'.join(package[:length])} in {owner}; rename the package or the rule"
                )


def build_config(
    rules: Sequence[dict[str, Any]],
    signing_certificates: Sequence[dict[str, Any]],
    evaluated_at: datetime | None,
    *,
    explain: bool = False,
    require_proof: bool = False,
) -> dict[str, Any]:
    """Build the ``data.certposture_config`` document the policies read.

    With ``explain``, each candidate in the results also lists every condition
    with its status, expected and actual values. With ``require_proof``, a
    candidate passes only with a verified proof of possession in
    ``input.proof_verification``.
    """
    config: dict[str, Any] = {
        "rules": list(rules),
        "signing_certificates": {record["id"]: record for record in signing_certificates},
    }
    if evaluated_at is not None:
        config["evaluated_at"] = format_utc(evaluated_at)
    if explain:
        config["explain"] = True
    if require_proof:
        config["require_proof"] = True
    return config


def policy_input(facts: Facts, proof_verification: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the policies' input: the facts without ``proofs``, and the proof verdicts when given."""
    document = facts.model_dump(mode="json", exclude={"proofs"})
    if proof_verification is not None:
        document["proof_verification"] = proof_verification
    return document


class Evaluator:
    """The policies and one configuration loaded into regorus once, for evaluating many facts documents.

    Loading and parsing the policies costs far more than evaluating one
    device, so a batch keeps one ``Evaluator`` and sets each device's facts
    as the input in turn. After an evaluation fails, the engine is replaced
    by a clone of the state before any input was set, so that one device's
    failure cannot leave state behind for the next. Raises PolicyError when
    the policies or the configuration cannot be loaded.
    """

    def __init__(self, config: dict[str, Any], policy_dirs: Sequence[Path] | None = None) -> None:
        self.config = config
        directories = list(policy_dirs) if policy_dirs is not None else [shipped_policy_dir()]
        loaded = regorus.Engine()
        load_policies(loaded, directories)
        try:
            loaded.add_data_json(orjson.dumps({CONFIG_ROOT: config}).decode())
        except RuntimeError as error:
            raise PolicyError(f"policy data cannot be loaded: {describe_engine_error(error)}") from None
        except TypeError as error:
            # orjson rejects integers beyond 64 bits, which the facts schema bounds but stored rules do not.
            raise PolicyError(f"policy input cannot be encoded as JSON: {error}") from None
        self._pristine = loaded
        self._engine = loaded.clone()

    def evaluate(
        self, facts: Facts, proof_verification: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Evaluate ``facts`` against every rule of the configuration; return one result per rule, in rule order.

        The policies get the facts without ``proofs`` and, when given, the
        verdicts of ``certposture.proofcheck`` as ``proof_verification``.
        """
        try:
            self._engine.set_input_json(orjson.dumps(policy_input(facts, proof_verification)).decode())
            # As JSON, because eval_rule fails to convert some values to Python ("not an i64" for 1e308).
            raw_json = self._engine.eval_rule_as_json(RESULTS_QUERY)
        except RuntimeError as error:
            self._engine = self._pristine.clone()
            raise PolicyError(f"policy evaluation failed: {describe_engine_error(error)}") from None
        except TypeError as error:
            raise PolicyError(f"policy input cannot be encoded as JSON: {error}") from None
        try:
            # regorus writes an undefined rule as this JSON string.
            raw = None if raw_json.strip() == '"<undefined>"' else orjson.loads(raw_json)
        except orjson.JSONDecodeError as error:
            raise PolicyError(f"policy results are not valid JSON: {error}") from None

        results = _check_results(raw, self.config["rules"])
        logger.debug("evaluated %d rule(s)", len(results))
        return results


def evaluate(
    facts: Facts,
    config: dict[str, Any],
    policy_dirs: Sequence[Path] | None = None,
    proof_verification: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``facts`` against every rule in ``config``; return one result per rule, in rule order."""
    return Evaluator(config, policy_dirs).evaluate(facts, proof_verification)


def _check_results(raw: Any, rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reject results whose shape would let a failure pass unnoticed."""
    if raw is None:
        raise PolicyError(f"{RESULTS_QUERY} is undefined; the policies did not produce results")
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise PolicyError(f"{RESULTS_QUERY} is not a list of objects")

    expected_ids = [rule["id"] for rule in rules]
    actual_ids = [item.get("rule_id") for item in raw]
    if actual_ids != expected_ids:
        raise PolicyError(
            f"{RESULTS_QUERY} lists rules {actual_ids}, expected one result per stored rule {expected_ids}"
        )
    for item in raw:
        status = item.get("status")
        if status not in STATUSES:
            raise PolicyError(
                f"rule {item['rule_id']}: status {status!r} is not one of {', '.join(STATUSES)}"
            )
        if item.get("passed") is not (status == "passed"):
            raise PolicyError(
                f"rule {item['rule_id']}: passed={item.get('passed')!r} contradicts status {status}"
            )
        if status == "passed" and not item.get("matched_certificates"):
            raise PolicyError(f"rule {item['rule_id']}: status passed without a matched certificate")
    return [_ordered_result(item) for item in raw]


# Rego objects come back with sorted keys; people read results in this order.
_RESULT_KEYS = (
    "rule_id",
    "rule_name",
    "type",
    "status",
    "passed",
    "matched_certificates",
    "candidates",
    "reasons",
    "errors",
)
_CANDIDATE_KEYS = ("fingerprint_sha256", "subject", "source", "passed", "reasons", "conditions")
_REASON_KEYS = ("condition", "code", "message", "expected", "actual")
_CONDITION_KEYS = ("condition", "status", "expected", "actual")


def _ordered(value: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    ordered = {key: value[key] for key in keys if key in value}
    ordered.update((key, item) for key, item in value.items() if key not in ordered)
    return ordered


def _ordered_result(result: dict[str, Any]) -> dict[str, Any]:
    ordered = _ordered(result, _RESULT_KEYS)
    ordered["reasons"] = [_ordered(reason, _REASON_KEYS) for reason in result.get("reasons", [])]
    ordered["candidates"] = [_ordered_candidate(candidate) for candidate in result.get("candidates", [])]
    return ordered


def _ordered_candidate(candidate: dict[str, Any]) -> dict[str, Any]:
    ordered = _ordered(candidate, _CANDIDATE_KEYS)
    ordered["reasons"] = [_ordered(reason, _REASON_KEYS) for reason in candidate.get("reasons", [])]
    if "conditions" in candidate:
        ordered["conditions"] = [_ordered(item, _CONDITION_KEYS) for item in candidate["conditions"]]
    return ordered


def describe_engine_error(error: BaseException) -> str:
    """Reduce a regorus error to ``file:line:col: message``, dropping the source excerpt and Rust backtrace."""
    text = str(error).split("Stack backtrace:")[0]
    location = _ENGINE_LOCATION.search(text)
    message = _ENGINE_MESSAGE.search(text)
    if message is None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[0] if lines else type(error).__name__
    if location is None:
        return message.group(1).strip()
    return f"{location.group(1)}: {message.group(1).strip()}"
