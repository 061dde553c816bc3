"""Render benchmark results as the Markdown page bench/RESULTS.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench import fleet
from bench.evaluation import BatchRun

if TYPE_CHECKING:
    from bench.run import Results

# Thresholds of the targets: throughput ratios to the floor, growth of peak RSS, collection time
# ratios to the floor, and the start-up time of --version in seconds.
ONE_PROCESS_MIN = 0.7
TWO_JOBS_MIN = 1.3
RSS_GROWTH_MAX = 1.2
COLLECTION_MAX = 1.5
VERSION_MAX_SECONDS = 0.25


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _batch_seconds(runs: Sequence[BatchRun]) -> float:
    return _median([run.seconds for run in runs])


def _rss_mib(runs: Sequence[BatchRun]) -> float:
    return _median([run.max_rss_kib for run in runs]) / 1024


def _exit_codes(runs: Sequence[BatchRun]) -> str:
    return ", ".join(sorted({str(run.exit_code) for run in runs}))


def render(results: Results) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{results.command}` with `BENCH_PROFILE={results.profile.name}`, "
        f"started {results.started:%Y-%m-%d %H:%M} UTC, "
        f"{_minutes(results.total_seconds)} in all. The benchmark scripts are in this folder; "
        "README.md explains each figure.",
        "",
        "Each figure is the median of the number of runs in its row. "
        "The runs of one fleet size are interleaved: floor, one process, `--jobs 2`, then again.",
        "",
        "## Machine",
        "",
        *_table(("item", "value"), results.machine),
        "",
    ]
    lines += _targets(results)
    lines += _evaluation(results)
    lines += _collection(results)
    lines += _startup(results)
    lines += _proofs()
    lines += _checks(results)
    lines += _fleet(results)
    lines += _runs(results)
    return "\n".join(lines) + "\n"


def _targets(results: Results) -> list[str]:
    rows: list[list[str]] = []
    for size in results.sizes:
        floor_rate = size.devices / _median(size.floor_seconds)
        for runs, threshold, label in (
            (size.one_process, ONE_PROCESS_MIN, "one process"),
            (size.two_jobs, TWO_JOBS_MIN, "`--jobs 2`"),
        ):
            name = f"`evaluate --batch`, {label}, {size.devices:,} devices"
            if not runs:
                rows.append([name, "not measured", f">= {threshold} x floor", "not measured"])
                continue
            ratio = size.devices / _batch_seconds(runs) / floor_rate
            rows.append(
                [name, f"{ratio:.2f} x floor", f">= {threshold} x floor", _verdict(ratio >= threshold)]
            )

    small = next((size for size in results.sizes if size.devices == results.profile.rss_small), None)
    rss_name = f"peak RSS, one process, {results.profile.rss_large:,} / {results.profile.rss_small:,} devices"
    if small is not None and small.one_process and results.rss_large:
        growth = _rss_mib(results.rss_large) / _rss_mib(small.one_process)
        rows.append([rss_name, f"{growth:.2f}", f"<= {RSS_GROWTH_MAX}", _verdict(growth <= RSS_GROWTH_MAX)])
    else:
        rows.append([rss_name, "not measured", f"<= {RSS_GROWTH_MAX}", "not measured"])

    for source, label in (("pem", "PEM folder"), ("nss", "NSS database")):
        ratio = _median(results.collection[f"{source}_in_process"]) / _median(
            results.collection[f"{source}_floor"]
        )
        rows.append(
            [
                f"collection in process, {label}",
                f"{ratio:.2f} x floor time",
                f"<= {COLLECTION_MAX} x",
                _verdict(ratio <= COLLECTION_MAX),
            ]
        )
    version = _median(results.startup["version"])
    rows.append(
        [
            "`certposture --version`",
            f"{version:.3f} s",
            f"< {VERSION_MAX_SECONDS} s",
            _verdict(version < VERSION_MAX_SECONDS),
        ]
    )
    imported = results.regorus_imported["collect_empty"]
    rows.append(
        ["`certposture collect` imports regorus", "yes" if imported else "no", "no", _verdict(not imported)]
    )
    return ["## Targets", "", *_table(("target", "measured", "threshold", "result"), rows), ""]


def _evaluation(results: Results) -> list[str]:
    rows: list[list[str]] = []
    for size in results.sizes:
        floor_seconds = _median(size.floor_seconds)
        rows.append(
            [
                "floor: one regorus engine, bare loop",
                f"{size.devices:,}",
                str(len(size.floor_seconds)),
                f"{floor_seconds:.1f}",
                f"{size.devices / floor_seconds:,.0f}",
                "1.00",
                "",
            ]
        )
        for runs, label in (
            (size.one_process, "`evaluate --batch`, one process"),
            (size.two_jobs, "`evaluate --batch --jobs 2`"),
        ):
            if not runs:
                rows.append(
                    [label, f"{size.devices:,}", "0", "", "", "", "not measured: no `--batch` option"]
                )
                continue
            seconds = _batch_seconds(runs)
            rows.append(
                [
                    label,
                    f"{size.devices:,}",
                    str(len(runs)),
                    f"{seconds:.1f}",
                    f"{size.devices / seconds:,.0f}",
                    f"{floor_seconds / seconds:.2f}",
                    f"exit code {_exit_codes(runs)}, peak RSS {_rss_mib(runs):,.0f} MiB"
                    + (" (parent process)" if runs is size.two_jobs else ""),
                ]
            )
    per_device = results.engine_per_device_seconds
    if per_device:
        devices = results.profile.engine_per_device
        seconds = _median(per_device)
        smallest = results.sizes[0]
        ratio = (devices / seconds) / (smallest.devices / _median(smallest.floor_seconds))
        rows.append(
            [
                "new regorus engine per device",
                f"{devices:,}",
                str(len(per_device)),
                f"{seconds:.1f}",
                f"{devices / seconds:,.0f}",
                f"{ratio:.2f}",
                "policies and data loaded for every device",
            ]
        )
    lines = [
        "## Evaluation throughput",
        "",
        f"{fleet.DEFAULT_CERTIFICATES} certificates and {fleet.DEFAULT_RULES} rules per device, "
        f"evaluated at `--at {fleet.DEFAULT_AT}`; the batch output goes to a file. "
        "The x floor column is throughput divided by the floor's at the same size "
        "(for the engine per device, the floor of the smallest size).",
        "",
        *_table(("measurement", "devices", "runs", "median s", "devices/s", "x floor", "notes"), rows),
        "",
    ]
    lines += _rss(results)
    return lines


def _rss(results: Results) -> list[str]:
    rows: list[list[str]] = []
    small = next((size for size in results.sizes if size.devices == results.profile.rss_small), None)
    if small is not None and small.one_process:
        rows.append(
            [f"{small.devices:,}", str(len(small.one_process)), f"{_rss_mib(small.one_process):,.0f}", ""]
        )
    if results.rss_large:
        large = results.rss_large
        devices = results.profile.rss_large
        rows.append(
            [
                f"{devices:,}",
                str(len(large)),
                f"{_rss_mib(large):,.0f}",
                f"{devices / _batch_seconds(large):,.0f} devices/s, exit code {_exit_codes(large)}",
            ]
        )
    if not rows:
        return ["### Peak RSS", "", "Not measured: `certposture evaluate` has no `--batch` option yet.", ""]
    return [
        "### Peak RSS",
        "",
        "`ru_maxrss` of the `certposture evaluate --batch` process (one process), read with `os.wait4`.",
        "",
        *_table(("devices", "runs", "peak RSS MiB", "notes"), rows),
        "",
    ]


def _collection(results: Results) -> list[str]:
    measured = results.collection
    runs = str(len(measured["pem_floor"]))
    rows: list[list[str]] = []
    for source, label, count in (
        ("pem", "PEM folder", results.profile.pem_files),
        ("nss", "NSS database", results.profile.nss_certificates),
    ):
        floor = _median(measured[f"{source}_floor"])
        for key, description in (
            (
                f"{source}_cli",
                f"`certposture collect {'--path DIR' if source == 'pem' else '--nssdb sql:DIR'}`, end to end",
            ),
            (f"{source}_in_process", "`posture.collect_facts` in process"),
            (
                f"{source}_floor",
                "floor: cryptography load and verify"
                + (", files read" if source == "pem" else ", DER in memory"),
            ),
        ):
            seconds = _median(measured[key])
            rows.append(
                [
                    f"{label}: {description}",
                    f"{count:,}",
                    runs,
                    f"{seconds:.2f}",
                    f"{count / seconds:,.0f}",
                    f"{seconds / floor:.2f}",
                ]
            )
    return [
        "## Collection",
        "",
        "Certificates issued by one CA (EC P-256), stored in the home so that the collector checks every "
        "signature; one certificate per PEM file. The x floor column is time divided by the floor's time. "
        f"Building the inputs took {results.collection_setup_seconds:.0f} s.",
        "",
        *_table(("measurement", "certificates", "runs", "median s", "certificates/s", "x floor"), rows),
        "",
        *_collection_profile(),
    ]


# The findings of the profiles taken when the collection target was missed. The report keeps
# them, because a rerun measures again but does not profile again.
PROFILE_FINDINGS = Path(__file__).with_name("collection-profile.md")


# The proof-of-possession figures come from bench/proofs.py (make bench-proofs), a separate run;
# the report keeps its last output between these markers.
PROOFS_FINDINGS = Path(__file__).with_name("proofs.md")
PROOFS_BEGIN = "<!-- bench/proofs.py begin -->"
PROOFS_END = "<!-- bench/proofs.py end -->"


def _proofs() -> list[str]:
    if not PROOFS_FINDINGS.is_file():
        return []
    return [PROOFS_BEGIN, *PROOFS_FINDINGS.read_text(encoding="utf-8").splitlines(), PROOFS_END, ""]


def _collection_profile() -> list[str]:
    if not PROFILE_FINDINGS.is_file():
        return []
    return PROFILE_FINDINGS.read_text(encoding="utf-8").splitlines()


def _startup(results: Results) -> list[str]:
    rows = []
    for key, label in (
        ("version", "`certposture --version`"),
        ("collect_empty", "`certposture collect --path EMPTYDIR`"),
    ):
        values = results.startup[key]
        rows.append(
            [
                label,
                str(len(values)),
                f"{_median(values):.3f}",
                f"{min(values):.3f}",
                "yes" if results.regorus_imported[key] else "no",
            ]
        )
    return [
        "## Start-up",
        "",
        "Wall time of the whole process; the regorus column comes from `python -X importtime`.",
        "",
        *_table(("command", "runs", "median s", "fastest s", "imports regorus"), rows),
        "",
    ]


def _checks(results: Results) -> list[str]:
    items: list[str] = []
    for size in results.sizes:
        items.append(f"- {size.devices:,} devices: {size.status_check}.")
        items += [f"- {size.devices:,} devices, `evaluate --batch` {check}." for check in size.batch_check]
    if results.engine_reuse_check:
        items.append(f"- Engine reuse: {results.engine_reuse_check}.")
    counts = results.collection_certificates
    if counts:
        items.append(
            f"- Collection in process: {counts.get('pem', 0):,} certificates from the PEM folder "
            f"({results.profile.pem_files:,} files) and {counts.get('nss', 0):,} from NSS "
            f"({results.profile.nss_certificates:,} imported), no collection error, every one signed by the stored CA."
        )
    if results.checkout_at_start != results.checkout_at_end:
        items.append(
            "- **The checkout changed during the run** (commit, uncommitted changes or new files), so "
            "the runs may not all have measured the same code."
        )
    if not results.batch_available:
        items.append(
            "- `certposture evaluate` has no `--batch` option in this checkout, so its rows are empty."
        )
    return ["## Checks", "", *items, ""]


def _fleet(results: Results) -> list[str]:
    the_fleet = results.fleet
    if the_fleet is None:
        return []
    descriptions = {name: description for name, _, description in fleet.OUTCOMES}
    total = the_fleet.spec.devices
    rows = [
        [name, f"{count:,}", f"{count / total:.2%}", descriptions[name]]
        for name, count in sorted(the_fleet.mix.items(), key=lambda item: -item[1])
    ]
    return [
        "## Fleet",
        "",
        f"{total:,} devices generated in {the_fleet.seconds:.0f} s (seed {the_fleet.spec.seed}); smaller sizes are "
        "the first devices of the same file. Outcomes drawn:",
        "",
        *_table(("outcome", "devices", "share", "what differs"), rows),
        "",
    ]


def _runs(results: Results) -> list[str]:
    rows: list[list[str]] = []

    def seconds(values: Sequence[float]) -> str:
        return ", ".join(f"{value:.2f}" for value in values)

    def rss(runs: Sequence[BatchRun]) -> str:
        return ", ".join(f"{run.max_rss_kib / 1024:,.0f}" for run in runs)

    for size in results.sizes:
        devices = f"{size.devices:,}"
        rows.append(["floor", devices, seconds(size.floor_seconds), ""])
        rows.append(
            [
                "`evaluate --batch`, one process",
                devices,
                seconds([run.seconds for run in size.one_process]),
                rss(size.one_process),
            ]
        )
        rows.append(
            [
                "`evaluate --batch --jobs 2`",
                devices,
                seconds([run.seconds for run in size.two_jobs]),
                rss(size.two_jobs),
            ]
        )
    if results.rss_large:
        rows.append(
            [
                "`evaluate --batch`, one process",
                f"{results.profile.rss_large:,}",
                seconds([run.seconds for run in results.rss_large]),
                rss(results.rss_large),
            ]
        )
    if results.engine_per_device_seconds:
        rows.append(
            [
                "new engine per device",
                f"{results.profile.engine_per_device:,}",
                seconds(results.engine_per_device_seconds),
                "",
            ]
        )
    for key, values in results.collection.items():
        rows.append([f"collection, {key.replace('_', ' ')}", "", seconds(values), ""])
    for key, values in results.startup.items():
        rows.append([f"start-up, {key.replace('_', ' ')}", "", seconds(values), ""])
    return [
        "## Individual runs",
        "",
        "Seconds of each run in order, and the peak RSS of each batch run in MiB.",
        "",
        *_table(("measurement", "devices", "seconds", "peak RSS MiB"), rows),
        "",
    ]
