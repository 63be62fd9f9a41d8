"""ONNX -> FP16 and ONNX -> INT8 (Q/DQ), for ONNX Runtime on x86 and for TensorRT.

- :func:`onnx_to_fp16`: FP16 weights and compute with float32 inputs/outputs; LayerNormalization,
  Softmax and reductions stay in FP32 (FP16 LayerNorm overflows in ViTs). ONNX Runtime's
  ``onnxruntime.transformers.float16`` converter inserts the casts; TensorRT builds this graph as
  a strongly typed network.
- :func:`onnx_to_int8`: ONNX Runtime static post-training quantization in QDQ format, per-channel
  weights, Q/DQ only on the inputs of MatMul / Gemm / Conv (quantizing LayerNorm wrecks a ViT),
  unsigned activations and signed weights (U8S8) by default, the fastest of the variants measured
  on x86 (docs/export.md).
- :func:`onnx_to_trt_qdq`: the explicit-quantization graph TensorRT accepts: signed INT8
  activations and weights, symmetric, zero point 0, per-channel weights, float biases; checked by
  :func:`check_trt_qdq` before it is written. ``float_graph="fp16"`` puts that Q/DQ on the FP16
  graph instead: what is not quantized (GELU, residual adds, the head) runs in FP16 as in
  :func:`onnx_to_fp16`, LayerNorm, Softmax and reductions stay FP32, and the Q/DQ pairs keep
  float32 scales (opset < 19 has no FP16 scales), with casts at their edges.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from glia_edge.errors import CalibrationError, ExportError
from glia_edge.export.calibration import CalibrationSet

log = logging.getLogger(__name__)

#: Ops kept in FP32 in FP16 graphs: normalisation, softmax and reductions overflow or lose precision.
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2",
            "ReduceLogSumExp", "ReduceSumSquare", "Pow", "Sqrt")
#: Ops whose inputs are quantized; everything else (LayerNorm, Softmax, GELU, adds) stays float.
QUANT_OPS = ("MatMul", "Gemm", "Conv")
#: Weight input index -> output-channel axis per op, as TensorRT wants per-channel scales.
_WEIGHT_AXIS = {"Conv": (1, 0), "MatMul": (1, -1)}


def onnx_to_fp16(onnx_path: str | Path, out_path: str | Path, *, keep_fp32: tuple[str, ...] = FP32_OPS) -> Path:
    """FP16 copy of an ONNX model with float32 I/O and ``keep_fp32`` op types left in FP32."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(onnx_path))
    # The converter logs whole ONNX protobufs (~75 lines) at INFO: keep them out of every export's log.
    converter_log = logging.getLogger("onnxruntime.transformers.float16")
    level = converter_log.level
    converter_log.setLevel(max(level, logging.WARNING))
    try:
        fp16 = convert_float_to_float16(model, keep_io_types=True,
                                        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32))
    finally:
        converter_log.setLevel(level)
    _toposort(fp16.graph)  # the converter appends the input casts at the end of the node list
    onnx.checker.check_model(fp16, full_check=True)
    onnx.save(fp16, str(out_path))
    log.info("FP16: %s (kept in FP32: %s)", out_path, ", ".join(keep_fp32))
    return Path(out_path)


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = [type(n)() for n in graph.node], []
    for copy, node in zip(pending, graph.node):
        copy.CopyFrom(node)
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError(f"graph has a cycle or dangling inputs at {pending[0].name!r}")
        for node in ready:
            available.update(node.output)
        done = {id(n) for n in ready}
        ordered += ready
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


@dataclass(frozen=True)
class QuantizeOptions:
    """ONNX Runtime static quantization settings (shaped after NNCF's ``IgnoredScope`` for exclusions).

    ``activations``/``weights``: ``"uint8"`` or ``"int8"``. ``exclude_nodes`` are node names kept
    in float. The defaults are the x86 recipe; :meth:`tensorrt` gives TensorRT's rules.
    """

    op_types: tuple[str, ...] = QUANT_OPS
    per_channel: bool = True
    activations: str = "uint8"
    weights: str = "int8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    calibrate_method: str = "minmax"
    quantize_bias: bool = True
    #: Also put Q/DQ on the quantized ops' outputs. Off: Q/DQ only on MatMul/Gemm/Conv inputs, which
    #: TensorRT wants and which lets ORT fuse DQ+MatMul into MatMulIntegerToFloat (with outputs
    #: quantized, Softmax would run in int8).
    quantize_outputs: bool = False
    #: Quantize only MatMuls with a constant weight (leave attention's activation x activation MatMuls float).
    matmul_const_b_only: bool = False
    exclude_nodes: tuple[str, ...] = ()
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("activations", "weights"):
            if getattr(self, name) not in ("uint8", "int8"):
                raise ValueError(f"{name} must be 'uint8' or 'int8', got {getattr(self, name)!r}")
        if self.calibrate_method not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"calibrate_method must be minmax, entropy or percentile, got {self.calibrate_method!r}")

    @classmethod
    def tensorrt(cls, **changes: Any) -> "QuantizeOptions":
        """Signed symmetric INT8 activations and weights, zero point 0, per-channel, float biases.

        Symmetric signed activations waste half the range on one-sided tensors (softmax, GELU), so
        ranges come from the 99.999th percentile rather than min/max.
        """
        base = cls(activations="int8", weights="int8", activation_symmetric=True, weight_symmetric=True,
                   per_channel=True, quantize_bias=False, calibrate_method="percentile")
        return replace(base, **changes)

    @property
    def scheme(self) -> str:
        return f"{'S' if self.activations == 'int8' else 'U'}8{'S' if self.weights == 'int8' else 'U'}8"


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def onnx_to_int8(onnx_path: str | Path, out_path: str | Path, calib: CalibrationSet, *,
                 options: QuantizeOptions = QuantizeOptions()) -> Path:
    """Static Q/DQ INT8 quantization calibrated on ``calib`` (ONNX Runtime quantizer)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quant_pre_process, quantize_static

    if calib is None or len(calib) == 0:
        raise CalibrationError("INT8 quantization needs calibration images (--calib DIR|CSV)")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calibrate_method]
    fixed = _static_batch(onnx_path)
    batch = fixed or options.batch_size
    extra = {"ActivationSymmetric": options.activation_symmetric, "WeightSymmetric": options.weight_symmetric,
             "QuantizeBias": options.quantize_bias, "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},
             "OpTypesToExcludeOutputQuantization": [] if options.quantize_outputs else list(options.op_types)}
    log.info("INT8 %s: %s, per-channel=%s, %d calibration crops", options.scheme, "/".join(options.op_types),
             options.per_channel, len(calib))
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # symbolic shape inference can fail on unusual graphs; ONNX's own is enough
            log.warning("quant_pre_process failed (%s); quantizing the graph as exported", exc)
            pre = Path(onnx_path)
        exclude = list(options.exclude_nodes) + (_activation_matmuls(pre) if options.matmul_const_b_only else [])
        chatter = io.StringIO()  # ORT's calibrators print() their progress; keep it for --verbose
        with contextlib.redirect_stdout(chatter):
            quantize_static(str(pre), str(out_path), calib.ort_reader("images", batch), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(options.op_types), per_channel=options.per_channel,
                            activation_type=_quant_type(options.activations),
                            weight_type=_quant_type(options.weights), nodes_to_exclude=exclude,
                            calibrate_method=method, extra_options=extra)
        log.debug("ONNX Runtime quantizer: %s", chatter.getvalue().strip())
    return Path(out_path)


def _activation_matmuls(onnx_path: str | Path) -> list[str]:
    """Names of MatMuls whose B input is not a constant (attention's QK^T and AV); the QDQ quantizer
    ignores ``MatMulConstBOnly``, so these are excluded by name."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    consts = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in consts]


def _static_batch(onnx_path: str | Path) -> int | None:
    import onnx

    dim = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def onnx_to_trt_qdq(onnx_path: str | Path, out_path: str | Path, calib: CalibrationSet, *,
                    options: QuantizeOptions | None = None, float_graph: str = "fp32") -> Path:
    """A Q/DQ ONNX TensorRT accepts; raises :class:`ExportError` listing any rule it breaks.

    ``float_graph``: ``"fp32"`` (float parts stay FP32) or ``"fp16"`` (float parts in FP16 with
    ``FP32_OPS`` kept FP32, calibrated on the FP32 graph).
    """
    if float_graph not in ("fp32", "fp16"):
        raise ValueError(f"float_graph must be 'fp32' or 'fp16', got {float_graph!r}")
    options = options or QuantizeOptions.tensorrt()
    onnx_to_int8(onnx_path, out_path, calib, options=options)
    if float_graph == "fp16":
        onnx_to_fp16(out_path, out_path, keep_fp32=FP32_OPS + ("QuantizeLinear", "DequantizeLinear"))
    problems = check_trt_qdq(out_path)
    if problems:
        Path(out_path).unlink(missing_ok=True)
        raise ExportError(f"{out_path}: Q/DQ graph breaks TensorRT's rules: " + "; ".join(problems[:5]))
    return Path(out_path)


def check_trt_qdq(model: Any) -> list[str]:
    """TensorRT's explicit-quantization rules on a Q/DQ graph; returns the violations (empty = OK).

    Every Q/DQ is INT8 with zero point 0 (signed, symmetric) and positive finite scales;
    activations are per-tensor; weights of Conv / MatMul / Gemm are per-channel on the output
    channel axis; no INT32 (bias) dequantization; opset >= 13; at least one Q/DQ pair.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    inits.update(consts)
    problems: list[str] = []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        problems.append(f"opset {opset} < 13 (per-channel Q/DQ needs 13+)")
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantized graph")
    weight_dq = _weight_dequantizers(graph, inits)
    for node in qdq:
        problems += _check_qdq_node(node, inits, weight_dq.get(node.output[0]), np)
    return problems


def _weight_dequantizers(graph: Any, inits: dict[str, Any]) -> dict[str, int]:
    """DequantizeLinear output name -> expected per-channel axis, for DQs feeding a weight input."""
    producers = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    # In an FP16 graph a weight's DQ (float32 scales) reaches its op through a Cast to FP16.
    casts = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and n.input[0] in producers}
    producers.update({out: producers[src] for out, src in casts.items()})
    expected: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            slot, axis = 1, (0 if trans_b else 1)
        elif node.op_type in _WEIGHT_AXIS:
            slot, axis = _WEIGHT_AXIS[node.op_type]
        else:
            continue
        if len(node.input) <= slot or node.input[slot] not in producers:
            continue
        dq = producers[node.input[slot]]
        if dq.input[0] in inits:  # a constant weight, not an activation-by-activation MatMul
            expected[dq.output[0]] = axis if axis >= 0 else inits[dq.input[0]].ndim + axis
    return expected


def _check_qdq_node(node: Any, inits: dict[str, Any], weight_axis: int | None, np: Any) -> list[str]:
    name = node.name or node.output[0]
    out: list[str] = []
    if len(node.input) < 3 or node.input[2] not in inits:
        return [f"{node.op_type} {name}: no constant zero point (defaults to uint8)"]
    zp, scale = inits[node.input[2]], inits.get(node.input[1])
    if zp.dtype != np.int8:
        out.append(f"{node.op_type} {name}: zero point is {zp.dtype}, TensorRT needs int8")
    elif np.any(zp != 0):
        out.append(f"{node.op_type} {name}: zero point is not 0 (asymmetric)")
    if scale is None:
        return out + [f"{node.op_type} {name}: scale is not a constant"]
    if scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        out.append(f"{node.op_type} {name}: scales must be positive finite float32")
    if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int32:
        out.append(f"DequantizeLinear {name}: INT32 (bias) dequantization is not supported by TensorRT")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if weight_axis is not None:
        weight = inits[node.input[0]]
        channels = weight.shape[weight_axis]
        if scale.size != channels or (scale.ndim == 1 and scale.size > 1 and axis % weight.ndim != weight_axis):
            out.append(f"DequantizeLinear {name}: weight scales are not per-channel on axis {weight_axis} "
                       f"({scale.size} scales, axis {axis}, weight shape {list(weight.shape)})")
    elif scale.size != 1:
        out.append(f"{node.op_type} {name}: activation scales must be per-tensor, got {scale.size}")
    return out
