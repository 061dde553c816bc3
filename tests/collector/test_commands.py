"""The tool runner: lookup on PATH, output cap, timeout, and failures as CommandError."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from collector import commands
from collector.commands import CommandError, find_executable, run_command

posix_only = pytest.mark.skipif(os.name != "posix", reason="the fake tools are #! scripts")


def write_tool(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport os, subprocess, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@posix_only
def test_output_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tool(tmp_path / "bin", "tool", "sys.stdout.write('hello ' + ' '.join(sys.argv[1:]))")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    assert run_command(["tool", "a", "b"]) == b"hello a b"


@posix_only
def test_nonzero_exit_names_status_and_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tool(tmp_path / "bin", "tool", "sys.stderr.write('\\nfirst problem\\nsecond\\n'); sys.exit(7)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(CommandError) as raised:
        run_command(["tool", "x"])

    assert raised.value.message == "tool x exited with status 7: first problem"


def test_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(CommandError, match=r"^security was not found on PATH \(running security -h\)$"):
        run_command(["security", "-h"])


@posix_only
def test_relative_path_entry_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tool planted in the current directory or a relative PATH entry must not be run.
    write_tool(tmp_path / "planted", "tool", "print('planted')")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.pathsep.join(["planted", ".", ""]))

    assert find_executable("tool") is None
    with pytest.raises(CommandError, match="not found on PATH"):
        run_command(["tool"])


@posix_only
def test_output_over_cap_stops_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "MAX_OUTPUT", 100_000)
    # Prints without end: only the cap, not the timeout, can stop it.
    write_tool(
        tmp_path / "bin", "tool", "chunk = b'x' * 65536\nwhile True:\n    sys.stdout.buffer.write(chunk)"
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(CommandError) as raised:
        run_command(["tool"], timeout=600)

    assert raised.value.message == "tool printed more than 100000 bytes; its output was not read"


@posix_only
def test_timeout_stops_tool_and_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "child.pid"
    body = (
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)"
    )
    write_tool(tmp_path / "bin", "tool", body)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(CommandError, match=r"^tool timed out after 2 s$"):
        run_command(["tool"], timeout=2)

    child = int(pid_file.read_text())
    assert _gone(child), f"the tool's child {child} still runs after the timeout"


def _gone(pid: int) -> bool:
    """Return True once ``pid`` no longer runs (a zombie counts as gone), waiting up to 10 s."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False
