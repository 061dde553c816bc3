"""Evaluation measurements: the batch command, the regorus floor and the engine-per-device baseline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import regorus

from bench.cli import certposture_command, run_cli

RESULTS_QUERY = "data.certposture.posture.results"
LAUNCHER = Path(__file__).with_name("launch.py")
CONFIG_ROOT = "certposture_config"


@dataclass(frozen=True)
class Bundle:
    """The policies and data of an OPA bundle written by ``certposture bundle``, read into memory."""

    policies: list[tuple[str, str]]
    data_json: str


def write_prefix(source: Path, target: Path, lines: int) -> Path:
    """Copy the first ``lines`` lines of ``source`` to ``target``, or raise ValueError when ``source`` is shorter."""
    written = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        for line in reader:
            if written == lines:
                break
            writer.write(line)
            written += 1
    if written != lines:
        raise ValueError(f"{source} has {written} lines, fewer than {lines}")
    return target


def read_lines(path: Path) -> list[str]:
    """Read a JSON Lines file into a list of strings without their newlines."""
    with path.open(encoding="utf-8") as reader:
        return [line.rstrip("\n") for line in reader]


def load_bundle(home: Path, directory: Path, at: str) -> Bundle:
    """Write the home's OPA bundle with ``certposture bundle`` and read it as an OPA server would.

    ``at`` becomes ``certposture_config.evaluated_at``, which the bundle leaves
    out, so that the floor evaluates at the same pinned time as ``--at``.
    """
    path = directory / "bundle.tar.gz"
    run_cli(home, "bundle", "-o", str(path))
    policies: list[tuple[str, str]] = []
    data: dict[str, Any] | None = None
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            if handle is None:
                continue
            if member.name.endswith(".rego"):
                policies.append((member.name, handle.read().decode("utf-8")))
            elif member.name in ("data.json", "/data.json"):
                data = orjson.loads(handle.read())
    if data is None or not policies:
        raise RuntimeError(f"{path} has no data.json or no .rego file")
    data[CONFIG_ROOT]["evaluated_at"] = at
    return Bundle(policies, orjson.dumps(data).decode())


def new_engine(bundle: Bundle) -> regorus.Engine:
    engine = regorus.Engine()
    for name, text in bundle.policies:
        engine.add_policy(name, text)
    engine.add_data_json(bundle.data_json)
    return engine


def run_floor(engine: regorus.Engine, lines: Sequence[str]) -> tuple[float, list[str]]:
    """Evaluate every line on one pre-loaded engine and return the seconds of the loop alone and the results."""
    results: list[str] = [""] * len(lines)
    start = time.perf_counter()
    for index, line in enumerate(lines):
        engine.set_input_json(line)
        results[index] = engine.eval_rule_as_json(RESULTS_QUERY)
    return time.perf_counter() - start, results


def run_engine_per_device(bundle: Bundle, lines: Sequence[str]) -> tuple[float, list[str]]:
    """Load the policies and data into a new engine for every line, as a simple wrapper would."""
    results: list[str] = [""] * len(lines)
    start = time.perf_counter()
    for index, line in enumerate(lines):
        engine = new_engine(bundle)
        engine.set_input_json(line)
        results[index] = engine.eval_rule_as_json(RESULTS_QUERY)
    return time.perf_counter() - start, results


def status_counts(results: Sequence[str]) -> Counter[tuple[int, str]]:
    """Count (rule index, status) over results lists as ``eval_rule_as_json`` returns them."""
    counts: Counter[tuple[int, str]] = Counter()
    for raw in results:
        for index, result in enumerate(orjson.loads(raw)):
            counts[(index, result["status"])] += 1
    return counts


def statuses_per_device(results: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(result["status"] for result in orjson.loads(raw)) for raw in results]


@dataclass(frozen=True)
class BatchRun:
    """One run of ``certposture evaluate --batch``: wall time, exit code, peak RSS and output lines."""

    seconds: float
    exit_code: int
    max_rss_kib: int
    output_lines: int
    stderr: str


def batch_available() -> bool:
    """Return True when ``certposture evaluate --help`` lists ``--batch``."""
    completed = subprocess.run(
        [*certposture_command(), "evaluate", "--help"],
        capture_output=True,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    return b"--batch" in completed.stdout


def run_batch(pristine_home: Path, facts: Path, at: str, jobs: int | None, output: Path) -> BatchRun:
    """Run ``certposture --home HOME evaluate --batch FACTS --at AT [--jobs N]`` with stdout to ``output``.

    HOME is a new copy of ``pristine_home``, because ``evaluate`` appends
    to the store's posture log, and every run should start from the same
    store. ``launch.py`` starts the command, times it and reads its own
    resource usage with ``os.wait4``, so that the peak RSS of this process
    does not count. ``ru_maxrss`` is in KiB on Linux. With ``--jobs``, it
    covers the parent process only, not its workers.
    """
    home = output.with_name(output.stem + "-home")
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(pristine_home, home)
    command = [*certposture_command(), "--home", str(home), "evaluate", "--batch", str(facts), "--at", at]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    usage_path = output.with_suffix(".usage.json")
    stderr_path = output.with_suffix(".stderr")
    with output.open("wb") as stdout, stderr_path.open("wb") as stderr:
        subprocess.run(
            [sys.executable, str(LAUNCHER), str(usage_path), *command],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            check=True,
        )
    usage = orjson.loads(usage_path.read_bytes())
    result = BatchRun(
        seconds=usage["seconds"],
        exit_code=usage["exit_code"],
        max_rss_kib=usage["max_rss_kib"],
        output_lines=count_lines(output),
        stderr=stderr_path.read_text(errors="replace")[-2000:],
    )
    shutil.rmtree(home)
    return result


def count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as reader:
        while chunk := reader.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def batch_statuses(output: Path) -> list[tuple[str, ...]]:
    """Read the rule statuses of each output line of ``evaluate --batch`` (a results document per line)."""
    statuses: list[tuple[str, ...]] = []
    with output.open("rb") as reader:
        for line in reader:
            document = orjson.loads(line)
            statuses.append(tuple(result["status"] for result in document["results"]))
    return statuses
