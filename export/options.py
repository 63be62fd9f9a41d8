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
from glia_edge.preprocess import CROP_COUNTS


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
#: Each group's option names (an option may sit in more than one group).
_NAMES = {name: frozenset(f.name for f in fields(cls)) for name, cls in _GROUPS.items()}


def _check_types(*, batch: Any, dynamic: Any, crops: Any, build_engine: Any, opset: Any) -> None:
    """The options whose wrong type would otherwise fail deep inside a pass (or be recorded as is)."""
    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(batch):
        raise TypeError(f"batch must be a positive integer, got {batch!r}")
    if batch < 1:  # the right type, a bad value
        raise ValueError(f"--batch must be a positive integer, got {batch!r}")
    if not isinstance(dynamic, bool):
        raise TypeError(f"dynamic must be True or False, got {dynamic!r}")
    if not integer(crops) or crops not in CROP_COUNTS:
        raise ValueError(f"--crops must be 1, 5 or 9, got {crops!r}")  # the flag; the keyword is crops=
    if build_engine is not None and not isinstance(build_engine, bool):
        raise TypeError(f"build_engine must be None, True or False, got {build_engine!r}")
    if opset is not None and not integer(opset):
        raise TypeError(f"opset must be an integer, got {opset!r}")


#: Which (target, precision) each option group is read by; ``None`` means every one. ``auto``
#: exports every candidate precision, so it takes what any of them reads.
_APPLIES: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "onnx": (("onnx", "openvino", "trt"), None),
    "quant": (("onnx", "trt"), ("int8", "auto")),
    "openvino": (("openvino",), ("int8", "auto")),
    "engine": (("trt",), None),
    "trt": (("trt",), ("int8",)),
}


def option_applies(key: str, target: str, precision: str | None = None) -> bool:
    """Whether an export to ``target`` at ``precision`` (None: any) reads option ``key``."""
    for name, names in _NAMES.items():
        if key in names:
            targets, precisions = _APPLIES[name]
            if target in targets and (precision is None or precisions is None or precision in precisions):
                return True
    return False


def _check_applies(target: str, precision: str | None, build_engine: Any, opts: dict[str, Any]) -> None:
    """Refuse an option the export would silently ignore (one line naming the option and the target)."""
    if build_engine is not None and target != "trt":
        raise ValueError(f"build_engine (--engine/--no-engine) applies to target trt only, not {target}")
    for key in opts:  # every key is a known option here (export_options checked)
        if not option_applies(key, target, precision):
            where = f"{target} {precision}" if precision is not None and option_applies(key, target) else target
            raise ValueError(f"export option {key} does not apply to target {where}: it would be ignored")


def known_options() -> list[str]:
    """Every flat export option name (``export(**opts)``, ``--export-option KEY=VALUE``)."""
    return sorted(frozenset().union(*_NAMES.values()))


def export_options(target: str, *, batch: int = EngineOptions.opt_batch, dynamic: bool = OnnxOptions.dynamic,
                   crops: int = 1, build_engine: bool | None = None, precision: str | None = None,
                   **opts: Any) -> ExportOptions:
    """Sort flat keyword options into their groups; ``TypeError`` names an unknown one, ``ValueError``
    one that ``target`` (at ``precision``, when given) would ignore.

    ``batch`` is the ONNX batch (fixed when not ``dynamic``) and TensorRT's optimal batch; a
    static export pins the engine's profile to it. TensorRT INT8 starts from
    :meth:`QuantizeOptions.tensorrt` (signed symmetric Q/DQ).
    """
    _check_types(batch=batch, dynamic=dynamic, crops=crops, build_engine=build_engine, opset=opts.get("opset"))
    groups: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    for key in opts:
        if not any(key in names for names in _NAMES.values()):
            raise TypeError(f"unknown export option {key!r}; known: {', '.join(known_options())}")
    _check_applies(target, precision, build_engine, opts)
    for key, value in opts.items():
        hits = [name for name, names in _NAMES.items() if key in names]
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
