"""ONNX -> OpenVINO IR (.xml + .bin) in FP32, FP16 weights, BF16 or INT8 (NNCF), with metadata.

The IR is converted from the same ONNX graph the other targets use (``openvino.convert_model``)
and written with ``openvino.save_model``; the artifact's :class:`ArtifactMeta` JSON is stored in
``rt_info`` under ``glia_edge`` (read back by ``glia_edge.formats.read_meta``).

- ``fp32``: FP32 weights (the runtime pins ``INFERENCE_PRECISION_HINT=f32``);
- ``fp16``: FP16-compressed weights, decompressed at load;
- ``bf16``: FP16-compressed weights, the runtime asks the CPU for BF16 execution;
- ``int8``: NNCF post-training quantization with ``ModelType.TRANSFORMER``. NNCF's default
  SmoothQuant alpha is tuned for LLMs; for ViTs its own tests use about 0.15 (and switch it off
  for DeiT-S), so the default here is 0.15, ``smooth_quant_alpha=None`` turns it off, and
  ``keep_head_float`` leaves the small score head unquantized (it tracked FP32 best on GLIA; the
  measurements are in docs/export.md) and ``keep_local_stem_float`` the local stream's first
  convolution, which reads pixel-level detail (the blur and JPEG cues: quantizing it moved the
  default model's Spearman against FP32 from 0.995 to 0.979).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from glia_edge.errors import CalibrationError, ExportError
from glia_edge.export.calibration import CalibrationSet
from glia_edge.formats import check_precision, set_openvino_meta
from glia_edge.meta import ArtifactMeta
from glia_edge.runtimes.openvino import keep_reduce_dims

log = logging.getLogger(__name__)

#: Node-name patterns of GLIA's MLP head (after ONNX export: ``/head/head.1/Gemm`` ...).
HEAD_PATTERNS = (r".*/head/.*", r"^head\..*")
#: The local stream's first convolution (conv stream: ``/local/stem/stem.0/...``; ResNet stream: ``conv1``).
LOCAL_STEM_PATTERNS = (r".*/local/stem/stem\.0/.*", r".*/local/cnn/conv1/.*")


#: OpenVINO's fused attention op (``convert_model`` makes it from MatMul -> Softmax -> MatMul).
ATTENTION_TYPES = ("ScaledDotProductAttention",)


@dataclass(frozen=True)
class OpenVinoOptions:
    """NNCF INT8 settings; ``smooth_quant_alpha=None`` disables SmoothQuant.

    ``keep_attention_float``: no quantizers on the inputs of the fused attention ops. NNCF's
    transformer preset quantizes Q and K; the CPU plugin then cannot run the attention as its one
    fused kernel and spends the time in Reorders and FakeQuantizes instead (``glia_vit_small``,
    batch 8, on an AMX CPU: INT8 ran at 0.78-0.87x of BF16's speed with them, 1.02-1.15x without;
    benchmarks/RESULTS.md section 3). The matrix products that carry the weights stay INT8.
    """

    smooth_quant_alpha: float | None = 0.15
    keep_head_float: bool = True
    keep_local_stem_float: bool = True
    keep_attention_float: bool = True
    subset_size: int = 300
    fast_bias_correction: bool = True
    ignored_patterns: tuple[str, ...] = ()


def onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path, *, precision: str = "fp32",
                     meta: ArtifactMeta | None = None, calib: CalibrationSet | None = None,
                     options: OpenVinoOptions = OpenVinoOptions()) -> Path:
    """Convert an FP32 ONNX model into an IR at ``xml_path`` (its ``.bin`` beside it)."""
    import openvino as ov

    check_precision("openvino", precision)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportError(f"openvino.convert_model({onnx_path}) failed: {exc}") from exc
    if precision == "int8":
        model = quantize_nncf(model, calib, options)
    keep_reduce_dims(model)  # the IR itself avoids the CPU plugin's miscompiled Reduce fusion
    if meta is not None:
        set_openvino_meta(model, meta)
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=precision in ("fp16", "bf16"))
    log.info("OpenVINO IR (%s): %s", precision, xml_path)
    return xml_path


def _names_matching(model: Any, patterns: tuple[str, ...]) -> list[str]:
    import re

    return [op.get_friendly_name() for op in model.get_ops()
            if any(re.match(p, op.get_friendly_name()) for p in patterns)]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """``sys.stdout`` and the NNCF logger's handlers (bound to stdout when nncf was imported) write to stderr."""
    moved = [h for h in logging.getLogger("nncf").handlers
             if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)]
    previous = [h.stream for h in moved]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in zip(moved, previous):
            handler.setStream(stream)


#: Read once, when ``nncf.telemetry.wrapper`` is imported (nncf 3.x): set, NNCF's telemetry is a
#: stub that sends nothing, so no sender child process (openvino_telemetry forks one per event)
#: is running to print tracebacks when Ctrl-C stops an INT8 export.
NNCF_TELEMETRY_OFF_ENV = "NNCF_CI"


def no_nncf_telemetry() -> None:
    """Opt this process out of NNCF's usage telemetry, before nncf is first imported."""
    if "nncf" not in sys.modules:  # afterwards it has been decided; an importer's choice stands
        os.environ.setdefault(NNCF_TELEMETRY_OFF_ENV, "1")


def quantize_nncf(model: Any, calib: CalibrationSet | None, options: OpenVinoOptions) -> Any:
    """NNCF PTQ of an ``ov.Model`` for a transformer, SmoothQuant alpha and ignored scope from ``options``."""
    no_nncf_telemetry()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    if calib is None or len(calib) == 0:
        raise CalibrationError("OpenVINO INT8 needs calibration images (--calib DIR|CSV)")
    alpha = -1.0 if options.smooth_quant_alpha is None else float(options.smooth_quant_alpha)
    advanced = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha))
    patterns = (tuple(options.ignored_patterns) + (HEAD_PATTERNS if options.keep_head_float else ())
                + (LOCAL_STEM_PATTERNS if options.keep_local_stem_float else ()))
    names = _names_matching(model, patterns) if patterns else []
    types = [t for t in ATTENTION_TYPES if options.keep_attention_float]
    ignored = nncf.IgnoredScope(names=names, types=types, validate=False) if names or types else None
    log.info("NNCF INT8: %d crops, SmoothQuant %s, %d ops kept float%s", len(calib),
             "off" if alpha < 0 else f"alpha={alpha}", len(names), ", attention float" if types else "")
    batch_dim = model.inputs[0].get_partial_shape()[0]
    batch = batch_dim.get_length() if batch_dim.is_static else 1  # a static-batch model takes full batches
    try:
        with _stdout_to_stderr():  # NNCF's progress bars and INFO lines: logs, not results
            return nncf.quantize(model, calib.nncf_dataset(batch), model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=max(1, min(options.subset_size, len(calib)) // batch),
                                 ignored_scope=ignored, fast_bias_correction=options.fast_bias_correction,
                                 advanced_parameters=advanced)
    except Exception as exc:
        raise ExportError(f"NNCF quantization failed: {exc}") from exc
