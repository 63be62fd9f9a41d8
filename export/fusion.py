"""Which transformer fusions ONNX Runtime finds in an exported graph, counted so a regression shows.

Two views, both recorded in the artifact's metadata (``export.fusions``):

- ``optimizer``: what ONNX Runtime's transformer optimizer (``onnxruntime.transformers``,
  ``model_type="vit"``) fuses: LayerNormalization, SkipLayerNormalization, Gelu / FastGelu /
  BiasGelu, Attention / MultiHeadAttention;
- ``runtime``: operator counts of the graph ONNX Runtime's CPU session actually runs after its own
  online optimizations (``ORT_ENABLE_ALL``), i.e. what ``glia_edge.load`` gets.

The exported ONNX itself stays standard (no ``com.microsoft`` ops) so OpenVINO and TensorRT read
it. Attention written as MatMul/Softmax (or the SDPA pattern PyTorch exports) and the GLIA
adapters' cross-attention may not match the optimizer's patterns; the counts say what happened.
"""
from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The fused operator kinds reported (ONNX Runtime's names).
FUSED_OPS = ("LayerNormalization", "SkipLayerNormalization", "Gelu", "FastGelu", "BiasGelu", "GemmFastGelu",
             "Attention", "MultiHeadAttention", "FusedMatMul", "FusedGemm", "FusedConv")


@dataclass(frozen=True)
class FusionReport:
    """Fused operator counts from the transformer optimizer and from ORT's own CPU graph."""

    optimizer: dict[str, int]
    runtime: dict[str, int]

    @property
    def layer_norms(self) -> int:
        return self.optimizer.get("LayerNormalization", 0) + self.optimizer.get("SkipLayerNormalization", 0)

    @property
    def gelus(self) -> int:
        return sum(self.optimizer.get(k, 0) for k in ("Gelu", "FastGelu", "BiasGelu", "GemmFastGelu"))

    @property
    def attentions(self) -> int:
        return self.optimizer.get("Attention", 0) + self.optimizer.get("MultiHeadAttention", 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return f"LayerNorm {self.layer_norms}, GELU {self.gelus}, attention {self.attentions}"


def optimizer_fusions(onnx_path: str | Path, *, num_heads: int = 0, hidden_size: int = 0) -> dict[str, int]:
    """Counts of ONNX Runtime's transformer-optimizer fusions (``model_type="vit"``), zeros dropped."""
    from onnxruntime.transformers import optimizer

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the optimizer logs every fusion at INFO under bare module names
    try:
        model = optimizer.optimize_model(str(onnx_path), model_type="vit", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=0, use_gpu=False)
        stats = model.get_fused_operator_statistics()
    finally:
        logging.disable(previous)
    return {k: int(v) for k, v in sorted(stats.items()) if v}


def runtime_fusions(onnx_path: str | Path) -> dict[str, int]:
    """Counts of the fused operators in the graph ONNX Runtime's CPU session runs (ORT_ENABLE_ALL)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ort_optimized.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        counts = Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    return {k: counts[k] for k in FUSED_OPS if counts.get(k)}


def fusion_report(onnx_path: str | Path, *, num_heads: int = 0, hidden_size: int = 0) -> FusionReport:
    """Both views for one ONNX file; ``num_heads``/``hidden_size`` are the ViT's (0 lets ORT guess)."""
    report = FusionReport(optimizer_fusions(onnx_path, num_heads=num_heads, hidden_size=hidden_size),
                          runtime_fusions(onnx_path))
    log.info("fusions: %s (ORT CPU graph: %s)", report.summary(), report.runtime)
    return report


def vit_dims(model: Any) -> tuple[int, int]:
    """(num_heads, hidden_size) of a GLIA model's ViT, for the optimizer's attention matcher."""
    vit = getattr(model, "vit", None)
    if vit is None or not len(getattr(vit, "blocks", ())):
        return 0, 0
    return int(vit.blocks[0].attn.num_heads), int(vit.embed_dim)
