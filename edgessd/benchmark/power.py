"""Board power from NVIDIA's ``tegrastats`` (Jetson), for tokens per joule.

Detected, never assumed: where ``tegrastats`` is not on PATH the report says
``power: n/a: <reason>`` and no energy figure is printed. Where it is, a reader thread
keeps ``(time, milliwatts)`` samples of the board's input rail while the benchmark runs,
and :meth:`PowerMeter.energy_j` integrates them over one generation's time window.

Rails, by board (tegrastats prints ``NAME current/average``, in mW on JetPack 5+):
``VDD_IN`` (Orin Nano/NX, Xavier NX), ``POM_5V_IN`` (Nano, TX2). Boards without a total
input rail (AGX Orin) report the sum of all rails printed, and the report says so.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?\b")
INTERVAL_MS = 100


@dataclass(frozen=True)
class PowerStatus:
    available: bool
    reason: str            # why not, or what is measured
    tool: str | None = None

    def to_json(self) -> dict:
        return {"available": self.available, "reason": self.reason, "tool": self.tool}


def detect() -> PowerStatus:
    """Whether board power can be read here (tegrastats on PATH)."""
    tool = shutil.which("tegrastats")
    if tool is None:
        where = "this is not a Jetson" if not Path("/etc/nv_tegra_release").exists() else "not on PATH"
        return PowerStatus(False, f"tegrastats not found ({where})")
    return PowerStatus(True, f"board input power from {tool}, every {INTERVAL_MS} ms", tool)


def parse_tegrastats(line: str) -> tuple[float, str] | None:
    """The board's power in mW from one tegrastats line, and which rail(s) it came from.

    Example: ``... VDD_IN 5123mW/5100mW VDD_CPU_GPU_CV 980mW/950mW VDD_SOC 1403mW/1390mW``
    -> ``(5123.0, "VDD_IN")``. None when the line holds no power rail.
    """
    rails = {name: float(cur) for name, cur, _avg in _RAIL.findall(line)
             if not name.endswith("FREQ") and name not in ("RAM", "SWAP", "IRAM", "EMC")}
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name], name
    if rails:
        return sum(rails.values()), "sum of " + "+".join(sorted(rails))
    return None


@dataclass
class PowerMeter:
    """Runs tegrastats in the background; :meth:`energy_j` over any window of its run."""

    status: PowerStatus
    samples: list[tuple[float, float]] = field(default_factory=list)  # (perf_counter s, mW)
    rail: str | None = None
    _proc: subprocess.Popen | None = None
    _thread: threading.Thread | None = None

    def start(self) -> PowerMeter:
        if not self.status.available:
            return self
        self._proc = subprocess.Popen([self.status.tool, "--interval", str(INTERVAL_MS)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            got = parse_tegrastats(line)
            if got is not None:
                self.samples.append((time.perf_counter(), got[0]))
                self.rail = got[1]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PowerMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def energy_j(self, t0: float, t1: float) -> float | None:
        """Joules between perf_counter times t0 and t1: mean sampled power times the window.

        Uses the samples inside the window, or the nearest one for windows shorter than the
        sampling interval; None without samples (no tegrastats, or it printed no rail).
        """
        if not self.samples or t1 <= t0:
            return None
        inside = [mw for t, mw in self.samples if t0 <= t <= t1]
        if not inside:
            mid = (t0 + t1) / 2
            inside = [min(self.samples, key=lambda s: abs(s[0] - mid))[1]]
        return sum(inside) / len(inside) / 1e3 * (t1 - t0)
