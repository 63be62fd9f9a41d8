"""ONNX -> serialized TensorRT engine with the TensorRT 10 Python API (10.3, as on JetPack 6.1+).

Engines are tied to the TensorRT version that built them and to the GPU (its compute capability;
another GPU model of the same architecture loads them with a warning), so they are built on the
device that runs them: ``glia-edge export --target trt`` always writes a TensorRT-ready ONNX and
calls :func:`onnx_to_engine` only where ``tensorrt`` and a GPU exist; ``glia-edge build-engine``
finishes the job on the device.

Precision comes from the ONNX itself (pitfall: implicit INT8 calibrators are deprecated since
TensorRT 10.1 and later releases drop the FP16/INT8 builder flags): FP16 (casts) and INT8 (Q/DQ)
graphs are built as ``STRONGLY_TYPED`` networks; FP32 graphs as plain networks with TF32 off. The
parsed graph is checked against the precision asked for, so an engine's sidecar never names a
precision its graph does not have. INT8 graphs come in two kinds (``export.trt_int8_graph`` in
the metadata): Q/DQ on the FP32 graph (the default) or on the FP16 graph (float parts in FP16,
LayerNorm and Softmax kept in FP32); both build strongly typed.
The engine file stays plain (trtexec, Triton and DeepStream read it); metadata goes to the
sidecar ``<engine>.json``. Only APIs present in TensorRT 10.3 are used. The build uses the one
builder the TensorRT probe keeps (``glia_edge.runtimes.tensorrt.get_builder``) and drops it after.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from glia_edge.atomic import atomic_write
from glia_edge.errors import ExportError
from glia_edge.formats import check_precision, write_sidecar
from glia_edge.meta import ArtifactMeta

log = logging.getLogger(__name__)


#: The keys of ``export`` in an engine's metadata that say how its engine was built.
ENGINE_KEY = "engine"
#: The largest workspace limit taken, in GiB: TensorRT takes a size_t byte count (2**63 bytes fits any build).
MAX_WORKSPACE_GIB = float(1 << 33)
#: One build at a time per process: the kept builder is not used from two threads at once.
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class EngineOptions:
    """Optimization profile (batch range), workspace and timing cache of an engine build."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        for name in ("min_batch", "opt_batch", "max_batch"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        ws = self.workspace_gib
        if isinstance(ws, bool) or not isinstance(ws, (int, float)):
            raise ValueError(f"workspace_gib must be a number of GiB, got {ws!r}")
        if not math.isfinite(ws) or not ws > 0:
            raise ValueError(f"workspace_gib must be positive and finite, got {ws}")
        if ws > MAX_WORKSPACE_GIB or int(ws * (1 << 30)) < 1:
            raise ValueError(f"workspace_gib must be between one byte and {MAX_WORKSPACE_GIB:.0f} GiB, got {ws}")


@dataclass(frozen=True)
class TrtOnnxOptions:
    """How the TensorRT-ready ONNX is made. ``int8_graph``: an INT8 export's Q/DQ sits on the FP32
    graph (``"fp32"``, the default until device measurements favour the other) or on the FP16 graph
    (``"fp16"``: float parts in FP16, LayerNorm/Softmax/reductions in FP32). Recorded in the
    metadata as ``export.trt_int8_graph``."""

    int8_graph: str = "fp32"

    def __post_init__(self) -> None:
        if self.int8_graph not in ("fp32", "fp16"):
            raise ValueError(f"int8_graph must be 'fp32' or 'fp16', got {self.int8_graph!r}")


def tensorrt_unavailable_reason() -> str | None:
    """``None`` where an engine can be built and run here, else why not (the runtime's one probe)."""
    from glia_edge.runtimes.tensorrt import unavailable_reason

    return unavailable_reason()


def trt_onnx_meta(onnx_path: str | Path) -> ArtifactMeta:
    """A TensorRT-ready ONNX's metadata: its sidecar ``<onnx>.json`` (no onnx or onnxruntime needed,
    as on a device with only the TensorRT extra), else the ONNX's own ``metadata_props``."""
    from glia_edge.errors import UnsupportedArtifactError
    from glia_edge.formats import read_meta, read_sidecar, sidecar_path

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if sidecar_path(onnx_path).is_file():
        return read_sidecar(onnx_path)
    try:
        return read_meta(onnx_path)
    except UnsupportedArtifactError as exc:
        raise UnsupportedArtifactError(f"{onnx_path}: no metadata sidecar {sidecar_path(onnx_path).name} beside it "
                                       f"and its own metadata cannot be read ({exc}); copy the whole export folder "
                                       "to the device") from None


def engine_meta(onnx_meta: ArtifactMeta, options: EngineOptions) -> ArtifactMeta:
    """The sidecar metadata of an engine built from an ONNX with ``onnx_meta`` (export and build-engine)."""
    settings = {**asdict(options), "timing_cache": str(options.timing_cache) if options.timing_cache else None}
    return ArtifactMeta.from_json(onnx_meta.derive(format="trt", export={**onnx_meta.export, ENGINE_KEY: settings}).to_json())


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> tuple[Any, Any]:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)  # the process's one logger, as the builder's
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: " + " | ".join(errors or ["unknown error"]))
    return network, parser


def _graph_precision(trt: Any, network: Any) -> str:
    """What the parsed graph itself carries: ``int8`` (Q/DQ layers), ``fp16`` (FP16 tensors) or ``fp32``."""
    qdq, half = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE), False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in qdq:
            return "int8"
        half = half or any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs))
    return "fp16" if half else "fp32"


def _profile(builder: Any, network: Any, opts: EngineOptions) -> Any | None:
    """An optimization profile over the batch range, or None for an input with a fixed batch.

    A fixed batch outside the requested range is refused (the engine could not take what was asked);
    inside it, the engine takes that batch only and its sidecar says so (:func:`_static_batch`).
    """
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape[0] != -1:
        if not opts.min_batch <= shape[0] <= opts.max_batch:
            raise ExportError(f"the ONNX input {inp.name} has a fixed batch of {shape[0]} ({shape}), outside the "
                              f"batch range asked ({opts.min_batch}..{opts.max_batch}): build with --min-batch "
                              f"{shape[0]} --opt-batch {shape[0]} --max-batch {shape[0]}, or export with a dynamic batch")
        log.info("static input %s %s: no optimization profile, the engine takes batch %d only", inp.name, shape,
                 shape[0])
        return None
    rest = shape[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (opts.min_batch, *rest), (opts.opt_batch, *rest), (opts.max_batch, *rest))
    return profile


def _static_batch(meta: ArtifactMeta, batch: int) -> ArtifactMeta:
    """``meta`` with the engine's batch range recorded as the one batch a fixed-batch input takes."""
    settings = {**(meta.export.get(ENGINE_KEY) or {}), "min_batch": batch, "opt_batch": batch, "max_batch": batch}
    return replace(meta, export={**meta.export, ENGINE_KEY: settings})


def _load_timing_cache(config: Any, path: Path | None) -> tuple[Any, bool]:
    """``(cache, fresh)``: the file's timing cache attached to ``config``, or an empty one.

    A cache TensorRT cannot read (``create_timing_cache`` gives ``None``: a damaged file, another
    TensorRT version's format) or will not take (``set_timing_cache`` refuses another GPU's cache;
    ``ignore_mismatch`` is never set) is logged and replaced by an empty cache, so what is written
    back after the build holds only this device's timings. A file TensorRT reads but keeps no
    timings of (its entries dropped, e.g. made by another TensorRT version) is reported as such,
    not as loaded.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        if data:
            kept = len(bytes(cache.serialize()))
            empty = config.create_timing_cache(b"")
            if empty is not None and kept <= len(bytes(empty.serialize())):
                log.warning("timing cache %s (%d bytes): TensorRT kept no timings from it (made by another "
                            "TensorRT version?); building without them, and it will be replaced by this "
                            "device's cache", path, len(data))
                return cache, True
            log.info("timing cache %s: %d bytes read, %d bytes of timings taken", path, len(data), kept)
        return cache, not data
    if not data:
        raise ExportError("TensorRT refused an empty timing cache")
    why = "cannot be read by TensorRT here (damaged, or another version's)" if cache is None else \
        "is refused by TensorRT here (made on another GPU)"
    log.warning("timing cache %s %s; building without it, and it will be replaced by this device's cache", path, why)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise ExportError("TensorRT refused an empty timing cache")
    return cache, True


def _write_timing_cache(cache: Any, path: Path) -> None:
    data = bytes(cache.serialize())
    if not data:
        log.warning("TensorRT returned an empty timing cache; %s left unchanged", path)
        return
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
    log.info("timing cache %s: %d bytes written", path, len(data))


def _build(trt: Any, builder: Any, logger: Any, onnx_path: Path, precision: str, options: EngineOptions, *,
           detailed: bool) -> tuple[Any, int | None]:
    """``(serialized engine, fixed batch or None)`` built from ``onnx_path`` with ``builder``."""
    network, _parser = _parse(trt, builder, logger, onnx_path, strongly_typed=precision != "fp32")
    found = _graph_precision(trt, network)
    if found != precision:  # a strongly typed network takes its precision from the graph, not a flag
        raise ExportError(f"{onnx_path}: the graph is {found}, not {precision}: export it at {precision} "
                          "(glia-edge export --target trt --precision ...)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 engines must match PyTorch FP32
    if detailed:  # layer names, types, tactics and I/O formats for the engine inspector (layer_precisions)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    try:
        profile = _profile(builder, network, options)
    except ExportError as exc:
        raise ExportError(f"{onnx_path}: {exc}") from None
    if profile is not None:
        config.add_optimization_profile(profile)
    cache = _load_timing_cache(config, options.timing_cache)[0] if options.timing_cache is not None else None
    static = None if profile is not None else int(tuple(network.get_input(0).shape)[0])
    batches = f"batch {static} (fixed in the ONNX)" if static is not None else \
        f"batch {options.min_batch}/{options.opt_batch}/{options.max_batch}"
    log.info("building TensorRT %s engine (%s, %s)", trt.__version__, precision, batches)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)")
    if cache is not None and options.timing_cache is not None:
        _write_timing_cache(cache, options.timing_cache)
    return serialized, static


def onnx_to_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp32",
                   options: EngineOptions = EngineOptions(), meta: ArtifactMeta | None = None,
                   detailed: bool = False) -> Path:
    """Build and write a serialized engine (plus ``<engine>.json`` when ``meta`` is given).

    ``precision`` must match the ONNX (and ``meta.precision``): ``fp16``/``int8`` graphs (casts /
    Q/DQ) are built strongly typed, so the ONNX, not a flag, decides the engine's precision. An
    ONNX with a fixed batch builds an engine of that batch only (the sidecar records it; a
    requested batch range without it is refused). ``detailed`` builds with
    ``ProfilingVerbosity.DETAILED`` so :func:`layer_precisions` can read each layer's formats
    (it adds NVTX detail to every run: for checks, not for timing).
    Raises :class:`BackendUnavailableError` (kind in ``.kind``) without TensorRT, its CUDA runtime
    or a GPU, and :class:`ExportError` when parsing or building fails.
    """
    check_precision("trt", precision)
    if meta is not None and meta.precision != precision:
        raise ExportError(f"{onnx_path}: precision {precision} does not match the ONNX's metadata ({meta.precision})")
    from glia_edge.runtimes.tensorrt import check_tensorrt, get_builder, logger, release_builder

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    with _BUILD_LOCK:
        try:
            trt, _ = check_tensorrt()  # keeps the builder it creates: the build below uses that one
            if not onnx_path.is_file():
                raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
            serialized, static = _build(trt, get_builder(trt), logger(trt), onnx_path, precision, options,
                                        detailed=detailed)
        finally:
            release_builder()  # no builder (its memory) held after the build
    if meta is not None and static is not None:
        meta = _static_batch(meta, static)
    # Sidecar first, engine last: an engine file only ever appears with its metadata beside it.
    side = write_sidecar(engine_path, meta) if meta is not None else None
    try:
        atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    except BaseException:
        if side is not None:
            side.unlink(missing_ok=True)
        raise
    return engine_path


#: Substrings of the engine inspector's "Format/Datatype" strings, in the order they are tried.
_INSPECTOR_TYPES = (("FP16", "fp16"), ("HALF", "fp16"), ("BF16", "bf16"), ("FP8", "fp8"), ("INT8", "int8"),
                    ("INT32", "int32"), ("INT64", "int64"), ("BOOL", "bool"), ("FP32", "fp32"), ("FLOAT", "fp32"))


def layer_precisions(engine_path: str | Path) -> dict[str, int] | None:
    """How many of an engine's layers give each output type (``{"fp16": 80, "fp32": 12, "int8": 40}``).

    Read with TensorRT's engine inspector (``IEngineInspector``, JSON). Needs an engine built with
    ``onnx_to_engine(..., detailed=True)`` (``ProfilingVerbosity.DETAILED``); for any other engine
    the inspector has only layer names and this returns ``None``. Which layers TensorRT fused and
    which precision each kernel got is what decides an engine's speed, which its graph alone does
    not tell.
    """
    import json

    from glia_edge.errors import UnsupportedArtifactError
    from glia_edge.runtimes.tensorrt import check_tensorrt, logger

    trt, _ = check_tensorrt(build=False)
    runtime = trt.Runtime(logger(trt))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise UnsupportedArtifactError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize this engine")
    if engine.profiling_verbosity != trt.ProfilingVerbosity.DETAILED:
        return None
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    counts: dict[str, int] = {}
    for layer in info.get("Layers", []):
        outputs = layer.get("Outputs") if isinstance(layer, dict) else None
        if not outputs:
            continue
        text = str(outputs[0].get("Format/Datatype", "")).upper()
        kind = next((name for key, name in _INSPECTOR_TYPES if key in text), "other")
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
