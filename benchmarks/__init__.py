"""Benchmarks of every backend against the PyTorch FP32 reference (``glia-edge bench``).

- :mod:`.configs`: the configuration matrix (which rows, in which order);
- :mod:`.artifacts`: the artifacts the rows need (exported once, reused while their source matches);
- :mod:`.timing`: warm-up, alternating round-robin runs, latency percentiles, throughput;
- :mod:`.accuracy`: Spearman with the PyTorch scores, SRCC/PLCC on labels, the built-in held-out set;
- :mod:`.memory`: peak RSS of a fresh process per backend (``python -m glia_edge.benchmarks.memory``);
- :mod:`.profile`: which operator types dominate a row (each runtime's own profiler);
- :mod:`.machine`: the machine line (CPU flags, library versions, GPU, Jetson power mode and clocks);
- :mod:`.tegrastats`: Jetson power from ``tegrastats`` (images per joule);
- :mod:`.report`: Markdown, CSV, JSON and the throughput-vs-accuracy plot;
- :mod:`.runner`: the whole run;
- :mod:`.checks`: the ``--min-speedup`` / ``--max-drop`` regression check.

Names are re-exported lazily, so the memory probe's child process imports only its backend.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchOptions": "runner", "run_benchmark": "runner", "check_regressions": "checks",
    "BenchReport": "report", "BenchRow": "report", "write_all": "report",
    "BenchConfig": "configs", "build_matrix": "configs",
    "measure_round_robin": "timing", "latency_stats": "timing", "throughput": "timing",
    "measure_peak_rss": "memory", "machine_info": "machine", "machine_line": "machine",
    "TegrastatsSampler": "tegrastats", "parse_line": "tegrastats", "profile_artifact": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
