"""Run the certposture CLI of this virtual environment, as the benchmarks and the fleet generator do."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path


def certposture_command() -> list[str]:
    """Return the argv prefix that runs the certposture CLI of this virtual environment."""
    script = Path(sys.executable).parent / "certposture"
    if script.exists():
        return [str(script)]
    found = shutil.which("certposture")
    if found is None:
        raise FileNotFoundError(
            "certposture not found; install the project with make test or pip install -e ."
        )
    return [found]


def run_cli(home: Path, *arguments: str) -> bytes:
    """Run ``certposture --home HOME ARGUMENTS`` and return its stdout, or raise RuntimeError with its stderr."""
    completed = subprocess.run(
        [*certposture_command(), "--home", str(home), *arguments], capture_output=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"certposture {' '.join(arguments)} exited with {completed.returncode}: "
            f"{completed.stderr.decode(errors='replace').strip()}"
        )
    return completed.stdout


def parse_time(value: str) -> dt.datetime:
    """Parse an RFC 3339 time such as 2026-12-01T12:00:00Z into an aware UTC datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
