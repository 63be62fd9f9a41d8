"""Peak resident memory of a process that only loads and runs one backend.

The benchmark itself holds every backend at once (to alternate between them), so its own RSS
says nothing about any one of them. Instead a fresh child process is started for each
configuration::

    python -m glia_edge.benchmarks.memory ARTIFACT --inference-precision bf16 --batch 8 --crops 1 [--image PATH ...]

It imports only what that backend needs (``glia_edge.runtimes`` imports no torch unless the
artifact is a PyTorch checkpoint), loads the artifact, scores a few batches (real images when
given, else random crops of the right shape) and prints one JSON line with its own peak
resident memory: the kernel's high-water mark of the process's resident set, exact, with nothing
missed between polls. The parent reads that line.

On Linux the high-water mark is read from ``VmHWM`` in ``/proc/self/status``, which belongs to the
process's own address space. ``ru_maxrss`` is not used there: exec() folds the parent's
high-water mark into it (Python's subprocess uses vfork), so every child would report at least
the benchmark's own peak.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

_MARK = "GLIA_MEMORY_RESULT "


def _max_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


@dataclass
class MemoryResult:
    peak_rss_mb: float
    baseline_rss_mb: float
    load_s: float
    batches: int


def run_child(artifact: str, *, inference_precision: str | None, compile: bool, batch: int, crops: int, threads: int | None,
              iterations: int, images: Sequence[str], device: str | None,
              backend_options: Mapping[str, str] | None = None) -> MemoryResult:
    """What the child process does: load one backend, run it, measure its own peak RSS."""
    import numpy as np

    from glia_edge.runtimes import load

    baseline = _max_rss_mb()
    options: dict[str, Any] = {"batch_size": batch * crops, "threads": threads}
    if device:
        options["device"] = device
    if inference_precision:
        options["inference_precision"] = inference_precision
    if compile:
        options["compile"] = True
    options.update(backend_options or {})
    start = time.perf_counter()
    backend = load(artifact, **options)
    load_s = time.perf_counter() - start
    size = backend.preprocess_config.crop_size
    rng = np.random.default_rng(0)
    for i in range(iterations):
        if images:
            chunk = [images[(i * batch + j) % len(images)] for j in range(batch)]
            for result in backend.iter_scores(chunk, crops=crops):
                if not result.ok:
                    raise RuntimeError(f"{result.source}: {result.error}")
        else:
            backend.predict_batch(rng.random((batch * crops, 3, size, size), dtype=np.float32))
    backend.close()
    return MemoryResult(peak_rss_mb=_max_rss_mb(), baseline_rss_mb=baseline, load_s=load_s, batches=iterations)


def child_command(artifact: str | Path, *, inference_precision: str | None = None, compile: bool = False, batch: int = 8,
                  crops: int = 1, threads: int | None = None, iterations: int = 3,
                  images: Sequence[str | Path] = (), device: str | None = None,
                  backend_options: Mapping[str, str] | None = None) -> list[str]:
    """The command line of the child process for one configuration (``backend_options``: string
    options of the backend beyond those above, e.g. OpenVINO's ``mode`` and ``shapes``)."""
    cmd = [sys.executable, "-m", "glia_edge.benchmarks.memory", str(artifact), "--batch", str(batch),
           "--crops", str(crops), "--iterations", str(iterations)]
    if device:
        cmd += ["--device", device]
    if inference_precision:
        cmd += ["--inference-precision", inference_precision]
    if compile:
        cmd.append("--compile")
    if threads:
        cmd += ["--threads", str(threads)]
    for key, value in (backend_options or {}).items():
        cmd += ["--option", f"{key}={value}"]
    for image in images:
        cmd += ["--image", str(image)]
    return cmd


def measure_peak_rss(artifact: str | Path, *, timeout: float = 600.0, **options: Any) -> MemoryResult:
    """Peak resident memory (MB) of a fresh process that loads ``artifact`` and scores with it.

    Options are those of :func:`child_command`. Raises ``RuntimeError`` with the child's last
    error line when it fails.
    """
    cmd = child_command(artifact, **options)
    log.debug("memory probe: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK):])
            return MemoryResult(**data)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    raise RuntimeError(f"memory probe failed: {reason}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m glia_edge.benchmarks.memory",
                                     description="Load one artifact, score with it, print its peak RSS as JSON.")
    parser.add_argument("artifact")
    parser.add_argument("--inference-precision", default=None, help="fp32 or bf16 (OpenVINO hint, torch autocast)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (PyTorch checkpoints only)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--crops", type=int, default=1, help="crops per image")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default=None, help="backend device (default: the backend's own)")
    parser.add_argument("--image", action="append", default=[], help="score these images (repeatable)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a string option of the backend, e.g. mode=throughput (repeatable)")
    args = parser.parse_args(argv)
    # Not glia_edge.cli's parse_key_values: importing typer would add to the peak this process measures.
    bad = [item for item in args.option if "=" not in item]
    if bad:
        parser.error(f"--option takes KEY=VALUE, got {bad[0]!r}")
    args.option = dict(item.split("=", 1) for item in args.option)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    result = run_child(args.artifact, inference_precision=args.inference_precision, compile=args.compile, batch=args.batch,
                       crops=args.crops, threads=args.threads, iterations=args.iterations, images=args.image,
                       device=args.device, backend_options=args.option)
    sys.stdout.write(_MARK + json.dumps(result.__dict__) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
