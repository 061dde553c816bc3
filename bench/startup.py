"""Start-up measurements: the wall time of short CLI commands and the modules they import."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

from bench.cli import certposture_command


def time_command(arguments: Sequence[str]) -> float:
    """Time one ``certposture ARGUMENTS`` run with its output discarded, or raise RuntimeError when it fails."""
    argv = [*certposture_command(), *arguments]
    start = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(
            f"certposture {' '.join(arguments)} exited with {completed.returncode}: "
            f"{completed.stderr.decode(errors='replace')}"
        )
    return seconds


def imported_modules(arguments: Sequence[str]) -> set[str]:
    """Run ``certposture ARGUMENTS`` under ``python -X importtime`` and return the names of the modules it imported."""
    argv = [sys.executable, "-X", "importtime", *certposture_command(), *arguments]
    completed = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(f"certposture {' '.join(arguments)} exited with {completed.returncode}")
    modules: set[str] = set()
    # Each line reads "import time: SELF | CUMULATIVE | NAME", NAME indented by nesting depth.
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules


def imports_regorus(arguments: Sequence[str]) -> bool:
    return any(name == "regorus" or name.startswith("regorus.") for name in imported_modules(arguments))
