"""The configuration matrix of a benchmark: which rows it runs, in which order.

Rows, in report order: PyTorch FP32 eager (the baseline every speed-up is measured against, always
present), torch.compile FP32, PyTorch BF16 autocast (a reference row), then each target in the order
of the format table (:data:`glia_edge.formats.FORMATS`), its rows in the order of the row's
``precisions``: today ONNX Runtime FP32/FP16/INT8, OpenVINO FP32 (inference precision pinned to f32,
else a CPU with BF16 units runs BF16)/BF16/FP16/INT8, TensorRT FP32/FP16/INT8. A precision a format
does not have is left out (a target left with no row at all is refused); rows of a ``needs_gpu``
format on a machine without a GPU and TensorRT are kept with status "skipped: no GPU/TensorRT".

OpenVINO BF16 is the FP32 IR run with ``INFERENCE_PRECISION_HINT=bf16``, so it shares that IR.
OpenVINO rows run with the LATENCY hint (one infer request per batch); ``openvino_modes`` adds
rows with the THROUGHPUT hint (variant ``throughput``: each batch split over the device's streams,
as ``glia-edge watch`` runs batches), which on small CPUs can be the faster configuration. They
compile each batch size with its shape fixed, as the backend does by default; ``openvino_shapes``
adds rows with one dynamic-shape compilation (variant ``dynamic``), to measure what that gains.
The artifacts the rows need are made by :mod:`glia_edge.benchmarks.artifacts`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from glia_edge.errors import BackendUnavailableError
from glia_edge.formats import FORMATS, PRECISIONS  # PRECISIONS: the rows a bench can run (re-exported)

log = logging.getLogger(__name__)

#: Benchmark targets are the artifact formats, in the table's order: PyTorch (the baseline) and
#: every format ``export`` can write (a row without a writer has no artifact to measure).
TARGETS = tuple(name for name, fmt in FORMATS.items() if name == "torch" or fmt.writer)
SKIP_NO_GPU = "skipped: no GPU/TensorRT"
#: OpenVINO performance hints a benchmark can compare -> the rows' variant ("" keeps the plain key).
OPENVINO_MODES = {"latency": "", "throughput": "throughput"}
#: OpenVINO shape policies (the backend's ``shapes``) a benchmark can compare -> their variant part.
OPENVINO_SHAPES = {"static": "", "dynamic": "dynamic"}
#: How a row's label names each part of an OpenVINO variant.
OPENVINO_NOTES = {"throughput": "throughput hint", "dynamic": "dynamic shapes"}


@dataclass(frozen=True)
class BenchConfig:
    """One row of the matrix: a target, a precision, and for PyTorch how it runs."""

    target: str
    precision: str
    variant: str = ""  # torch: "eager", "compile" or "autocast"; openvino: "", "throughput", "dynamic", "throughput-dynamic"
    skip: str | None = None  # set: the row is reported with this status and not run

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.target, self.precision, self.variant) if p)

    @property
    def key(self) -> str:
        """``target:precision[:variant]``, as ``--min-speedup`` names rows."""
        return ":".join(p for p in (self.target, self.precision, self.variant) if p)

    @property
    def artifact_precision(self) -> str:
        """The precision of the artifact this row loads (OpenVINO BF16 runs the FP32 IR)."""
        return "fp32" if self.target == "openvino" and self.precision == "bf16" else self.precision

    @property
    def is_baseline(self) -> bool:
        return self.target == "torch" and self.precision == "fp32" and self.variant == "eager"

    def label(self, device: str = "cpu") -> str:
        text = FORMATS[self.target].label
        if self.target == "torch":
            text += f" {self.variant}" + (f" ({device})" if device != "cpu" else "")
        elif self.target == "openvino":
            notes = (["f32 pinned"] if self.precision == "fp32" else []) + [
                OPENVINO_NOTES[part] for part in self.variant.split("-") if part]
            text += f" ({', '.join(notes)})" if notes else ""
        return text

    def load_options(self, device: str = "cpu") -> dict[str, Any]:
        """Backend options beyond threads and batch size."""
        if self.target == "torch":
            return {"inference_precision": "bf16" if self.variant == "autocast" else "fp32",
                    "compile": self.variant == "compile", "device": device}
        options: dict[str, Any] = {}
        if self.target == "openvino" and self.precision == "bf16":
            options["inference_precision"] = "bf16"  # the FP32 IR run in BF16; other rows: the artifact's own
        if self.target == "openvino":
            parts = self.variant.split("-")
            if "throughput" in parts:
                options["mode"] = "throughput"
            if "dynamic" in parts:
                options["shapes"] = "dynamic"
        return options


def _torch_rows(precisions: Sequence[str], compile: bool) -> list[BenchConfig]:
    rows = [BenchConfig("torch", "fp32", "eager")]
    if "fp32" in precisions and compile:
        rows.append(BenchConfig("torch", "fp32", "compile"))
    if "bf16" in precisions:
        rows.append(BenchConfig("torch", "bf16", "autocast"))
    return rows


def build_matrix(targets: Sequence[str], precisions: Sequence[str], *, gpu_tensorrt: bool,
                 compile: bool = True, openvino_modes: Sequence[str] = ("latency",),
                 openvino_shapes: Sequence[str] = ("static",)) -> list[BenchConfig]:
    """Every configuration asked for, in report order; the PyTorch FP32 eager baseline always.

    Driven by the format table: targets in its order, each one's rows in its ``precisions`` order,
    skipped (not run) where the format ``needs_gpu`` and ``gpu_tensorrt`` is False. OpenVINO rows
    come once per mode in ``openvino_modes`` (``latency``, ``throughput``) and shape policy in
    ``openvino_shapes`` (``static``, ``dynamic``). ``ValueError`` for an unknown name, and for a
    target none of whose precisions was asked for (it would silently measure nothing)."""
    unknown = [t for t in targets if t not in TARGETS] + [p for p in precisions if p not in PRECISIONS]
    unknown += [m for m in openvino_modes if m not in OPENVINO_MODES]
    unknown += [m for m in openvino_shapes if m not in OPENVINO_SHAPES]
    if unknown or not openvino_modes or not openvino_shapes:
        raise ValueError(f"unknown target/precision/mode/shapes {unknown or [*openvino_modes, *openvino_shapes]}; "
                         f"targets: {', '.join(TARGETS)}, precisions: {', '.join(PRECISIONS)}, "
                         f"OpenVINO modes: {', '.join(OPENVINO_MODES)}, shapes: {', '.join(OPENVINO_SHAPES)}")
    rows = _torch_rows(precisions, compile and "torch" in targets) if "torch" in targets \
        else [BenchConfig("torch", "fp32", "eager")]
    empty = []
    for target in TARGETS:  # the table's order; each target's rows in its precisions' order
        fmt = FORMATS[target]
        if target == "torch" or target not in targets:
            continue
        chosen = [p for p in fmt.precisions if p in precisions]
        if not chosen:
            empty.append(f"{target} ({', '.join(fmt.precisions)})")
        skip = SKIP_NO_GPU if fmt.needs_gpu and not gpu_tensorrt else None
        variants = ["-".join(p for p in (OPENVINO_MODES[m], OPENVINO_SHAPES[s]) if p)
                    for m in OPENVINO_MODES if m in openvino_modes
                    for s in OPENVINO_SHAPES if s in openvino_shapes] if target == "openvino" else [""]
        rows += [BenchConfig(target, precision, variant, skip=skip) for precision in chosen for variant in variants]
    if empty:
        message = f"no rows for target(s) {'; '.join(empty)} at precisions {', '.join(precisions)}"
        if not any(r.target != "torch" for r in rows):  # only the baseline would run: not what was asked
            raise ValueError(f"{message}: add one of their precisions or leave the target out")
        log.warning("%s: left out", message)  # e.g. the default targets with --precisions bf16
    return rows


def gpu_tensorrt_available() -> bool:
    """True when TensorRT engines can be built and run here (the TensorRT runtime's one probe)."""
    from glia_edge.runtimes.tensorrt import unavailable_reason

    return unavailable_reason() is None


def torch_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``cuda[:N]`` must name a GPU PyTorch sees.

    Checked before the run: a benchmark whose baseline cannot run measures no speed-up at all.
    """
    try:
        import torch
    except ImportError:
        return "cpu"
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise BackendUnavailableError(f"--device {requested}: PyTorch sees {count} CUDA GPU(s) here")
    return requested
