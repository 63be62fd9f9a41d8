"""Timing of backends: warm-up, alternating round-robin runs, latency percentiles, throughput.

Batch-1 times on a shared CPU drift by up to 25% between runs (docs/benchmarks.md), so every
configuration is timed in the same process, interleaved: round ``r`` runs each configuration
once, starting at a rotating offset so no configuration always runs first or right after the
same neighbour. Drift (thermal, other load) then hits every configuration alike and the ratios
between them hold even when the absolute numbers move.

On CPU a run is timed with ``time.perf_counter``, and so is TensorRT: a run is one
``predict_batch`` (host staging into pinned memory, the copy to the GPU, ``execute_async_v3`` on
the backend's own stream, the copy back and a stream synchronize), so TensorRT rows are end-to-end
wall times, comparable with the CPU rows. CUDA events recorded on the legacy default stream around
that host-synchronised call would measure the same wall interval, not kernel time, and are not
used. PyTorch on CUDA records ``torch.cuda`` events on its current stream (the one it runs on),
after the same warm-up; its runs also include the host-device copies.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: A timer runs ``fn`` once and returns the seconds it took.
Timer = Callable[[Callable[[], Any]], float]


def wall_timer(fn: Callable[[], Any]) -> float:
    """Host wall-clock time of one call (``time.perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class TorchCudaTimer:
    """Device time of one call between two ``torch.cuda.Event`` records on the current stream."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], Any]) -> float:
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1000.0


def timer_for(target: str, device: str = "cpu") -> tuple[Timer, str]:
    """The timer to use for a backend, and its name for the report ("wall" or "cuda-events").

    TensorRT is timed with the wall clock: its backend runs on its own stream and synchronizes
    inside every call, so the run's time is end to end (copies included) whatever the clock.
    """
    if target == "torch" and device.startswith("cuda"):
        return TorchCudaTimer(), "cuda-events"
    return wall_timer, "wall"


@dataclass
class LatencyStats:
    """Percentiles of one configuration's timed runs, in milliseconds."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """p50/p90/p99 (linear interpolation between order statistics, numpy's default) in ms."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(n=int(ms.size), mean_ms=float(ms.mean()), p50_ms=float(p50), p90_ms=float(p90),
                        p99_ms=float(p99), min_ms=float(ms.min()))


@dataclass
class Throughput:
    """Images and crops per second at one batch size, from the median run time."""

    batch: int
    grid_crops: int
    images_per_s: float
    crops_per_s: float
    median_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def throughput(seconds: Sequence[float], batch: int, grid_crops: int) -> Throughput:
    """Throughput of runs that each scored ``batch`` images of ``grid_crops`` crops.

    The median run time is used, so one preempted run on a shared machine does not move it.
    """
    median = float(np.median(np.asarray(seconds, dtype=np.float64)))
    if median <= 0:
        raise ValueError("run times must be positive")
    return Throughput(batch=batch, grid_crops=grid_crops, images_per_s=batch / median,
                      crops_per_s=batch * grid_crops / median, median_ms=median * 1000.0)


def round_robin_order(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of each round: all names, rotated by the round index."""
    names = list(names)
    if not names:
        return [[] for _ in range(rounds)]
    return [names[r % len(names):] + names[:r % len(names)] for r in range(rounds)]


def measure_round_robin(runs: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 2,
                        timers: Mapping[str, Timer] | None = None,
                        on_error: Callable[[str, Exception], None] | None = None,
                        progress: Callable[[int], None] | None = None,
                        gap_s: float = 0.0) -> dict[str, list[float]]:
    """Warm every run up, then time ``repeats`` rounds, alternating between the runs.

    Args:
        runs: name -> a zero-argument callable doing one unit of work (one batch).
        repeats: timed calls per run.
        warmup: untimed calls per run before the first timed round (JIT, allocators, caches).
        timers: name -> timer (default :func:`wall_timer`).
        on_error: called with (name, exception) when a run raises; the run is dropped from the
            remaining rounds and the others go on. Without it the exception propagates.
        progress: called with the number of calls done, once per call (for a progress bar).
        gap_s: an untimed pause before each call. Runtimes' worker threads spin for a while after
            a run (OpenMP, ONNX Runtime's pool, TBB); on a small CPU the next configuration would
            otherwise share the cores with the previous one's spinning threads.

    Returns name -> list of seconds, for the runs that did not fail.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    timers = timers or {}
    live = dict(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}

    def call(name: str, timed: bool) -> None:
        if name not in live:
            return
        if gap_s > 0:
            time.sleep(gap_s)
        try:
            if timed:
                times[name].append(timers.get(name, wall_timer)(live[name]))
            else:
                live[name]()
        except Exception as exc:  # one broken configuration must not end the others' run
            if on_error is None:
                raise
            log.warning("%s failed and is dropped from the timing: %s", name, exc)
            on_error(name, exc)
            live.pop(name, None)
            times.pop(name, None)
        if progress is not None:
            progress(1)

    for _ in range(warmup):
        for name in list(runs):
            call(name, timed=False)
    for order in round_robin_order(list(runs), repeats):
        for name in order:
            call(name, timed=True)
    return times
