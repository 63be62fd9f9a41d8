"""PyTorch backend: runs a glia-edge checkpoint (.safetensors) as the reference for every export."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend


class TorchBackend(Backend):
    format = "torch"

    def __init__(self, path: str | Path, *, batch_size: int = 8, device: str = "cpu", threads: int | None = None,
                 precision: str | None = None, inference_precision: str | None = None, compile: bool = False,
                 backbone_weights: str | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("PyTorch checkpoints need torch: pip install 'glia-edge[train]' "
                                          "(or export the checkpoint to ONNX / OpenVINO)") from exc

        from glia_edge.checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        inference_precision = inference_precision or "fp32"
        if inference_precision not in ("fp32", "bf16"):
            raise ValueError(f"PyTorch inference_precision must be fp32 or bf16 (autocast), got {inference_precision!r}")
        model, meta = load_checkpoint(path, backbone_weights=backbone_weights)
        self.check_precision(meta, precision)
        super().__init__(path, meta, batch_size=batch_size)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.inference_precision = inference_precision
        self._module = torch.compile(self.model) if compile else self.model
        self._torch = torch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._module is None:
            raise RuntimeError(f"{self.path}: this PyTorch backend is closed")
        torch = self._torch
        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                     enabled=self.inference_precision == "bf16"):
            out = self._module(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = self._module = None  # type: ignore[assignment]
