"""A progress bar on standard error: redrawn in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 28


def render(label: str, done: float, total: float | None, elapsed_s: float, unit: str = "") -> str:
    """One line of progress, e.g. ``latency  [#######.....]  41%  8200/20000 ev  3.1 s``."""
    if total:
        fraction = max(0.0, min(1.0, done / total))
        filled = int(WIDTH * fraction)
        bar = "#" * filled + "." * (WIDTH - filled)
        return f"{label:<24} [{bar}] {fraction * 100:3.0f}%  {done:,.0f}/{total:,.0f} {unit}  {elapsed_s:5.1f} s"
    return f"{label:<24} {done:,.0f} {unit}  {elapsed_s:5.1f} s"


class Progress:
    def __init__(self, label: str, total: float | None = None, unit: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._done = 0.0

    def update(self, done: float, total: float | None = None) -> None:
        self._done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self._last_draw < (0.1 if self._tty else 5.0):
            return
        self._last_draw = now
        self._draw(end="\r" if self._tty else "\n")

    def close(self, note: str = "") -> None:
        self._draw(end="\n", note=note)

    def _draw(self, end: str, note: str = "") -> None:
        line = render(self.label, self._done, self.total, time.monotonic() - self._start, self.unit)
        if note:
            line += f"  {note}"
        clear = "\x1b[2K" if self._tty else ""
        self._stream.write(clear + line + end)
        self._stream.flush()


def say(message: str) -> None:
    """A status line on standard error."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
