"""Limits and unusual files in the PEM and DER source: sizes, certificate counts, links, FIFOs, devices, permissions.

Every case puts a good certificate next to the unusual file, so each test also
checks that one unreadable file does not hide the others.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from collector.facts import CollectionError
from collector.sources import SourceResult
from collector.sources.pem import (
    DEFAULT_MAX_CERTIFICATES_PER_FILE,
    DEFAULT_MAX_FILE_SIZE,
    MAX_BLOCK_ERRORS_PER_FILE,
    PemLimits,
    collect_pem,
)
from tests.certgen import CertKey, make_leaf, write_pem
from tests.collector.test_pem import errors_for, only
from tests.test_end_to_end import HOSTNAME, SERIAL, Cli, cli

__all__ = ["cli"]  # fixture, imported for pytest

REPOSITORY = Path(__file__).resolve().parents[2]
# A generous bound for a collection that should take milliseconds; it only turns a hang into a failure.
HANG_TIMEOUT = 60.0


def error_pairs(result: SourceResult) -> list[tuple[str, str]]:
    return [(error.step, error.location) for error in result.errors]


def single_error(result: SourceResult, path: Path | str) -> CollectionError:
    errors = errors_for(result, Path(path))
    assert len(errors) == 1, result.errors
    return errors[0]


def good_file(directory: Path, ca: CertKey, name: str = "good.pem") -> tuple[Path, CertKey]:
    leaf = make_leaf(ca, "good-device")
    return write_pem(directory / name, leaf.cert_pem(), leaf.key_pem()), leaf


def collect_without_blocking(
    paths: Sequence[Path | str], limits: PemLimits | None = None, fifos: Sequence[Path] = ()
) -> SourceResult:
    """Run collect_pem in a thread; if it blocks, open ``fifos`` for writing to release it and fail."""
    outcome: list[SourceResult] = []
    arguments = [str(path) for path in paths]
    worker = threading.Thread(
        target=lambda: outcome.append(collect_pem(arguments, [], limits or PemLimits())), daemon=True
    )
    worker.start()
    worker.join(HANG_TIMEOUT)
    if worker.is_alive():
        for fifo in fifos:
            with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                pass
        pytest.fail(f"collect_pem({arguments}) blocked for {HANG_TIMEOUT} s")
    assert outcome, "collect_pem raised; see the thread's traceback above"
    return outcome[0]


# Size per file


def test_size_limit_boundary(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "client.pem", leaf.cert_pem(), leaf.key_pem())
    size = path.stat().st_size

    at_limit = collect_pem([str(path)], [], PemLimits(max_file_size=size))
    assert only(at_limit, leaf).private_key.present is True
    assert at_limit.errors == []

    over = collect_pem([str(path)], [], PemLimits(max_file_size=size - 1))
    assert over.certificates == []
    error = single_error(over, path)
    assert error.step == "read"
    assert error.message == (
        f"{path} is {size} bytes, larger than the limit of {size - 1} bytes for a certificate or key file, "
        "so it was not read; give the certificate file itself, or raise the limit with --max-file-size"
    )


def test_size_limit_keeps_other_files(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    large = write_pem(tmp_path / "large.pem", leaf.cert_pem(), b"\n" * 4096)
    _, good_leaf = good_file(tmp_path, ca)

    result = collect_pem([str(tmp_path)], [], PemLimits(max_file_size=4096))

    assert only(result, good_leaf).private_key.present is True
    assert error_pairs(result) == [("read", str(large))]


def test_size_limit_raised_reads_large_file(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    large = write_pem(tmp_path / "large.pem", leaf.cert_pem(), b"\n" * DEFAULT_MAX_FILE_SIZE)
    size = large.stat().st_size

    assert error_pairs(collect_pem([str(large)], [])) == [("read", str(large))]
    raised = collect_pem([str(large)], [], PemLimits(max_file_size=size))
    only(raised, leaf)
    assert raised.errors == []


def test_size_limit_checked_while_reading(
    tmp_path: Path, ca: CertKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that stat reports as small but that contains more is cut off at the limit, not read whole."""
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "growing.pem", leaf.cert_pem(), b"\n" * 8192)
    real_stat = os.stat

    def stat_reporting_small_size(
        target: str | Path, *arguments: object, **keywords: object
    ) -> os.stat_result:
        info = real_stat(target, *arguments, **keywords)  # type: ignore[arg-type]
        if str(target) != str(path):
            return info
        fields = list(info)
        fields[stat.ST_SIZE] = 100
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", stat_reporting_small_size)
    result = collect_pem([str(path)], [], PemLimits(max_file_size=4096))

    assert result.certificates == []
    error = single_error(result, path)
    assert error.step == "read"
    assert error.message == (
        f"{path} grew past the limit of 4096 bytes for a certificate or key file while it was read, "
        "so it was not parsed; collect again once the file stops changing"
    )


# Certificates per file


def chain_file(path: Path, ca: CertKey, count: int) -> tuple[Path, list[CertKey]]:
    leaves = [make_leaf(ca, f"device-{index}") for index in range(count)]
    write_pem(path, *(leaf.cert_pem() for leaf in leaves), leaves[0].key_pem())
    return path, leaves


def test_certificate_limit_boundary(tmp_path: Path, ca: CertKey) -> None:
    bundle, leaves = chain_file(tmp_path / "bundle.pem", ca, 3)

    at_limit = collect_pem([str(bundle)], [], PemLimits(max_certificates_per_file=3))
    assert [cert.fingerprint_sha256 for cert in at_limit.certificates] == [
        leaf.fingerprint for leaf in leaves
    ]
    assert only(at_limit, leaves[0]).private_key.present is True
    assert at_limit.errors == []

    over = collect_pem([str(bundle)], [], PemLimits(max_certificates_per_file=2))
    assert over.certificates == []
    error = single_error(over, bundle)
    assert error.step == "load"
    assert error.message == (
        f"{bundle} contains 3 certificate PEM blocks, more than the limit of 2 per file, so no certificate "
        "or key in it was collected; give the file with the device certificate, or raise the limit with "
        "--max-certificates-per-file"
    )


def test_certificate_limit_keeps_other_files(tmp_path: Path, ca: CertKey) -> None:
    bundle, _ = chain_file(tmp_path / "bundle.pem", ca, 3)
    _, good_leaf = good_file(tmp_path, ca)

    result = collect_pem([str(tmp_path)], [], PemLimits(max_certificates_per_file=2))

    assert [cert.fingerprint_sha256 for cert in result.certificates] == [good_leaf.fingerprint]
    assert only(result, good_leaf).private_key.present is True
    assert error_pairs(result) == [("load", str(bundle))]


def test_file_over_limit_gives_no_keys(tmp_path: Path, ca: CertKey) -> None:
    """The key in a file over the limit is not read either, so it cannot pair with a certificate elsewhere."""
    leaf = make_leaf(ca, "device-1")
    cert_path = leaf.write_cert(tmp_path / "client.pem")
    bundle = write_pem(tmp_path / "keys.pem", ca.cert_pem(), ca.cert_pem(), leaf.key_pem())

    result = collect_pem([str(cert_path), str(bundle)], [], PemLimits(max_certificates_per_file=1))

    certificate = only(result, leaf)
    assert certificate.private_key.present is False
    assert certificate.private_key.status == "missing"
    assert error_pairs(result) == [("load", str(bundle))]


def test_certificate_limit_counts_every_certificate_label(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    body = leaf.cert_pem().split(b"\n", 1)[1].rsplit(b"-----END", 1)[0]
    blocks = [
        b"-----BEGIN X509 CERTIFICATE-----\n" + body + b"-----END X509 CERTIFICATE-----\n",
        b"-----BEGIN TRUSTED CERTIFICATE-----\n" + body + b"-----END TRUSTED CERTIFICATE-----\n",
        leaf.cert_pem(),
    ]
    path = write_pem(tmp_path / "labels.pem", *blocks)

    result = collect_pem([str(path)], [], PemLimits(max_certificates_per_file=2))

    assert result.certificates == []
    assert error_pairs(result) == [("load", str(path))]
    assert "contains 3 certificate PEM blocks" in result.errors[0].message


def test_certificate_limit_counts_truncated_blocks(tmp_path: Path) -> None:
    """Blocks without an END line count too, so a file of BEGIN lines gives one error, not one per line."""
    path = write_pem(tmp_path / "begins.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n" * 5)

    result = collect_pem([str(path)], [], PemLimits(max_certificates_per_file=4))

    assert error_pairs(result) == [("load", str(path))]
    assert "contains 5 certificate PEM blocks, more than the limit of 4" in result.errors[0].message


def test_default_certificate_limit(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    at_limit = write_pem(tmp_path / "at-limit.pem", leaf.cert_pem() * DEFAULT_MAX_CERTIFICATES_PER_FILE)
    over = write_pem(tmp_path / "over.pem", leaf.cert_pem() * (DEFAULT_MAX_CERTIFICATES_PER_FILE + 1))
    assert over.stat().st_size <= DEFAULT_MAX_FILE_SIZE

    result = collect_pem([str(at_limit), str(over)], [])

    assert len(result.certificates) == DEFAULT_MAX_CERTIFICATES_PER_FILE
    assert {cert.source.location for cert in result.certificates} == {str(at_limit)}
    assert error_pairs(result) == [("load", str(over))]
    assert (
        f"contains {DEFAULT_MAX_CERTIFICATES_PER_FILE + 1} certificate PEM blocks" in result.errors[0].message
    )


def test_der_certificate_within_limit_of_one(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = leaf.write_cert(tmp_path / "client.der", encoding="der")
    result = collect_pem(
        [str(path)], [], PemLimits(max_file_size=len(leaf.cert_der()), max_certificates_per_file=1)
    )
    only(result, leaf)
    assert result.errors == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_file_size", 0),
        ("max_file_size", -1),
        ("max_file_size", True),
        ("max_file_size", 1.5),
        ("max_certificates_per_file", 0),
        ("max_certificates_per_file", "5"),
        ("max_certificates_per_file", None),
    ],
)
def test_limits_must_be_positive_integers(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be a positive integer, not {value!r}$"):
        PemLimits(**{field: value})  # type: ignore[arg-type]


BROKEN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n"


def test_block_errors_listed_up_to_limit(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    path = write_pem(tmp_path / "broken.pem", BROKEN_CERTIFICATE * MAX_BLOCK_ERRORS_PER_FILE, leaf.cert_pem())

    result = collect_pem([str(path)], [])

    only(result, leaf)
    assert error_pairs(result) == [("load", str(path))] * MAX_BLOCK_ERRORS_PER_FILE
    assert all("PEM block CERTIFICATE at line" in error.message for error in result.errors)


def test_block_errors_beyond_limit_counted(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    broken = BROKEN_CERTIFICATE * (MAX_BLOCK_ERRORS_PER_FILE + 5)
    path = write_pem(tmp_path / "broken.pem", broken, leaf.cert_pem(), leaf.key_pem())

    result = collect_pem([str(path)], [])

    assert only(result, leaf).private_key.present is True
    assert error_pairs(result) == [("load", str(path))] * (MAX_BLOCK_ERRORS_PER_FILE + 1)
    assert result.errors[0].message.startswith(f"{path}: PEM block CERTIFICATE at line 1: ")
    assert result.errors[-1].message == (
        f"{path} has 5 more PEM blocks that could not be loaded, beyond the {MAX_BLOCK_ERRORS_PER_FILE} "
        "reported; repair or remove the file"
    )


# Symbolic links


def test_file_link_loop_in_folder(tmp_path: Path, ca: CertKey) -> None:
    (tmp_path / "a.pem").symlink_to(tmp_path / "b.pem")
    (tmp_path / "b.pem").symlink_to(tmp_path / "a.pem")
    _, good_leaf = good_file(tmp_path, ca)

    result = collect_without_blocking([tmp_path])

    only(result, good_leaf)
    assert error_pairs(result) == [("open", str(tmp_path / "a.pem")), ("open", str(tmp_path / "b.pem"))]
    for error in result.errors:
        assert error.message == (
            f"{error.location} cannot be resolved: too many levels of symbolic links, as in a link loop; "
            "point the link at a certificate file or folder, or give the real path"
        )


def test_link_loop_given_directly(tmp_path: Path, ca: CertKey) -> None:
    loop = tmp_path / "loop.pem"
    loop.symlink_to(loop)
    folder_loop = tmp_path / "certs"
    folder_loop.symlink_to(folder_loop)
    good, good_leaf = good_file(tmp_path, ca)

    result = collect_without_blocking([loop, folder_loop, good])

    only(result, good_leaf)
    assert error_pairs(result) == [("open", str(loop)), ("open", str(folder_loop))]
    assert all("too many levels of symbolic links" in error.message for error in result.errors)


def test_directory_link_loop_in_folder_not_followed(tmp_path: Path, ca: CertKey) -> None:
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "parent").symlink_to(top)
    (top / "itself").symlink_to(".")
    _, good_leaf = good_file(top / "sub", ca)

    result = collect_without_blocking([top])

    assert [cert.source.location for cert in result.certificates] == [str(top / "sub" / "good.pem")]
    only(result, good_leaf)
    assert error_pairs(result) == [("open", str(top / "itself")), ("open", str(top / "sub" / "parent"))]
    for error in result.errors:
        assert error.message == (
            f"{error.location} is a symbolic link to a directory, which is not followed; "
            "name the target directory in the rule's paths or with --path"
        )


def test_link_to_folder_given_directly_is_scanned(tmp_path: Path, ca: CertKey) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "back").symlink_to(tmp_path)
    _, good_leaf = good_file(target, ca)
    link = tmp_path / "link"
    link.symlink_to(target)

    result = collect_without_blocking([link])

    assert only(result, good_leaf).source.location == str(link / "good.pem")
    assert error_pairs(result) == [("open", str(link / "back"))]


def test_dangling_link_names_target(tmp_path: Path, ca: CertKey) -> None:
    link = tmp_path / "client.pem"
    link.symlink_to(tmp_path / "gone.pem")
    good, good_leaf = good_file(tmp_path, ca)

    for paths in ([tmp_path], [link, good]):
        result = collect_without_blocking(paths)
        only(result, good_leaf)
        assert error_pairs(result) == [("open", str(link))]
        assert result.errors[0].message == (
            f"{link} is a symbolic link to {tmp_path / 'gone.pem'}, which does not exist; fix or remove the link"
        )


# FIFOs, sockets and devices


def not_regular_message(path: Path | str, kind: str) -> str:
    return (
        f"{path} is {kind}, not a regular file, so it was not opened; "
        "give the path of a PEM or DER certificate or key file"
    )


def test_fifo_without_writer_not_opened(tmp_path: Path, ca: CertKey) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    in_folder = folder / "client.pem"
    os.mkfifo(in_folder)
    named = tmp_path / "named.pem"
    os.mkfifo(named)
    _, good_leaf = good_file(folder, ca)

    result = collect_without_blocking([folder, named], fifos=[in_folder, named])

    only(result, good_leaf)
    assert error_pairs(result) == [("open", str(in_folder)), ("open", str(named))]
    assert [error.message for error in result.errors] == [
        not_regular_message(in_folder, "a FIFO (named pipe)"),
        not_regular_message(named, "a FIFO (named pipe)"),
    ]


@pytest.fixture
def swap_for_fifo(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make the next stat of a path return the regular file's status, then put a FIFO in its place."""

    def arm(path: Path) -> None:
        real_stat = os.stat

        def stat_then_swap(target: str | Path, *arguments: object, **keywords: object) -> os.stat_result:
            info = real_stat(target, *arguments, **keywords)  # type: ignore[arg-type]
            if str(target) == str(path) and stat.S_ISREG(info.st_mode):
                path.unlink()
                os.mkfifo(path)
            return info

        monkeypatch.setattr(os, "stat", stat_then_swap)

    return arm


def test_fifo_swapped_in_after_stat_does_not_block(
    tmp_path: Path, ca: CertKey, swap_for_fifo: Callable[[Path], None]
) -> None:
    swapped = write_pem(tmp_path / "client.pem", make_leaf(ca, "device-1").cert_pem())
    _, good_leaf = good_file(tmp_path, ca)
    swap_for_fifo(swapped)

    result = collect_without_blocking([tmp_path], fifos=[swapped])

    assert stat.S_ISFIFO(swapped.lstat().st_mode)
    only(result, good_leaf)
    assert error_pairs(result) == [("open", str(swapped))]
    assert result.errors[0].message == not_regular_message(swapped, "a FIFO (named pipe)")


@pytest.fixture
def unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A relative name keeps the address within the 108 bytes that AF_UNIX allows.
    monkeypatch.chdir(tmp_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("client.sock")
        server.listen(1)
        yield tmp_path / "client.sock"
    finally:
        server.close()


def test_socket_not_opened(tmp_path: Path, ca: CertKey, unix_socket: Path) -> None:
    _, good_leaf = good_file(tmp_path, ca)

    for paths in ([tmp_path], [unix_socket]):
        result = collect_without_blocking(paths)
        assert error_pairs(result) == [("open", str(unix_socket))]
        assert result.errors[0].message == not_regular_message(unix_socket, "a socket")
    only(collect_without_blocking([tmp_path]), good_leaf)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/random", "/dev/urandom", "/dev/null"])
def test_character_device_not_opened(tmp_path: Path, ca: CertKey, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    link = tmp_path / "linked.pem"
    link.symlink_to(device)
    good, good_leaf = good_file(tmp_path, ca)

    named = collect_without_blocking([device, good])
    only(named, good_leaf)
    assert error_pairs(named) == [("open", device)]
    assert named.errors[0].message == not_regular_message(device, "a character device")

    found = collect_without_blocking([tmp_path])
    only(found, good_leaf)
    assert error_pairs(found) == [("open", str(link))]
    assert found.errors[0].message == not_regular_message(link, "a character device")


def find_block_device() -> str | None:
    try:
        entries = sorted(os.scandir("/dev"), key=lambda entry: entry.name)
    except OSError:
        return None
    for entry in entries:
        try:
            if stat.S_ISBLK(entry.stat(follow_symlinks=False).st_mode):
                return entry.path
        except OSError:
            continue
    return None


def test_block_device_not_opened(tmp_path: Path, ca: CertKey) -> None:
    device = find_block_device()
    if device is None:
        pytest.skip("no block device under /dev to point at")
    link = tmp_path / "disk.pem"
    link.symlink_to(device)
    _, good_leaf = good_file(tmp_path, ca)

    result = collect_without_blocking([device, tmp_path])

    only(result, good_leaf)
    assert error_pairs(result) == [("open", device), ("open", str(link))]
    assert [error.message for error in result.errors] == [
        not_regular_message(device, "a block device"),
        not_regular_message(link, "a block device"),
    ]


# Directories given as paths


def test_directory_read_recursively(tmp_path: Path, ca: CertKey) -> None:
    leaf = make_leaf(ca, "device-1")
    (tmp_path / "pki" / "certs" / "deep").mkdir(parents=True)
    (tmp_path / "pki" / "private").mkdir()
    cert_path = leaf.write_cert(tmp_path / "pki" / "certs" / "deep" / "client.crt")
    key_path = leaf.write_key(tmp_path / "pki" / "private" / "client.key")
    (tmp_path / "pki" / "README").write_text("device certificates\n")

    result = collect_pem([str(tmp_path / "pki"), str(cert_path)], [])

    certificate = only(result, leaf)
    assert certificate.source.location == str(cert_path)
    assert certificate.private_key.location == str(key_path)
    assert result.errors == []


# Permissions


def collect_as_unprivileged_user(paths: Sequence[Path]) -> dict[str, object]:
    """Run collect_pem in a child process as the user ``nobody`` when root (through setpriv), else as the current user.

    Returns the child's report: the certificates' locations, the errors, and
    ``readable`` telling whether the user could read the first path anyway.
    """
    script = (
        "import json, os, sys\n"
        "from collector.sources.pem import collect_pem\n"
        "result = collect_pem(sys.argv[1:], [])\n"
        "print(json.dumps({'readable': os.access(sys.argv[1], os.R_OK),\n"
        "    'locations': [cert.source.location for cert in result.certificates],\n"
        "    'errors': [error.model_dump() for error in result.errors]}))\n"
    )
    drop: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv, so permission cannot be denied")
        drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "HOME": "/nonexistent"}
    completed = subprocess.run(
        [*drop, sys.executable, "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        env=environment,
        cwd="/",
        timeout=HANG_TIMEOUT,
        check=False,
    )
    if (
        completed.returncode != 0
        and "Permission denied" in completed.stderr
        and "certposture" not in completed.stderr
    ):
        pytest.skip(f"the unprivileged user cannot run this interpreter: {completed.stderr.strip()}")
    assert completed.returncode == 0, completed.stderr
    report: dict[str, object] = json.loads(completed.stdout)
    if report["readable"]:
        pytest.skip(
            "the user can read a file of mode 000 (CAP_DAC_OVERRIDE?), so permission cannot be denied"
        )
    return report


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder that the unprivileged user may enter; pytest's temporary folders are private to root."""
    folder = Path(tempfile.mkdtemp(prefix="certposture-permissions-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for directory, subdirectories, _ in os.walk(folder):
            for name in subdirectories:
                os.chmod(os.path.join(directory, name), 0o755)
        shutil.rmtree(folder)


def test_permission_denied_file_and_folder(shared_folder: Path, ca: CertKey) -> None:
    secret = write_pem(shared_folder / "secret.pem", make_leaf(ca, "secret").cert_pem())
    secret.chmod(0o000)
    locked = shared_folder / "locked"
    locked.mkdir()
    inner = write_pem(locked / "inner.pem", make_leaf(ca, "inner").cert_pem())
    locked.chmod(0o000)
    unsearchable = shared_folder / "unsearchable"
    unsearchable.mkdir()
    listed = write_pem(unsearchable / "listed.pem", make_leaf(ca, "listed").cert_pem())
    unsearchable.chmod(0o444)
    good, _ = good_file(shared_folder, ca)
    good.chmod(0o644)

    report = collect_as_unprivileged_user([secret, locked, inner, unsearchable, good])

    assert report["locations"] == [str(good)]

    def denied_opening(path: Path) -> str:
        return (
            f"permission denied opening {path}; run the collector as a user that may read it (often root), "
            "or grant that user read access to the file and search access to its folders"
        )

    denied_listing = (
        f"permission denied listing directory {locked}; run the collector as a user that may read it "
        "(often root), or grant that user read and search access to the directory"
    )
    # Folders are listed before any file is read, so their errors come first.
    assert report["errors"] == [
        {"source": "pem", "location": str(locked), "step": "open", "message": denied_listing},
        {"source": "pem", "location": str(inner), "step": "open", "message": denied_opening(inner)},
        {"source": "pem", "location": str(secret), "step": "open", "message": denied_opening(secret)},
        {"source": "pem", "location": str(listed), "step": "open", "message": denied_opening(listed)},
    ]


# Command-line options


def test_collect_passes_limits(cli: Cli, ca: CertKey) -> None:
    bundle, _ = chain_file(cli.work / "bundle.pem", ca, 2)
    large = write_pem(cli.work / "large.pem", ca.cert_pem(), b"\n" * 2048)
    facts_path = cli.work / "facts.json"

    code, out, err = cli.run(
        "collect",
        "--hostname",
        HOSTNAME,
        "--serial-number",
        SERIAL,
        "--path",
        str(bundle),
        "--path",
        str(large),
        "--max-file-size",
        "2048",
        "--max-certificates-per-file",
        "1",
        "-o",
        str(facts_path),
    )

    assert (code, out) == (0, "")
    assert err == 'warning: 2 collection error(s); see "errors" in the facts\n'
    facts = json.loads(facts_path.read_text())
    assert facts["certificates"] == []
    messages = {error["location"]: error["message"] for error in facts["errors"]}
    assert set(messages) == {str(bundle), str(large)}
    assert "more than the limit of 1 per file" in messages[str(bundle)]
    assert "larger than the limit of 2048 bytes" in messages[str(large)]


def add_bundle_rule(cli: Cli, ca: CertKey) -> tuple[Path, CertKey]:
    """Store a rule whose only path is a file with a device certificate, its key and the CA certificate."""
    ca_id = cli.add_ca(ca)
    leaf = make_leaf(ca, "device-1")
    bundle = write_pem(cli.work / "bundle.pem", leaf.cert_pem(), ca.cert_pem(), leaf.key_pem())
    cli.add_rule(ca_id, locations={"paths": [str(bundle)]})
    return bundle, leaf


def test_check_reports_limit_in_rule_errors(cli: Cli, ca: CertKey) -> None:
    bundle, leaf = add_bundle_rule(cli, ca)
    identity = ["--hostname", HOSTNAME, "--serial-number", SERIAL]

    code, out, _ = cli.run("check", *identity, "--max-certificates-per-file", "1")
    assert code == 1
    (result,) = json.loads(out)["results"]
    assert result["status"] == "failed"
    assert [reason["code"] for reason in result["reasons"]] == ["no_certificate"]
    assert [(error["step"], error["location"]) for error in result["errors"]] == [("load", str(bundle))]
    assert "more than the limit of 1 per file" in result["errors"][0]["message"]

    code, out, _ = cli.run("check", *identity, "--max-certificates-per-file", "2")
    assert code == 0
    assert json.loads(out)["results"][0]["matched_certificates"] == [leaf.fingerprint]


def test_watch_passes_limits(cli: Cli, ca: CertKey) -> None:
    bundle, _ = add_bundle_rule(cli, ca)

    code, out, err = cli.run(
        "check",
        "--watch",
        "--watch-rounds",
        "1",
        "--hostname",
        HOSTNAME,
        "--serial-number",
        SERIAL,
        "--max-file-size",
        "100",
    )

    assert code == 0, err
    (line,) = out.splitlines()
    (result,) = json.loads(line)["results"]
    assert result["status"] == "failed"
    assert [(error["step"], error["location"]) for error in result["errors"]] == [("read", str(bundle))]
    assert "larger than the limit of 100 bytes" in result["errors"][0]["message"]


INVALID_VALUES = [
    ("0", "is 0, but it must be at least 1"),
    ("-1", "'-1' is not a positive whole number"),
    ("abc", "'abc' is not a positive whole number"),
    ("1.5", "'1.5' is not a positive whole number"),
    ("1e3", "'1e3' is not a positive whole number"),
    (" 12", "' 12' is not a positive whole number"),
    ("", "'' is not a positive whole number"),
    ("1_000", "'1_000' is not a positive whole number"),
    ("٣", "'٣' is not a positive whole number"),
    ("9" * 5000, "has 5000 digits, too many for a limit"),
]


@pytest.mark.parametrize("command", [["collect"], ["check"], ["check", "--watch"]])
@pytest.mark.parametrize("option", ["--max-file-size", "--max-certificates-per-file"])
@pytest.mark.parametrize(("value", "problem"), INVALID_VALUES)
def test_invalid_limit_is_usage_error(
    cli: Cli, tmp_path: Path, command: list[str], option: str, value: str, problem: str
) -> None:
    code, out, err = cli.run(*command, "--path", str(tmp_path), option, value)

    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {option} {problem}; give a number such as ")
    assert err.count("\n") == 1
