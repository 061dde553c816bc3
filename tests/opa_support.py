"""Helpers for running the policies on OPA beside regorus, and for reading bundles.

The OPA engine comes from ``opa-golib-python-bindings``, a ctypes wrapper
around a Go library that embeds OPA. ``make`` installs it into the test
environment when the wheel can be downloaded for this platform. Without it,
the tests that need OPA are skipped with the reason, and the pytest header
says so.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import importlib.metadata
import io
import os
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from certposture import engine

OPA_DISTRIBUTION = "opa-golib-python-bindings"
OPA_MODULE = "opa_bindings"
RESULTS_DOCUMENT = "certposture.posture.results"

# Go records each module dependency in the build info of the shared library as "dep<TAB>path<TAB>version".
_GO_BUILD_INFO_OPA = re.compile(rb"dep\tgithub\.com/open-policy-agent/opa\t(v[0-9][0-9A-Za-z.+-]*)\t")


@dataclass(frozen=True)
class OpaStatus:
    """Whether the OPA engine can run here, and the description the pytest header prints."""

    module: ModuleType | None
    description: str

    @property
    def available(self) -> bool:
        return self.module is not None

    @property
    def header(self) -> str:
        if self.available:
            return f"OPA engine: {self.description}"
        return f"OPA engine: {self.description}; differential tests will be skipped"


@functools.cache
def opa_status() -> OpaStatus:
    """Import the OPA bindings and start one engine, once per test session."""
    try:
        module = importlib.import_module(OPA_MODULE)
    except ImportError as error:
        return OpaStatus(
            None, f"not installed ({OPA_DISTRIBUTION}: {error}; install it with `make install-opa`)"
        )
    try:
        module.OpaEngine().close()
    except (OSError, module.OpaError) as error:
        # The wheel installs on any platform with --ignore-requires-python, but its library may not load.
        return OpaStatus(
            None, f"not usable ({OPA_DISTRIBUTION} is installed, but its library fails: {error})"
        )

    version = importlib.metadata.version(OPA_DISTRIBUTION)
    return OpaStatus(module, f"{OPA_DISTRIBUTION} {version} (OPA {_embedded_opa_version(module)})")


def _embedded_opa_version(module: ModuleType) -> str:
    library = Path(module.__file__ or "").parent / "libopabridge.so"
    try:
        match = _GO_BUILD_INFO_OPA.search(library.read_bytes())
    except OSError:
        match = None
    return match.group(1).decode() if match else "version unknown"


# Set by .ci/run, so that CI fails instead of passing with the differential tests skipped.
REQUIRE_OPA_VARIABLE = "CERTPOSTURE_REQUIRE_OPA"


def require_opa() -> ModuleType:
    """Return the ``opa_bindings`` module, or skip the calling test with the reason it is missing.

    With ``CERTPOSTURE_REQUIRE_OPA=1`` in the environment a missing engine fails the test instead.
    """
    status = opa_status()
    if status.module is None:
        if os.environ.get(REQUIRE_OPA_VARIABLE) == "1":
            pytest.fail(f"OPA engine {status.description}, and {REQUIRE_OPA_VARIABLE}=1 requires it")
        pytest.skip(f"OPA engine {status.description}")
    return status.module


def policy_sources(locations: Sequence[Path] | None = None) -> list[tuple[str, str]]:
    """Return (path, text) of the policy files ``engine.evaluate`` loads for ``locations``."""
    directories = list(locations) if locations is not None else [engine.shipped_policy_dir()]
    return [(str(path), path.read_text()) for path in engine.policy_files(directories)]


def opa_engine(opa: ModuleType, policies: Iterable[tuple[str, str]], data: Mapping[str, Any]) -> Any:
    """Return a new OPA engine loaded with ``policies`` and ``data``; close it after use."""
    engine_instance = opa.OpaEngine()
    try:
        for path, text in policies:
            engine_instance.add_policy(path, text)
        engine_instance.add_data(dict(data))
    except Exception:
        engine_instance.close()
        raise
    return engine_instance


def json_differences(left: Any, right: Any, path: str = "", limit: int = 3) -> list[str]:
    """Return up to ``limit`` places where two JSON values differ, each with both values; empty when equal.

    Objects are compared by key and value, arrays in order. A boolean never
    equals a number, although Python's ``==`` treats ``True`` as ``1``. Numbers are
    equal when their values are, because JSON does not tell 1 from 1.0.
    """
    differences: list[str] = []
    _collect_differences(left, right, path, differences, limit)
    return differences


def _collect_differences(left: Any, right: Any, path: str, differences: list[str], limit: int) -> None:
    if len(differences) >= limit:
        return
    location = path or "(top)"
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if key not in left or key not in right:
                side = "right" if key not in left else "left"
                differences.append(f"{path}.{key}: only on the {side}: {left.get(key, right.get(key))!r}")
            else:
                _collect_differences(left[key], right[key], f"{path}.{key}", differences, limit)
            if len(differences) >= limit:
                return
        return
    if isinstance(left, list) and isinstance(right, list):
        for index, (left_item, right_item) in enumerate(zip(left, right, strict=False)):
            _collect_differences(left_item, right_item, f"{path}[{index}]", differences, limit)
        if len(left) != len(right) and len(differences) < limit:
            differences.append(f"{location}: {len(left)} items on the left, {len(right)} on the right")
        return
    if _json_kind(left) != _json_kind(right) or left != right:
        differences.append(f"{location}: {left!r} != {right!r}")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def read_bundle(data: bytes) -> dict[str, tarfile.TarInfo]:
    """Return the tar headers of a gzip-compressed bundle, by member name, in archive order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def bundle_files(data: bytes) -> dict[str, bytes]:
    """Return the contents of a gzip-compressed bundle's files, by member name, in archive order."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            assert extracted is not None, f"bundle member {member.name} is not a regular file"
            files[member.name] = extracted.read()
    return files
