"""Which operators dominate: per-operator-type time of one artifact, from each runtime's own profiler.

When a speed floor is missed, the question is what limits it. Each runtime reports its own
kernel times, aggregated here by operator type (share of the summed kernel time per batch):

- OpenVINO: ``PERF_COUNT`` and ``InferRequest.get_profiling_info()``; the kernel name (e.g.
  ``brgemm_avx512_I8``) shows whether a node really ran in INT8/BF16;
- ONNX Runtime: ``SessionOptions.enable_profiling`` and the ``*_kernel_time`` events of its trace;
- PyTorch: ``torch.profiler`` self CPU time per ``aten::`` operator.

The artifact is opened a second time with profiling on (profiling slows a run, so it never
shares a session with the timed one), at the same threads and inference precision as the row.
``python -m glia_edge.benchmarks.profile ARTIFACT [--inference-precision bf16] [--batch 8]`` prints the table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from glia_edge.formats import format_of

log = logging.getLogger(__name__)


@dataclass
class OpTime:
    op_type: str
    ms_per_batch: float
    share: float  # of the summed kernel time
    kernels: str = ""  # OpenVINO: the kernel implementations used


def _table(totals: dict[str, float], runs: int, kernels: dict[str, set[str]] | None = None,
           top: int = 8) -> list[OpTime]:
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [OpTime(op, t / runs, t / whole, ",".join(sorted((kernels or {}).get(op, ())))) for op, t in ranked]


def _openvino(path: Path, x: np.ndarray, runs: int, threads: int | None, inference_precision: str | None) -> list[OpTime]:
    from glia_edge.formats import openvino_meta_from_model, resolve_ir
    from glia_edge.ov_core import shared_core
    from glia_edge.runtimes.openvino import compile_config, read_for_cpu, with_batch

    core = shared_core()
    xml = resolve_ir(path)
    model = read_for_cpu(core, xml)  # the graph the backend compiles (ONNX converted, reductions rewritten)
    # The backend's own config (an FP32 IR pinned to f32, an INT8 IR's float parts in BF16 ...),
    # and its own static shape for this batch size.
    meta = openvino_meta_from_model(model, xml)
    if model.inputs[0].get_partial_shape()[0].is_dynamic:
        model = with_batch(model, len(x))
    config = {**compile_config(meta, core, inference_precision=inference_precision, threads=threads),
              "PERF_COUNT": True}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.infer({0: x})  # warm-up
    totals: dict[str, float] = defaultdict(float)
    kernels: dict[str, set[str]] = defaultdict(set)
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                totals[info.node_type] += info.real_time.total_seconds() * 1000.0
                kernels[info.node_type].add(info.exec_type)
    return _table(totals, runs, kernels)


def _onnxruntime(path: Path, x: np.ndarray, runs: int, threads: int | None) -> list[OpTime]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        if threads:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})  # warm-up, dropped below
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    kernel_events = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = len(kernel_events) // (runs + 1)
    totals: dict[str, float] = defaultdict(float)
    for event in kernel_events[per_run:]:  # skip the warm-up run's kernels
        totals[event["args"]["op_name"]] += event["dur"] / 1000.0
    return _table(totals, runs)


def _torch(path: Path, x: np.ndarray, runs: int, threads: int | None, inference_precision: str | None) -> list[OpTime]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from glia_edge.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(path)
    tensor = torch.from_numpy(x)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=inference_precision == "bf16"):
        model(tensor)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(tensor)
    totals = {e.key: e.self_cpu_time_total / 1000.0 for e in prof.key_averages() if e.self_cpu_time_total > 0}
    return _table(totals, runs)


def profile_artifact(path: str | Path, *, batch: int = 8, crops: int = 1, runs: int = 5, threads: int | None = None,
                     inference_precision: str | None = None) -> list[OpTime]:
    """The operator types that take the most kernel time in one batch of ``batch`` images.

    ``inference_precision`` is the row's (it sets OpenVINO's inference precision and PyTorch autocast).
    Raises ``ValueError`` for TensorRT engines, naming the trtexec command to run on the device
    (:func:`trtexec_hint`).
    """
    path = Path(path)
    fmt = format_of(path).name
    from glia_edge.runtimes import read_meta

    size = read_meta(path).preprocess_config.crop_size
    x = np.random.default_rng(0).random((batch * crops, 3, size, size), dtype=np.float32)
    if fmt == "openvino":
        return _openvino(path, x, runs, threads, inference_precision)
    if fmt == "onnx":
        return _onnxruntime(path, x, runs, threads)
    if fmt == "torch":
        return _torch(path, x, runs, threads, inference_precision)
    if fmt == "trt":
        raise ValueError(f"{path}: no operator profile for TensorRT here; on the device run {trtexec_hint(path, batch * crops)}")
    raise ValueError(f"{path}: no operator profile for {fmt}")


def trtexec_hint(engine: str | Path, batch: int = 8) -> str:
    """The trtexec command that profiles ``engine`` per layer at ``batch`` (a shape for a dynamic-batch engine).

    The input's name and size come from the engine's sidecar; ``--separateProfileRun`` keeps the
    per-layer profiling out of the timed runs.
    """
    from glia_edge.runtimes import read_meta

    engine = Path(engine)
    meta = read_meta(engine)
    size = meta.preprocess_config.crop_size
    settings = meta.export.get("engine") or {}
    dynamic = not settings or settings.get("min_batch") != settings.get("max_batch")
    shapes = f" --shapes={meta.input_name}:{batch}x3x{size}x{size}" if dynamic else ""
    return f"trtexec --loadEngine={engine}{shapes} --dumpProfile --separateProfileRun"


def format_profile(ops: Sequence[OpTime]) -> str:
    """``MatMul 41% (3.2 ms), Add 9% (0.7 ms), ...`` with OpenVINO's kernels in brackets."""
    return ", ".join(f"{o.op_type} {o.share:.0%} ({o.ms_per_batch:.1f} ms" + (f"; {o.kernels}" if o.kernels else "")
                     + ")" for o in ops)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glia_edge.benchmarks.profile",
                                     description="Per-operator-type kernel time of one artifact.")
    parser.add_argument("artifact")
    parser.add_argument("--inference-precision", default=None, help="fp32, bf16 or fp16 (OpenVINO hint; bf16: torch autocast)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crops", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    ops = profile_artifact(args.artifact, batch=args.batch, crops=args.crops, runs=args.runs, threads=args.threads,
                           inference_precision=args.inference_precision)
    for op in ops[:args.top]:
        print(f"{op.op_type:28s} {op.share:6.1%} {op.ms_per_batch:9.2f} ms  {op.kernels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
