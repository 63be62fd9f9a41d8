"""Every setting of one export, grouped by the pass that reads it (frozen dataclasses).

``export(**opts)`` and the CLI take flat keyword options; :func:`export_options` sorts them into
the group whose field they name, so a misspelt option is an error and each pass sees only its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from glia_edge.export.onnx import OnnxOptions
from glia_edge.export.openvino import OpenVinoOptions
from glia_edge.export.quantize import QuantizeOptions
from glia_edge.export.tensorrt import EngineOptions, TrtOnnxOptions


@dataclass(frozen=True)
class ExportOptions:
    """``build_engine``: None builds a TensorRT engine where possible, True requires one, False skips it."""

    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    quant: QuantizeOptions = field(default_factory=QuantizeOptions)
    openvino: OpenVinoOptions = field(default_factory=OpenVinoOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    trt: TrtOnnxOptions = field(default_factory=TrtOnnxOptions)
    build_engine: bool | None = None
    crops: int = 1


_GROUPS = {"onnx": OnnxOptions, "quant": QuantizeOptions, "openvino": OpenVinoOptions, "engine": EngineOptions,
           "trt": TrtOnnxOptions}


def export_options(target: str, *, batch: int = EngineOptions.opt_batch, dynamic: bool = OnnxOptions.dynamic,
                   crops: int = 1, build_engine: bool | None = None, **opts: Any) -> ExportOptions:
    """Sort flat keyword options into their groups; ``TypeError`` names an unknown one.

    ``batch`` is the ONNX batch (fixed when not ``dynamic``) and TensorRT's optimal batch; a
    static export pins the engine's profile to it. TensorRT INT8 starts from
    :meth:`QuantizeOptions.tensorrt` (signed symmetric Q/DQ).
    """
    groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    for key, value in opts.items():
        hits = [name for name, cls in _GROUPS.items() if key in {f.name for f in fields(cls)}]
        if not hits:
            known = sorted({f.name for cls in _GROUPS.values() for f in fields(cls)})
            raise TypeError(f"unknown export option {key!r}; known: {', '.join(known)}")
        for name in hits:
            groups[name][key] = tuple(value) if isinstance(value, list) else value
    engine = groups["engine"]
    engine.setdefault("opt_batch", batch)
    engine.setdefault("max_batch", max(batch, EngineOptions.max_batch))
    if not dynamic:
        engine.update(min_batch=batch, opt_batch=batch, max_batch=batch)
    quant = QuantizeOptions.tensorrt(**groups["quant"]) if target == "trt" else QuantizeOptions(**groups["quant"])
    return ExportOptions(onnx=OnnxOptions(dynamic=dynamic, batch=batch, **groups["onnx"]), quant=quant,
                         openvino=OpenVinoOptions(**groups["openvino"]), engine=EngineOptions(**engine),
                         trt=TrtOnnxOptions(**groups["trt"]),
                         build_engine=build_engine, crops=crops)
