"""ONNX Runtime backend: FP32, FP16 and INT8 (QDQ) ONNX models exported by glia-edge."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend
from glia_edge.formats import onnx_meta_from_props


class OnnxRuntimeBackend(Backend):
    format = "onnx"

    def __init__(self, path: str | Path, *, batch_size: int = 8, threads: int | None = None,
                 providers: Sequence[str] | None = None, device: str = "cpu", precision: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("onnxruntime is not installed: pip install 'glia-edge[onnxruntime]'") from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if providers is None:
            kind = device.lower().split(":")[0]
            if kind not in ("cpu", "cuda"):  # anything else would silently run on the CPU
                raise BackendUnavailableError(f"ONNX Runtime backend: unknown device {device!r} (use cpu or cuda[:N])")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if kind == "cuda" else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(f"ONNX Runtime providers not available here: {missing} "
                                          f"(available: {ort.get_available_providers()})")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        meta = onnx_meta_from_props(dict(self.session.get_modelmeta().custom_metadata_map), Path(path))
        self.check_precision(meta, precision)
        inp = self.session.get_inputs()[0]
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
        super().__init__(path, meta, batch_size=batch_size, fixed_batch=fixed)
        self.check_input_shape(inp.shape)
        self.input_name = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.providers = self.session.get_providers()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError(f"{self.path}: this ONNX Runtime backend is closed")
        return self.session.run(None, {self.input_name: batch.astype(self._input_dtype, copy=False)})[0]

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
