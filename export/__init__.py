"""Export GLIA checkpoints to ONNX Runtime, OpenVINO and TensorRT artifacts (``glia_edge.export``).

The stable entry point, used by ``glia-edge export`` and by the benchmarks::

    from glia_edge.export import export
    result = export("model.safetensors", target="onnx", precision="int8", calib="calib_images/")
    result.path          # the loadable artifact (glia_edge.load(result.path))
    result.meta          # its ArtifactMeta (precision, calibration hash, tool versions, fusions ...)
    result.gate_report   # GateReport: Spearman vs PyTorch, max |delta score|, SRCC/PLCC vs labels
    result.notes         # e.g. why no TensorRT engine was built and the command to build it

``export(checkpoint=None, *, target, precision="fp32", calib=None, calib_size=300, batch=8,
dynamic=True, output=None, val=None, max_drop=None, crops=1, build_engine=None, **opts)``:
``target`` is ``onnx`` | ``openvino`` | ``trt``; ``precision`` is fp32 | fp16 | int8 (and bf16
for openvino); ``opts`` are fields of :class:`OnnxOptions`, :class:`QuantizeOptions`,
:class:`OpenVinoOptions`, :class:`EngineOptions` and :class:`TrtOnnxOptions` (``int8_graph``). The building blocks (``torch_to_onnx``,
``onnx_to_fp16``, ``onnx_to_int8``, ``onnx_to_trt_qdq``, ``onnx_to_openvino``,
``onnx_to_engine``) are path-to-path functions usable on their own.

Importing this package imports neither torch nor any runtime; each pass imports what it needs.
"""
from glia_edge.export.calibration import DEFAULT_CALIB_SIZE, CalibrationSet, ImageList, read_image_list
from glia_edge.export.exporter import ExportResult, export
from glia_edge.export.fusion import FusionReport, fusion_report
from glia_edge.export.gate import GateReport, run_gate
from glia_edge.export.onnx import OnnxOptions, torch_to_onnx
from glia_edge.export.options import ExportOptions, export_options
from glia_edge.export.openvino import OpenVinoOptions, onnx_to_openvino
from glia_edge.export.quantize import (QuantizeOptions, check_trt_qdq, onnx_to_fp16, onnx_to_int8,
                                       onnx_to_trt_qdq)
from glia_edge.export.tensorrt import (EngineOptions, TrtOnnxOptions, engine_meta, onnx_to_engine,
                                       tensorrt_unavailable_reason, trt_onnx_meta)
from glia_edge.formats import EXPORT_TARGETS as TARGETS

__all__ = ["export", "ExportResult", "TARGETS", "CalibrationSet", "ImageList", "read_image_list",
           "DEFAULT_CALIB_SIZE", "FusionReport", "fusion_report", "GateReport", "run_gate", "OnnxOptions",
           "torch_to_onnx", "OpenVinoOptions", "onnx_to_openvino", "QuantizeOptions", "check_trt_qdq",
           "onnx_to_fp16", "onnx_to_int8", "onnx_to_trt_qdq", "EngineOptions", "TrtOnnxOptions", "engine_meta",
           "onnx_to_engine", "trt_onnx_meta", "ExportOptions", "export_options", "tensorrt_unavailable_reason"]
