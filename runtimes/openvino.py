"""OpenVINO backend: IR (.xml + .bin) in FP32, FP16, BF16 or INT8 (NNCF).

On CPUs with bf16 support OpenVINO silently runs FP32 models in BF16; ``precision`` pins the
inference precision so an "fp32" run really is FP32 (``f32``), and ``bf16`` asks for BF16.
``mode="throughput"`` compiles with the THROUGHPUT hint and splits each batch across the
device's optimal number of infer requests, run asynchronously (``start_async`` / ``wait``). An
``AsyncInferQueue`` with a Python callback was tried first: closing the backend then hung now and
then (2 runs in 8, OpenVINO 2026.4, CPU), so no Python callback runs on OpenVINO's threads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend
from glia_edge.runtimes.metadata import openvino_meta_from_model, resolve_ir

#: glia-edge precision -> OpenVINO INFERENCE_PRECISION_HINT. INT8 IR runs its float parts in f32.
_INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16", "default": None}


class OpenVinoBackend(Backend):
    format = "openvino"

    def __init__(self, path: str | Path, *, batch_size: int = 8, threads: int | None = None, device: str = "CPU",
                 precision: str | None = None, mode: str = "latency", **_: Any) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError("openvino is not installed: pip install 'glia-edge[openvino]'") from exc
        xml = resolve_ir(path)
        core = ov.Core()
        model = core.read_model(str(xml))
        meta = openvino_meta_from_model(model, xml)
        precision = precision or meta.precision
        if precision not in _INFERENCE_PRECISION:
            raise ValueError(f"OpenVINO precision must be one of {sorted(_INFERENCE_PRECISION)}, got {precision!r}")
        if mode not in ("latency", "throughput"):
            raise ValueError(f"OpenVINO mode must be 'latency' or 'throughput', got {mode!r}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        if _INFERENCE_PRECISION[precision]:
            config["INFERENCE_PRECISION_HINT"] = _INFERENCE_PRECISION[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        device = device.upper()
        self.compiled = core.compile_model(model, device, config)
        # The Core must outlive the compiled model: destroying it first made the compiled model's
        # destructor hang now and then (OpenVINO 2026.4, CPU, THROUGHPUT hint).
        self._core = core
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        #: What the device really runs: "f32", "bf16", "f16" (an ov.Type's short name).
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        shape = model.inputs[0].get_partial_shape()
        fixed = shape[0].get_length() if shape[0].is_static else None
        super().__init__(xml, meta, batch_size=batch_size, fixed_batch=fixed)
        self.precision, self.mode, self.device = precision, mode, device
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
