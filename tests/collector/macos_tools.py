"""Recorded macOS tool output, generated from real certificates, and fake tools that replay it.

The generators print what Apple's tools print, so the collector's parsers
see the real format without a Mac. The ``security`` formats follow
``SecurityTool/macOS/keychain_find.c`` and ``identity_find.m`` in Apple's
open-source Security project. A test sets up the keychain like this:

    tools = FakeTools.install(tmp_path / "tools")
    tools.record(find_certificate_command(SYSTEM_KEYCHAIN), find_certificate_output([leaf.cert]))
    tools.record(find_identity_command(SYSTEM_KEYCHAIN), find_identity_output([(leaf.cert, "device", None)]))
    monkeypatch.setenv("PATH", tools.path)

PATH then holds only the fake tools, so a test behaves the same on macOS,
where the real tools exist, as elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

TOOL_NAMES = ("security", "ioreg", "sw_vers")

# Exit status of a fake tool asked for arguments that have no recording.
NO_RECORDING_STATUS = 64

EXPIRED = "CSSMERR_TP_CERT_EXPIRED"
NOT_TRUSTED = "CSSMERR_TP_NOT_TRUSTED"

# Output that matches none of the formats.
GARBAGE = b"\x00\xffsecurity: unexpected response \xc3\x28\n"

Identity = tuple[x509.Certificate, str, str | None]
"""A certificate with its private key in the keychain: certificate, label and trust error (None when valid)."""


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# security find-certificate -a -Z -p KEYCHAIN


def hash_lines(der: bytes) -> bytes:
    """Return the ``SHA-256 hash:`` and ``SHA-1 hash:`` lines that ``-Z`` prints before a certificate."""
    sha256 = hashlib.sha256(der).hexdigest().upper()
    sha1 = hashlib.sha1(der).hexdigest().upper()
    return f"SHA-256 hash: {sha256}\nSHA-1 hash: {sha1}\n".encode()


def pem_block(der: bytes) -> bytes:
    """Encode DER bytes as ``security -p`` does: a CERTIFICATE block with 64-character lines."""
    # The DER need not be a valid certificate, so the PEM is built by hand rather than by cryptography.
    encoded = base64.b64encode(der).decode()
    lines = [encoded[start : start + 64] for start in range(0, len(encoded), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n").encode()


def find_certificate_entry(der: bytes, *, sha256_line: bool = True) -> bytes:
    """Print one certificate as ``find-certificate -Z -p`` does.

    Without ``sha256_line`` the SHA-256 line is left out, as security does when it cannot compute that hash.
    """
    lines = hash_lines(der)
    if not sha256_line:
        lines = lines.split(b"\n", 1)[1]
    return lines + pem_block(der)


def find_certificate_output(certificates: Sequence[x509.Certificate], *, sha256_line: bool = True) -> bytes:
    """Print ``security find-certificate -a -Z -p`` output for a keychain holding ``certificates``."""
    return b"".join(
        find_certificate_entry(certificate_der(cert), sha256_line=sha256_line) for cert in certificates
    )


# security find-identity -p ssl-client KEYCHAIN


def identity_line(ordinal: int, cert: x509.Certificate, label: str, status: str | None) -> str:
    """Print one identity as ``printIdentity`` does: ``%3d) SHA1 "label"`` and `` (status)``."""
    sha1 = hashlib.sha1(certificate_der(cert)).hexdigest().upper()
    # An empty label is printed as <unknown>.
    line = f'{ordinal:3d}) {sha1} "{label or "<unknown>"}"'
    if status is not None:
        line += f" ({status})"
    return line + "\n"


def find_identity_output(
    identities: Sequence[Identity], *, valid_identities: Sequence[Identity] | None = None
) -> bytes:
    """Print ``security find-identity -p ssl-client`` output.

    Every identity is listed under "Matching identities" with its status,
    and the ones without a status again under "Valid identities only".
    ``valid_identities`` replaces that second list, for output that a
    keychain change between the two searches could produce.
    """
    if valid_identities is None:
        valid_identities = [identity for identity in identities if identity[2] is None]
    text = "\nPolicy: SSL (client)\n  Matching identities\n"
    for ordinal, (cert, label, status) in enumerate(identities, start=1):
        text += identity_line(ordinal, cert, label, status)
    text += f"     {len(identities)} identities found\n\n"
    text += "  Valid identities only\n"
    for ordinal, (cert, label, _) in enumerate(valid_identities, start=1):
        text += identity_line(ordinal, cert, label, None)
    text += f"     {len(valid_identities)} valid identities found\n"
    return text.encode()


# ioreg -rd1 -c IOPlatformExpertDevice


def ioreg_output(serial_number: str | None = "C02XK1ABJGH5") -> bytes:
    """Print the platform device as ``ioreg -rd1 -c IOPlatformExpertDevice`` does on an Intel Mac.

    Without ``serial_number`` the IOPlatformSerialNumber property is left out.
    """
    lines = [
        "+-o MacBookPro16,1  <class IOPlatformExpertDevice, id 0x100000112, registered, matched, "
        "active, busy 0 (77 ms), retain 33>",
        "    {",
        '      "IOPlatformSystemSleepPolicy" = <534c505402000a000000000000000000>',
        '      "compatible" = <"MacBookPro16,1">',
        '      "version" = <"1.0">',
        '      "board-id" = <"Mac-E1008331FDC96864">',
        '      "IOInterruptSpecifiers" = (<0900000005000000>)',
        '      "serial-number" = <43303258000000000000000000000000000000000000000000000000>',
        '      "IOPlatformUUID" = "5C3B2E1A-7D4F-4A8B-9C6E-0F1D2A3B4C5D"',
    ]
    if serial_number is not None:
        lines.append(f'      "IOPlatformSerialNumber" = "{serial_number}"')
    lines += [
        '      "manufacturer" = <"Apple Inc.">',
        '      "model" = <"MacBookPro16,1">',
        '      "IOBusyInterest" = "IOCommand is not serializable"',
        "    }",
        "    ",
    ]
    return ("\n".join(lines) + "\n").encode()


# sw_vers


def sw_vers_output(
    name: str = "macOS",
    version: str = "14.5",
    build: str = "23F79",
    *,
    extra: str | None = None,
    tabs: int = 2,
) -> bytes:
    """Print ``sw_vers`` output with ``tabs`` tabs after each key.

    Published terminal output shows one tab up to macOS 12 (whose
    predecessors name themselves ``Mac OS X``) and two from macOS 13, which
    may add a ``ProductVersionExtra:`` line for a Rapid Security Response.
    """
    separator = "\t" * tabs
    lines = [f"ProductName:{separator}{name}", f"ProductVersion:{separator}{version}"]
    if extra is not None:
        lines.append(f"ProductVersionExtra:\t{extra}")
    lines.append(f"BuildVersion:{separator}{build}")
    return ("\n".join(lines) + "\n").encode()


# Fake tools on PATH

_FAKE_TOOL = """#!{python}
# Fake macOS tool written by tests/collector/macos_tools.py: replays recorded output for its arguments.
import json
import os
import sys

DATA = {data!r}
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
with open(os.path.join(DATA, "calls.jsonl"), "a", encoding="utf-8") as log:
    log.write(json.dumps(argv) + "\\n")
with open(os.path.join(DATA, "recordings.json"), encoding="utf-8") as handle:
    recording = json.load(handle).get(json.dumps(argv))
if recording is None:
    sys.stderr.write("fake " + argv[0] + ": no recording for " + json.dumps(argv) + "\\n")
    sys.exit({no_recording})
with open(os.path.join(DATA, recording["stdout"]), "rb") as handle:
    sys.stdout.buffer.write(handle.read())
if recording["stderr"]:
    sys.stderr.write(recording["stderr"] + "\\n")
sys.exit(recording["status"])
"""


@dataclass(frozen=True)
class FakeTools:
    """Fake ``security``, ``ioreg`` and ``sw_vers`` executables in ``bin``, replaying recordings kept in ``data``.

    Each tool looks up its exact argument list among the recordings. A call
    without a recording prints a message on stderr and exits with
    ``NO_RECORDING_STATUS``. Every call is logged, so tests can check the
    arguments the collector used.
    """

    bin: Path
    data: Path

    @classmethod
    def install(cls, directory: Path, tools: Sequence[str] = TOOL_NAMES) -> FakeTools:
        """Write the fake ``tools`` into ``directory/bin``. A tool left out is missing from PATH."""
        fake = cls(bin=directory / "bin", data=directory / "data")
        fake.bin.mkdir(parents=True)
        fake.data.mkdir(parents=True)
        (fake.data / "recordings.json").write_text("{}")
        (fake.data / "calls.jsonl").write_text("")
        # NOTE: a shebang line cannot hold a path with spaces, so the test interpreter's path must have none.
        script = _FAKE_TOOL.format(
            python=sys.executable, data=str(fake.data), no_recording=NO_RECORDING_STATUS
        )
        for name in tools:
            path = fake.bin / name
            path.write_text(script)
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return fake

    def record(self, argv: Sequence[str], stdout: bytes = b"", *, status: int = 0, stderr: str = "") -> None:
        """Make the tool ``argv[0]`` print ``stdout`` and ``stderr`` and exit with ``status`` when called with ``argv``."""
        recordings_path = self.data / "recordings.json"
        recordings = json.loads(recordings_path.read_text())
        stdout_name = f"stdout-{len(recordings)}.bin"
        (self.data / stdout_name).write_bytes(stdout)
        recordings[json.dumps(list(argv))] = {"stdout": stdout_name, "status": status, "stderr": stderr}
        recordings_path.write_text(json.dumps(recordings))

    def calls(self) -> list[list[str]]:
        """Return the argument lists of every call so far, in order, each starting with the tool name."""
        text = (self.data / "calls.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    @property
    def path(self) -> str:
        """The PATH value that finds the fake tools and nothing else."""
        return os.fspath(self.bin)
