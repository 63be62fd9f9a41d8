"""Jetson ``tegrastats`` lines parsed, and a background sampler for average power during a run.

tegrastats prints one line per interval. Formats differ by module and JetPack release:

- Orin Nano / NX (JetPack 5-6): ``... GR3D_FREQ 0% cpu@45.8C ... VDD_IN 4968mW/4968mW
  VDD_CPU_GPU_CV 436mW/436mW VDD_SOC 1708mW/1708mW`` (instantaneous/average, milliwatts);
- AGX Orin: ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0`` (no input rail), and on JetPack 7
  ``GR3D_FREQ 0%@[1300,1300]``;
- Xavier NX / AGX Xavier and older (JetPack 4): units left out (``VDD_IN 5336/4970``), the Nano
  calls its input rail ``POM_5V_IN``, early AGX Xavier releases name rails ``GPU``, ``CPU``,
  ``SOC``, ``CV``, ``VDDRQ``, ``SYS5V``.

Board power is the input rail (``VDD_IN`` or ``POM_5V_IN``) when there is one; otherwise the
sum of every rail reported (what jetson-stats does for AGX modules), and the report says which.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

log = logging.getLogger(__name__)

#: Rails that measure the whole module's input, in order of preference.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
# "tj@46.3C", and on JetPack 7 "cpu@52.9C/52.9C" (now/max).
_TEMP = re.compile(r"(?<![\w%@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?=\s|$)")
# "NAME 1234mW/1200mW" or "NAME 1234mW" (JetPack 5+), "NAME 1234/1200" (JetPack 4, no units).
_RAIL_MW = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)mW(?:/(\d+)mW)?(?=\s|$)")
_RAIL_BARE = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)/(\d+)(?=\s|$)")
#: tegrastats prints -256C for a sensor that is switched off.
_TEMP_OFF = -256.0


@dataclass
class TegraSample:
    """One tegrastats line. Powers in mW, temperatures in C, frequencies in MHz."""

    timestamp: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    cpu_loads: list[float | None] = field(default_factory=list)  # None: core off
    cpu_freqs_mhz: list[int | None] = field(default_factory=list)
    gpu_load: float | None = None
    gpu_freqs_mhz: list[int] = field(default_factory=list)
    emc_load: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, float] = field(default_factory=dict)  # instantaneous
    rails_avg_mw: dict[str, float] = field(default_factory=dict)  # tegrastats' own running average

    @property
    def cpu_load_mean(self) -> float | None:
        on = [v for v in self.cpu_loads if v is not None]
        return sum(on) / len(on) if on else None

    def input_power_mw(self) -> tuple[str, float] | None:
        """(rail, mW) for the module's input: an input rail, else the sum of all rails."""
        for rail in INPUT_RAILS:
            if rail in self.rails_mw:
                return rail, self.rails_mw[rail]
        if not self.rails_mw:
            return None
        return "sum(" + "+".join(self.rails_mw) + ")", float(sum(self.rails_mw.values()))


def _parse_cpu(body: str, shared_freq: str | None) -> tuple[list[float | None], list[int | None]]:
    loads: list[float | None] = []
    freqs: list[int | None] = []
    for entry in (e.strip() for e in body.split(",")):
        if not entry:
            continue
        if entry.lower() == "off":
            loads.append(None)
            freqs.append(None)
            continue
        load, _, freq = entry.partition("@")
        loads.append(float(load.rstrip("%")))
        freq = freq or shared_freq or ""
        freqs.append(int(freq) if freq.isdigit() else None)
    return loads, freqs


def parse_line(line: str) -> TegraSample:
    """Parse one tegrastats line; fields a module does not print stay ``None``/empty."""
    sample = TegraSample()
    if m := _TIMESTAMP.match(line):
        sample.timestamp = m.group(1)
    if m := _RAM.search(line):
        sample.ram_used_mb, sample.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        sample.swap_used_mb = int(m.group(1))
    if m := _CPU.search(line):
        sample.cpu_loads, sample.cpu_freqs_mhz = _parse_cpu(m.group(1), m.group(2))
    if (m := _GR3D.search(line)) and (m.group(1) or m.group(2)):
        sample.gpu_load = float(m.group(1)) if m.group(1) else None
        sample.gpu_freqs_mhz = [int(f) for f in (m.group(2) or "").split(",") if f]
    if m := _EMC.search(line):
        sample.emc_load = float(m.group(1))
    for name, value in _TEMP.findall(line):
        if float(value) > _TEMP_OFF:
            sample.temps_c[name] = float(value)
    for name, now, avg in _RAIL_MW.findall(line) + _RAIL_BARE.findall(line):
        sample.rails_mw[name] = float(now)
        if avg:
            sample.rails_avg_mw[name] = float(avg)
    return sample


@dataclass
class PowerSummary:
    """Average module power over a window of samples."""

    rail: str
    mean_w: float
    samples: int
    mean_gpu_load: float | None = None
    mean_cpu_load: float | None = None  # over the online cores: a CPU-bound row shows here, not in GPU load
    max_temp_c: float | None = None  # a hot module throttles its clocks, which slows the row

    def images_per_joule(self, images: int, seconds: float) -> float:
        return images / (self.mean_w * seconds) if self.mean_w > 0 and seconds > 0 else float("nan")


def summarize(samples: Iterable[TegraSample]) -> PowerSummary | None:
    """Mean input power (W), mean GPU and CPU load and peak temperature over the samples."""
    samples = list(samples)
    powers = [p for p in (s.input_power_mw() for s in samples) if p is not None]
    if not powers:
        return None
    gpu = [s.gpu_load for s in samples if s.gpu_load is not None]
    cpu = [c for c in (s.cpu_load_mean for s in samples) if c is not None]
    temps = [t for s in samples for t in s.temps_c.values()]
    return PowerSummary(rail=powers[0][0], mean_w=sum(mw for _, mw in powers) / len(powers) / 1000.0,
                        samples=len(powers), mean_gpu_load=sum(gpu) / len(gpu) if gpu else None,
                        mean_cpu_load=sum(cpu) / len(cpu) if cpu else None, max_temp_c=max(temps) if temps else None)


def available(command: str = "tegrastats") -> bool:
    return shutil.which(command) is not None


class TegrastatsSampler:
    """Run ``tegrastats --interval MS`` in the background and keep timestamped samples.

    Use as a context manager around a run; :meth:`window` then gives the samples taken between
    two ``time.monotonic()`` marks, so one sampler can serve several timed phases.
    """

    def __init__(self, interval_ms: int = 100, command: Sequence[str] = ("tegrastats",)) -> None:
        self.interval_ms = interval_ms
        self.command = list(command)
        self._samples: list[tuple[float, TegraSample]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "TegrastatsSampler":
        if not available(self.command[0]):
            raise FileNotFoundError(f"{self.command[0]} not found (not a Jetson, or not on PATH)")
        self._proc = subprocess.Popen([*self.command, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                sample = parse_line(line)
                with self._lock:
                    self._samples.append((time.monotonic(), sample))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._proc = self._thread = None

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def samples(self) -> list[TegraSample]:
        with self._lock:
            return [s for _, s in self._samples]

    def window(self, start: float, end: float) -> list[TegraSample]:
        """Samples taken between two ``time.monotonic()`` marks."""
        with self._lock:
            return [s for t, s in self._samples if start <= t <= end]

    def wait_for_samples(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` samples arrived (or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._samples) >= count:
                    return True
            time.sleep(self.interval_ms / 4000.0)
        return False
