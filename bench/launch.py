"""Run one command from a small process and write its wall time, exit code and peak RSS as JSON.

Usage: ``python bench/launch.py REPORT.json COMMAND [ARGUMENT]...``. The
command inherits standard input, output and error.

Linux counts the parent's RSS high-water mark in a child's ``ru_maxrss``.
The child starts in the parent's memory: a copy after fork, the same pages
after the vfork that Python's subprocess uses. Exec records the high-water
mark of that memory, and ``ru_maxrss`` reports the larger of it and the new
program's own. A benchmark process that keeps a fleet in memory would then
report its own peak as the command's. This launcher is a fresh interpreter
that imports only the standard library. Its own mark, about 11 MiB with
Python 3.11, is less than the command's interpreter uses, so the command's
``ru_maxrss`` is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: launch.py REPORT.json COMMAND [ARGUMENT]...", file=sys.stderr)
        return 2
    report, command = argv[0], argv[1:]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    # wait4 reaped the child, so set its exit code on Popen instead of letting Popen wait again.
    process.returncode = os.waitstatus_to_exitcode(status)
    with open(report, "w", encoding="utf-8") as output:
        json.dump(
            {"seconds": seconds, "exit_code": process.returncode, "max_rss_kib": usage.ru_maxrss}, output
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
