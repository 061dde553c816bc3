"""A one-line progress display on standard error for long batch runs, shown only on a terminal."""

from __future__ import annotations

import time
from typing import TextIO

# Redraw at most this often, so that drawing costs nothing next to evaluation.
REDRAW_SECONDS = 0.2
BAR_WIDTH = 24


class Progress:
    """Counts devices and input bytes and redraws one status line; does nothing when ``stream`` is None.

    With ``total_bytes`` (the size of an input file) the line has a bar and
    a percentage. Standard input has no known length, so its line shows only
    the counts and the rate.
    """

    def __init__(self, stream: TextIO | None, total_bytes: int | None = None) -> None:
        self._stream = stream
        self._total = total_bytes if total_bytes else None
        self._done_bytes = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def update(self, devices: int, line_bytes: int, errors: int) -> None:
        """Count one more device whose input line held ``line_bytes`` bytes; redraw when due."""
        self._done_bytes += line_bytes
        if self._stream is None:
            return
        now = time.monotonic()
        if now - self._drawn >= REDRAW_SECONDS:
            self._drawn = now
            self._draw(devices, errors, now)

    def finish(self, devices: int, errors: int) -> None:
        """Draw the final counts and end the line, so that later messages start on a line of their own."""
        if self._stream is None or self._drawn == 0.0:
            return
        self._draw(devices, errors, time.monotonic())
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, devices: int, errors: int, now: float) -> None:
        assert self._stream is not None
        elapsed = max(now - self._started, 1e-9)
        text = f"{devices:,} devices, {devices / elapsed:,.0f}/s, {errors:,} with errors"
        if self._total is not None:
            share = min(self._done_bytes / self._total, 1.0)
            filled = round(share * BAR_WIDTH)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%} {text}"
        # Pad with spaces over a longer earlier line, then return to the line's start.
        padded = text.ljust(self._width)
        self._width = len(text)
        self._stream.write(f"\r{padded}")
        self._stream.flush()
