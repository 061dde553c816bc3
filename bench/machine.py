"""Description of the machine and software a benchmark ran on."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """Return the model name of the first CPU in /proc/cpuinfo, with its family and model numbers."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", platform.processor() or "unknown")
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def memory_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def nss_version() -> str:
    """Return the version of the Debian package libnss3-tools, or ``unknown`` when dpkg has no record of it."""
    try:
        completed = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libnss3-tools"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return "unknown"
    return completed.stdout.strip() or "unknown"


def git_commit(repository: Path) -> str:
    """Return the commit checked out in ``repository``, noting uncommitted changes to tracked files."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if changed:
        return f"{head} with uncommitted changes to {len(changed)} tracked file(s)"
    return head


def checkout_state(repository: Path) -> str:
    """Return a digest of the checked-out commit and the uncommitted changes, to tell whether the code changed."""
    digest = hashlib.sha256()
    for command in (["rev-parse", "HEAD"], ["diff", "HEAD"], ["ls-files", "--others", "--exclude-standard"]):
        try:
            completed = subprocess.run(
                ["git", "-C", str(repository), *command], capture_output=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        digest.update(completed.stdout)
    return digest.hexdigest()


def describe(repository: Path) -> list[tuple[str, str]]:
    """Return (item, value) rows that describe this machine and the versions in use."""
    return [
        ("CPU", cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", memory_gib()),
        ("system", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("gordon-to-regorus (regorus)", package_version("gordon-to-regorus")),
        ("cryptography", package_version("cryptography")),
        ("pydantic", package_version("pydantic")),
        ("orjson", package_version("orjson")),
        ("NSS tools (libnss3-tools)", nss_version()),
        ("git commit", git_commit(repository)),
    ]
