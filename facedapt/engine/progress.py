"""A progress line for long loops: step, rate, ETA and the latest losses, redrawn in place on a
terminal; silent elsewhere (log lines at train.log_every steps take over there)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        """``enabled``: None draws on a terminal only (``-q`` and other ranks pass False)."""
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._label, self._total, self._start, self._start_step = "", 0, 0.0, 0
        self._last_draw = 0.0
        self._info = ""

    def start(self, label: str, total: int, step: int = 0) -> None:
        self._label, self._total, self._start, self._start_step = label, total, time.perf_counter(), step
        self._info = ""

    def note(self, info: str) -> None:
        """Latest losses or accuracy to show (set at log steps, so no per-step host sync)."""
        self._info = info

    def update(self, step: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.2 and step < self._total:  # redraw at most 5 times a second
            return
        self._last_draw = now
        done = step - self._start_step
        rate = done / max(now - self._start, 1e-9)
        eta = (self._total - step) / rate if rate > 0 else float("inf")
        width = 24
        filled = int(width * step / max(self._total, 1))
        bar = "#" * filled + "." * (width - filled)
        eta_text = time.strftime("%M:%S", time.gmtime(eta)) if eta < 360000 else "--:--"
        line = f"\r{self._label} [{bar}] {step}/{self._total} {rate:.1f} it/s ETA {eta_text} {self._info}"
        self.stream.write(line[: 160].ljust(100))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
