"""OpenVINO backend: IR (.xml + .bin) in FP32, FP16, BF16 or INT8 (NNCF).

On CPUs with bf16 support OpenVINO silently runs FP32 models in BF16, so the inference precision
is always set: by default from the artifact (FP32, FP16 and INT8 IRs run their float parts in
``f32``, a BF16 IR in ``bf16``), or by the ``inference_precision`` hint (``fp32``, ``bf16``,
``fp16``, or ``device`` for OpenVINO's own choice). ``precision`` only checks the artifact's.
``mode="throughput"`` compiles with the THROUGHPUT hint and splits each batch across the
device's optimal number of infer requests, run asynchronously (``start_async`` / ``wait``). No
Python callback runs on OpenVINO's threads: with ``AsyncInferQueue`` callbacks, closing the
backend could hang (docs/export.md, "At run time").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend
from glia_edge.formats import openvino_meta_from_model, resolve_ir

#: Inference precision hint -> OpenVINO INFERENCE_PRECISION_HINT ("device": OpenVINO decides).
INFERENCE_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "device": None}
#: The hint used when none is given, from the artifact's precision. An INT8 IR runs its float parts
#: in BF16 on CPUs with BF16 units (its export gate measured it so; elsewhere f32), unless its
#: metadata names another (``--precision auto`` records the one it measured best within the bound).
_DEFAULT_HINT = {"fp32": "fp32", "fp16": "fp32", "int8": "bf16-if-supported", "bf16": "bf16"}


def _default_hint(meta: Any, core: Any, device: str) -> str:
    recorded = (meta.export or {}).get("inference_precision")
    if recorded:
        return str(recorded)
    hint = _DEFAULT_HINT[meta.precision]
    if hint == "bf16-if-supported":
        try:
            caps = core.get_property(device.upper(), "OPTIMIZATION_CAPABILITIES")
        except RuntimeError:
            caps = ()
        hint = "bf16" if "BF16" in caps else "fp32"
    return hint


class OpenVinoBackend(Backend):
    format = "openvino"

    def __init__(self, path: str | Path, *, batch_size: int = 8, threads: int | None = None, device: str = "CPU",
                 precision: str | None = None, inference_precision: str | None = None,
                 mode: str = "latency") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError("openvino is not installed: pip install 'glia-edge[openvino]'") from exc
        xml = resolve_ir(path)
        core = ov.Core()
        model = core.read_model(str(xml))
        meta = openvino_meta_from_model(model, xml)
        self.check_precision(meta, precision)
        hint = inference_precision or _default_hint(meta, core, device)
        if hint not in INFERENCE_HINTS:
            raise ValueError(f"OpenVINO inference_precision must be one of {', '.join(INFERENCE_HINTS)}, got {hint!r}")
        if mode not in ("latency", "throughput"):
            raise ValueError(f"OpenVINO mode must be 'latency' or 'throughput', got {mode!r}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        if INFERENCE_HINTS[hint]:
            config["INFERENCE_PRECISION_HINT"] = INFERENCE_HINTS[hint]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        device = device.upper()
        self.compiled = core.compile_model(model, device, config)
        # The Core must outlive the compiled model: destroying it first can hang the compiled
        # model's destructor (seen with the THROUGHPUT hint).
        self._core = core
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        #: What the device really runs: "f32", "bf16", "f16" (an ov.Type's short name).
        self.inference_precision = runs.get_type_name() if hasattr(runs, "get_type_name") else str(runs)
        shape = model.inputs[0].get_partial_shape()
        fixed = shape[0].get_length() if shape[0].is_static else None
        super().__init__(xml, meta, batch_size=batch_size, fixed_batch=fixed)
        self.mode, self.device = mode, device
        self._request = self.compiled.create_infer_request()
        self._requests: list[Any] = []
        if mode == "throughput":
            count = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._requests = [self.compiled.create_infer_request() for _ in range(max(1, count))]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        # A fixed-batch model takes only whole batches, so it cannot be split across requests.
        if len(self._requests) < 2 or len(batch) <= 1 or self.fixed_batch:
            return self._request.infer({0: batch})[0].copy()
        # Split the batch across the requests; they run in parallel on the device's streams.
        parts = np.array_split(batch, min(len(self._requests), len(batch)))
        busy = list(zip(self._requests, parts))
        for request, part in busy:
            request.start_async({0: np.ascontiguousarray(part)})
        outputs = []
        for request, _ in busy:
            request.wait()
            outputs.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(outputs)

    def close(self) -> None:
        self._requests = []
        self._request = None
        self.compiled = None
        self._core = None
