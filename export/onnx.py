"""PyTorch -> ONNX: explicit exporter and opset, dynamic batch axis, folded and simplified graph.

PyTorch 2.9+ defaults ``torch.onnx.export`` to the dynamo exporter, so the choice is made here
explicitly: the legacy TorchScript exporter (``dynamo=False``) at opset 17 by default, or the
dynamo exporter at opset 18. Opset 17+ keeps LayerNorm as one ``LayerNormalization`` op, which
FP16 conversion keeps in FP32 and TensorRT parses as a fused layer.

The graph takes ``images``: float32 RGB crops in [0, 1], NCHW (ImageNet normalisation and the
score scale live inside the model), and returns ``scores`` (N,). After export the graph is
constant-folded and simplified with onnxslim and must pass ``onnx.checker`` with ``full_check``.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glia_edge.errors import ExportError

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
EXPORTERS = {"legacy": 17, "dynamo": 18}  # exporter -> default opset


@dataclass(frozen=True)
class OnnxOptions:
    """How the ONNX graph is made. ``opset=None`` takes the exporter's default (legacy 17, dynamo 18)."""

    exporter: str = "legacy"
    opset: int | None = None
    dynamic: bool = True
    batch: int = 1
    simplify: bool = True
    #: Output shape (batch, 1) instead of (batch,): DeepStream's nvinfer strips the batch axis and
    #: may refuse the 0-d layer that (batch,) leaves. glia-edge's runtimes read either shape.
    score_axis: bool = False

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {sorted(EXPORTERS)}, got {self.exporter!r}")
        if self.opset is not None and self.opset < 17:
            raise ValueError(f"opset {self.opset} is too old: 17+ keeps LayerNormalization as one op")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    @property
    def resolved_opset(self) -> int:
        return self.opset or EXPORTERS[self.exporter]


def _export_legacy(model: Any, dummy: Any, path: Path, opts: OnnxOptions) -> None:
    import torch

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if opts.dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic are expected
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opts.resolved_opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)


def _export_dynamo(model: Any, dummy: Any, path: Path, opts: OnnxOptions) -> None:
    import torch

    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if opts.dynamic else None
    program = torch.onnx.export(model, (dummy,), dynamo=True, opset_version=opts.resolved_opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                optimize=True, verbose=False)
    program.save(str(path))


def _with_score_axis(model: Any) -> Any:
    """``model`` with a trailing axis of 1 on its scores: (batch,) -> (batch, 1)."""
    from torch import nn

    class WithScoreAxis(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x).unsqueeze(-1)

    return WithScoreAxis(model).eval()


def torch_to_onnx(model: Any, onnx_path: str | Path, *, crop_size: int, options: OnnxOptions = OnnxOptions()) -> Path:
    """Export ``model`` (eval mode, float RGB [0, 1] NCHW in, scores out) to a checked ONNX file."""
    import onnx
    import torch

    onnx_path = Path(onnx_path)
    raw = onnx_path.with_name(onnx_path.stem + ".raw.onnx")
    # A dynamic axis traced at batch 1 can be specialised away; trace at 2 unless the batch is fixed.
    batch = options.batch if not options.dynamic else max(2, options.batch)
    dummy = torch.rand(batch, 3, crop_size, crop_size)
    model = model.eval()
    if options.score_axis:
        model = _with_score_axis(model)
    log.info("exporting ONNX (%s exporter, opset %d, %s batch)", options.exporter, options.resolved_opset,
             "dynamic" if options.dynamic else f"static {options.batch}")
    try:
        with torch.inference_mode(False), torch.no_grad():
            (_export_dynamo if options.exporter == "dynamo" else _export_legacy)(model, dummy, raw, options)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export ({options.exporter}, opset {options.resolved_opset}) failed: {exc}") from exc
    proto = onnx.load(str(raw))
    raw.unlink()
    if options.simplify:
        proto = simplify(proto)
    check(proto, onnx_path)
    onnx.save(proto, str(onnx_path))
    return onnx_path


def simplify(proto: Any) -> Any:
    """Constant folding, dead-code and duplicate removal, shape inference (onnxslim)."""
    import onnxslim

    before = len(proto.graph.node)
    slim = onnxslim.slim(proto)
    log.info("onnxslim: %d -> %d nodes", before, len(slim.graph.node))
    return slim


def check(proto: Any, where: str | Path = "model") -> None:
    """``onnx.checker`` full check (with shape inference); raises :class:`ExportError` naming the file."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{where}: exported ONNX fails onnx.checker: {exc}") from exc
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [INPUT_NAME] or names_out != [OUTPUT_NAME]:
        raise ExportError(f"{where}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got {names_in} / {names_out}")
