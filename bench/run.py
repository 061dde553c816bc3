"""Run every benchmark and write the results as Markdown (``make bench``).

``BENCH_PROFILE`` picks the sizes: ``standard`` (the default), ``full`` (three
runs of every measurement) or ``quick`` (small sizes, for trying the scripts
out). ``BENCH_RESULTS`` names the report file; the default is
``bench/RESULTS.md`` for ``standard`` and ``full``, and none for ``quick``,
whose report goes to stdout only. ``BENCH_KEEP=1`` keeps the work folder
with the fleet, the outputs and the stderr of each run.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import collection, evaluation, fleet, machine, report, startup
from bench.cli import parse_time

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    """Sizes and run counts of one benchmark profile."""

    name: str
    # Fleet sizes for throughput, each with its number of runs.
    batch_runs: dict[int, int]
    # Peak RSS of the one-process batch: the small size comes from the throughput runs.
    rss_small: int
    rss_large: int
    rss_large_runs: int
    engine_per_device: int
    engine_per_device_runs: int
    pem_files: int
    nss_certificates: int
    collection_runs: int
    startup_runs: int


PROFILES = {
    "quick": Profile("quick", {1_000: 3, 5_000: 1}, 1_000, 20_000, 1, 100, 3, 1_000, 200, 3, 10),
    "standard": Profile(
        "standard", {10_000: 3, 100_000: 1}, 10_000, 200_000, 1, 500, 3, 10_000, 2_000, 5, 10
    ),
    "full": Profile("full", {10_000: 3, 100_000: 3}, 10_000, 200_000, 3, 500, 3, 10_000, 2_000, 5, 10),
}


@dataclass
class SizeResult:
    """Throughput runs for one fleet size: the floor and, when the command exists, the batch runs."""

    devices: int
    floor_seconds: list[float] = field(default_factory=list)
    one_process: list[evaluation.BatchRun] = field(default_factory=list)
    two_jobs: list[evaluation.BatchRun] = field(default_factory=list)
    status_check: str = ""
    batch_check: list[str] = field(default_factory=list)


@dataclass
class Results:
    """Everything the report prints."""

    profile: Profile
    command: str
    started: dt.datetime
    machine: list[tuple[str, str]]
    fleet: fleet.Fleet | None = None
    batch_available: bool = False
    sizes: list[SizeResult] = field(default_factory=list)
    rss_large: list[evaluation.BatchRun] = field(default_factory=list)
    engine_per_device_seconds: list[float] = field(default_factory=list)
    engine_reuse_check: str = ""
    collection: dict[str, list[float]] = field(default_factory=dict)
    collection_certificates: dict[str, int] = field(default_factory=dict)
    collection_setup_seconds: float = 0.0
    startup: dict[str, list[float]] = field(default_factory=dict)
    regorus_imported: dict[str, bool] = field(default_factory=dict)
    total_seconds: float = 0.0
    # Digests of the checkout at the start and the end, which differ when code was edited during the run.
    checkout_at_start: str = ""
    checkout_at_end: str = ""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def check_statuses(the_fleet: fleet.Fleet, devices: int, statuses: list[tuple[str, ...]], rules: int) -> str:
    """Compare the floor's status counts with the counts that the drawn outcomes should give."""
    counted: Counter[tuple[int, str]] = Counter()
    for device in statuses:
        for index, status in enumerate(device):
            counted[(index, status)] += 1
    expected = the_fleet.expected_statuses(the_fleet.mix_of_first(devices))
    if counted == expected:
        return f"the floor's statuses match the drawn outcomes for all {devices:,} devices x {rules} rules"
    differences = sorted((key, counted[key], expected[key]) for key in set(counted) | set(expected))
    listed = "; ".join(
        f"rule {index} {status}: {got} (expected {want})"
        for (index, status), got, want in differences
        if got != want
    )
    return f"MISMATCH between the floor's statuses and the drawn outcomes: {listed}"


def compare_batch(output: Path, floor_statuses: list[tuple[str, ...]], label: str) -> str:
    """Compare the statuses in one batch output with the floor's, device by device."""
    try:
        batch = evaluation.batch_statuses(output)
    except (KeyError, TypeError, ValueError) as error:
        return f"{label}: output could not be read as one results document per line ({error!r})"
    if len(batch) != len(floor_statuses):
        return f"{label}: {len(batch)} output lines for {len(floor_statuses)} devices"
    differing = sum(1 for mine, theirs in zip(batch, floor_statuses, strict=True) if mine != theirs)
    if differing:
        return f"{label}: statuses differ from the floor's on {differing} device(s)"
    return f"{label}: statuses equal the floor's on every device"


def measure_size(
    results: Results,
    the_fleet: fleet.Fleet,
    bundle: evaluation.Bundle,
    work: Path,
    devices: int,
    runs: int,
    sample_size: int,
) -> list[str]:
    """Measure the floor and the batch command on the first ``devices`` devices, ``runs`` times, interleaved.

    Returns the floor's results of the first ``sample_size`` devices.
    """
    facts = evaluation.write_prefix(the_fleet.facts, work / f"facts-{devices}.jsonl", devices)
    lines = evaluation.read_lines(facts)
    engine = evaluation.new_engine(bundle)
    size = SizeResult(devices)
    results.sizes.append(size)
    floor_sample: list[str] = []
    floor_statuses: list[tuple[str, ...]] = []
    at = the_fleet.spec.at
    for run in range(runs):
        progress(f"{devices:,} devices, run {run + 1}/{runs}: floor")
        seconds, outputs = evaluation.run_floor(engine, lines)
        size.floor_seconds.append(seconds)
        if run == 0:
            floor_statuses = evaluation.statuses_per_device(outputs)
            size.status_check = check_statuses(the_fleet, devices, floor_statuses, the_fleet.spec.rules)
            floor_sample = outputs[:sample_size]
        del outputs
        if not results.batch_available:
            continue
        for jobs, runs_list in ((None, size.one_process), (2, size.two_jobs)):
            label = "one process" if jobs is None else f"--jobs {jobs}"
            progress(f"{devices:,} devices, run {run + 1}/{runs}: evaluate --batch, {label}")
            output = work / f"batch-{devices}-{jobs or 1}.jsonl"
            batch_run = evaluation.run_batch(the_fleet.home, facts, at, jobs, output)
            runs_list.append(batch_run)
            if run == 0:
                size.batch_check.append(compare_batch(output, floor_statuses, label))
            output.unlink()
    facts.unlink()
    return floor_sample


def measure_engine_per_device(
    results: Results, the_fleet: fleet.Fleet, bundle: evaluation.Bundle, floor_results: list[str]
) -> None:
    devices = results.profile.engine_per_device
    with the_fleet.facts.open(encoding="utf-8") as reader:
        lines = [line.rstrip("\n") for _, line in zip(range(devices), reader, strict=False)]
    for run in range(results.profile.engine_per_device_runs):
        progress(f"new engine per device, {devices} devices, run {run + 1}")
        seconds, outputs = evaluation.run_engine_per_device(bundle, lines)
        results.engine_per_device_seconds.append(seconds)
        if run == 0:
            identical = sum(
                1 for fresh, reused in zip(outputs, floor_results, strict=True) if fresh == reused
            )
            results.engine_reuse_check = (
                f"{identical} of {devices} devices: the result JSON of a new engine equals, byte for byte, "
                "the result of the engine reused across the fleet"
            )


def compare_engines(fresh: list[str], reused: list[str]) -> str:
    """Compare the results of a new engine per device with those of the engine reused for the whole fleet."""
    differing = [
        index for index, (mine, theirs) in enumerate(zip(fresh, reused, strict=True)) if mine != theirs
    ]
    if not differing:
        return (
            f"on all {len(fresh)} devices, the result JSON of a new engine equals, byte for byte, "
            "the result of the engine reused across the fleet"
        )
    equal_values = sum(1 for index in differing if orjson.loads(fresh[index]) == orjson.loads(reused[index]))
    return (
        f"DIFFERENCE: on {len(differing)} of {len(fresh)} devices (the first is line {differing[0] + 1}), "
        "the result JSON of a new engine differs from that of the engine reused across the fleet; "
        f"{equal_values} of them are equal as JSON values"
    )


def measure_rss_large(results: Results, the_fleet: fleet.Fleet, work: Path) -> None:
    devices = results.profile.rss_large
    facts = evaluation.write_prefix(the_fleet.facts, work / f"facts-{devices}.jsonl", devices)
    for run in range(results.profile.rss_large_runs):
        progress(f"peak RSS, {devices:,} devices, run {run + 1}")
        output = work / f"batch-{devices}.jsonl"
        results.rss_large.append(evaluation.run_batch(the_fleet.home, facts, the_fleet.spec.at, None, output))
        output.unlink()
    facts.unlink()


def measure_collection(results: Results, work: Path) -> None:
    profile = results.profile
    progress(f"collection inputs: {profile.pem_files:,} PEM files, {profile.nss_certificates:,} in NSS")
    at = parse_time(fleet.DEFAULT_AT)
    inputs = collection.build_collection_set(
        work / "collection", profile.pem_files, profile.nss_certificates, at
    )
    results.collection_setup_seconds = inputs.seconds
    pem = str(inputs.pem_directory)

    def in_process(name: str, paths: list[str], nssdbs: list[str]) -> float:
        seconds, certificates = collection.time_in_process_collect(inputs.home, paths, nssdbs)
        results.collection_certificates[name] = certificates
        return seconds

    measurements: dict[str, Callable[[], float]] = {
        "pem_cli": lambda: collection.time_cli_collect(inputs.home, "--path", pem),
        "pem_in_process": lambda: in_process("pem", [pem], []),
        "pem_floor": lambda: collection.time_pem_floor(inputs.pem_directory, inputs.ca),
        "nss_cli": lambda: collection.time_cli_collect(inputs.home, "--nssdb", inputs.nssdb),
        "nss_in_process": lambda: in_process("nss", [], [inputs.nssdb]),
        "nss_floor": lambda: collection.time_der_floor(inputs.nss_ders, inputs.ca),
    }
    # One untimed round first, so that every timed run reads the files from the page cache.
    for measure in measurements.values():
        measure()
    for run in range(profile.collection_runs):
        progress(f"collection run {run + 1}/{profile.collection_runs}")
        for name, measure in measurements.items():
            results.collection.setdefault(name, []).append(measure())

    empty = str(inputs.empty_directory)
    collect_empty = ["--home", str(inputs.home), *collection.collect_arguments("--path", empty)]
    commands = {"version": ["--version"], "collect_empty": collect_empty}
    for arguments in commands.values():
        startup.time_command(arguments)
    for run in range(profile.startup_runs):
        if run == 0:
            progress(f"start-up, {profile.startup_runs} runs each")
        for name, arguments in commands.items():
            results.startup.setdefault(name, []).append(startup.time_command(arguments))
    for name, arguments in commands.items():
        results.regorus_imported[name] = startup.imports_regorus(arguments)


def run(profile: Profile, work: Path) -> Results:
    started = time.perf_counter()
    results = Results(
        profile=profile,
        command=os.environ.get("BENCH_COMMAND", "make bench"),
        started=dt.datetime.now(dt.UTC),
        machine=machine.describe(REPOSITORY),
        checkout_at_start=machine.checkout_state(REPOSITORY),
    )
    results.batch_available = evaluation.batch_available()
    if not results.batch_available:
        progress("certposture evaluate has no --batch option yet: measuring everything else")

    devices = max([*profile.batch_runs, profile.rss_large])
    progress(f"generating a fleet of {devices:,} devices")
    the_fleet = fleet.build_fleet(work / "fleet", fleet.FleetSpec(devices))
    results.fleet = the_fleet
    progress(f"fleet ready in {the_fleet.seconds:.0f} s")
    bundle = evaluation.load_bundle(the_fleet.home, work, the_fleet.spec.at)

    floor_results: list[str] = []
    for size, runs in sorted(profile.batch_runs.items()):
        floor_sample = measure_size(results, the_fleet, bundle, work, size, runs, profile.engine_per_device)
        floor_results = floor_results or floor_sample
    measure_engine_per_device(results, the_fleet, bundle, floor_results)
    if results.batch_available:
        measure_rss_large(results, the_fleet, work)
    measure_collection(results, work)
    results.total_seconds = time.perf_counter() - started
    results.checkout_at_end = machine.checkout_state(REPOSITORY)
    return results


def main() -> int:
    name = os.environ.get("BENCH_PROFILE", "standard")
    profile = PROFILES.get(name)
    if profile is None:
        print(
            f"bench: BENCH_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}",
            file=sys.stderr,
        )
        return 2
    default_results = None if profile.name == "quick" else str(REPOSITORY / "bench" / "RESULTS.md")
    results_path = os.environ.get("BENCH_RESULTS", default_results)
    keep = os.environ.get("BENCH_KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="certposture-bench-"))
    progress(f"profile {profile.name}, work folder {work}")
    try:
        results = run(profile, work)
    finally:
        if keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report.render(results)
    sys.stdout.write(text)
    if results_path:
        Path(results_path).write_text(text, encoding="utf-8")
        progress(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
