"""Build an OPA bundle that carries the policies and the store's rules to an OPA server.

A server that loads the bundle evaluates ``data.certposture.posture.results``
for a facts document given as ``input``, as ``certposture evaluate`` does. The
bundle contains the same non-test policy files and, in ``data.json``, the same
``certposture_config`` document: the rules and the signing-certificate
records. It has no ``evaluated_at``, so the server checks validity periods
against its own clock.

Layout of the gzip-compressed tar archive:

- ``.manifest``: ``revision``, ``roots`` and ``rego_version`` 1 (every policy is Rego v1);
- ``data.json``: ``{"certposture_config": {...}}``;
- ``certposture/<path>``: the shipped policies, at their path under the shipped policy folder;
- ``extra/<n>/<path>``: the policies of the n-th extra policy folder or file (1-based), at
  their path under that folder, or under their file name.

``*_test.rego`` files are left out, as :func:`certposture.engine.policy_files`
leaves them out of ``evaluate``. A server never runs them, and they would add
their test packages and fixture values to its ``data`` tree.

The same inputs give the same bytes: entries are sorted, every tar header has
mtime 0, uid and gid 0, no user or group name and mode 0644, and the gzip
header has mtime 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import regorus

from certposture import engine
from certposture.errors import InputError, PolicyError
from certposture.store import Store

logger = logging.getLogger(__name__)

MANIFEST_PATH = ".manifest"
DATA_PATH = "data.json"
SHIPPED_PREFIX = "certposture"
EXTRA_PREFIX = "extra"
REGO_VERSION = 1
# Number of hex digits of the SHA-256 content digest that make the default revision.
REVISION_LENGTH = 16

_CONFIG_KEYS = frozenset({"rules", "signing_certificates"})
_PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# The first segment of a package is always a plain name, and only later ones may be quoted (a["b.c"]).
_PACKAGE_ROOT = re.compile(r"^data\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class BundlePolicy:
    """A Rego module as placed in the bundle: its path there, the file it came from and its package."""

    bundle_path: str
    source_path: Path
    package: str
    text: str


def build_store_bundle(
    store: Store,
    policy_dirs: Sequence[Path] = (),
    revision: str | None = None,
    *,
    require_proof: bool = False,
) -> bytes:
    """Build the bundle of the stored rules and signing certificates; see :func:`build_bundle`.

    ``require_proof`` sets ``require_proof`` in the data, so that the server
    passes a certificate only with a verified proof in ``input.proof_verification``.

    Raises InputError when no rule is stored, because every device would then
    get an empty result list from the server.
    """
    rules = store.list_rules()
    if not rules:
        raise InputError(
            "no rules stored; add one with `certposture rules add FILE` before building a bundle"
        )
    config = engine.build_config(rules, store.list_signing_certificates(), None, require_proof=require_proof)
    return build_bundle(config, policy_dirs, revision)


def build_bundle(
    config: Mapping[str, Any], policy_dirs: Sequence[Path], revision: str | None = None
) -> bytes:
    """Return the bundle as gzip-compressed tar bytes.

    ``config`` is the document :func:`certposture.engine.build_config` returns
    with ``evaluated_at=None``. ``policy_dirs`` are extra policy folders or
    ``.rego`` files, added to the shipped policies. ``revision`` defaults to the first
    ``REVISION_LENGTH`` hex digits of a SHA-256 digest of the bundle's files.

    Raises PolicyError when a policy cannot be read or parsed (the message
    gives ``file:line:col``), when an extra policy's package lies under the data
    root ``certposture_config``, or when the data contains a PEM private key.
    Raises InputError for a missing extra folder, a folder without policies, a
    file included twice or an empty revision, and ValueError when ``config`` is
    not such a document.
    """
    _check_config(config)
    if revision is not None:
        _check_revision(revision)

    policies = bundle_policies(policy_dirs)
    files = {policy.bundle_path: policy.text.encode() for policy in policies}
    files[DATA_PATH] = bundle_data(config)

    manifest = {
        "revision": revision if revision is not None else content_revision(files),
        "roots": bundle_roots(policy.package for policy in policies),
        "rego_version": REGO_VERSION,
    }
    files[MANIFEST_PATH] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    logger.debug(
        "bundle revision %s: %d policy file(s), roots %s",
        manifest["revision"],
        len(policies),
        manifest["roots"],
    )
    return _tar_gz(files)


def bundle_policies(policy_dirs: Sequence[Path]) -> list[BundlePolicy]:
    """Read and parse the shipped policies and those of ``policy_dirs``, sorted by bundle path.

    Each of ``policy_dirs`` is a folder, searched recursively, or one ``.rego`` file.
    """
    locations = [(SHIPPED_PREFIX, engine.shipped_policy_dir())]
    for number, location in enumerate(policy_dirs, start=1):
        if location.is_file() and location.suffix != ".rego":
            raise InputError(f"policy file {location} is not a .rego file; check --policy")
        if not location.is_dir() and not location.is_file():
            raise InputError(f"policy folder {location} does not exist; check --policy")
        locations.append((f"{EXTRA_PREFIX}/{number}", location))

    policies: list[BundlePolicy] = []
    seen: dict[Path, Path] = {}
    for prefix, location in locations:
        files = engine.policy_files([location])
        if not files and prefix != SHIPPED_PREFIX:
            raise InputError(f"{location} has no .rego files other than *_test.rego; check --policy")
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                raise InputError(
                    f"policy file {path} would be included twice, also as {seen[resolved]}; "
                    "give each policy folder once, and not a folder inside another"
                )
            seen[resolved] = path
            policies.append(_bundle_policy(prefix, location, path))
    return sorted(policies, key=lambda policy: policy.bundle_path)


def _bundle_policy(prefix: str, location: Path, path: Path) -> BundlePolicy:
    relative = path.relative_to(location).as_posix() if location.is_dir() else path.name
    try:
        relative.encode()
    except UnicodeEncodeError:
        raise InputError(f"policy file name {path!s} is not valid UTF-8; rename the file") from None
    try:
        text = path.read_bytes().decode()
    except OSError as error:
        raise PolicyError(f"policy {path} cannot be read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise PolicyError(f"policy {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None

    package = policy_package(path, text)
    if package_root(package) == engine.CONFIG_ROOT:
        raise PolicyError(
            f"policy {path} declares package {package}, under the data root {engine.CONFIG_ROOT} "
            "that holds the rules; move it to another package"
        )
    return BundlePolicy(f"{prefix}/{relative}", path, package, text)


def policy_package(path: Path, text: str) -> str:
    """Parse one Rego v1 module with regorus and return its package, such as ``data.certposture.posture``."""
    try:
        package = regorus.Engine().add_policy(str(path), text)
    except RuntimeError as error:
        raise PolicyError(f"policy {path} cannot be parsed: {engine.describe_engine_error(error)}") from None
    if not isinstance(package, str):
        raise PolicyError(f"policy {path}: regorus returned {package!r} instead of the package name")
    return package


def package_root(package: str) -> str:
    """Return the first segment of a package under ``data``: ``certposture`` for ``data.certposture.posture``."""
    match = _PACKAGE_ROOT.match(package)
    if match is None:
        raise PolicyError(f"package {package!r} does not start with data.NAME")
    return match.group(1)


def bundle_roots(packages: Iterable[str]) -> list[str]:
    """Return the manifest roots: the first segment of every package, and the data root, sorted.

    Every root is one path segment and the list has no duplicates, so no root
    lies under another, which OPA rejects as overlapping roots.
    """
    return sorted({engine.CONFIG_ROOT, *(package_root(package) for package in packages)})


def bundle_data(config: Mapping[str, Any]) -> bytes:
    """Serialize ``{"certposture_config": config}`` as ``data.json``, with sorted keys."""
    try:
        data = orjson.dumps({engine.CONFIG_ROOT: config}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except TypeError as error:
        # orjson rejects integers beyond 64 bits, which stored rules may contain.
        raise PolicyError(f"rules or signing certificates cannot be encoded as JSON: {error}") from None
    # Store records contain no key material. This check keeps it so if a record ever gains a PEM field.
    if _PRIVATE_KEY_PEM.search(data):
        raise PolicyError(
            "the bundle data contains a PEM private key; signing-certificate keys must stay in the store"
        )
    return data + b"\n"


def content_revision(files: Mapping[str, bytes]) -> str:
    """Return a short SHA-256 digest of the file names and contents, independent of their order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()[:REVISION_LENGTH]


def _check_config(config: Mapping[str, Any]) -> None:
    keys = set(config)
    if "evaluated_at" in keys:
        raise ValueError(
            "config pins evaluated_at, which would make an OPA server judge every device at that "
            "time; build it with evaluated_at=None"
        )
    if keys - {"require_proof"} != _CONFIG_KEYS:
        raise ValueError(
            f"config has keys {sorted(keys)}, expected exactly {sorted(_CONFIG_KEYS)} and optionally require_proof"
        )
    if not isinstance(config["rules"], list) or not isinstance(config["signing_certificates"], dict):
        raise ValueError("config rules must be a list and signing_certificates an object keyed by id")


def _check_revision(revision: str) -> None:
    if not revision.strip():
        raise InputError("--revision is empty; give a revision or leave the option out for a content digest")
    if any(not character.isprintable() for character in revision):
        raise InputError(f"--revision {revision!r} contains control characters; use printable text")


def _tar_gz(files: Mapping[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(archive.getvalue(), compresslevel=9, mtime=0)
