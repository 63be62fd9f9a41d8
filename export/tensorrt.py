"""ONNX -> serialized TensorRT engine with the TensorRT 10 Python API (10.3, as on JetPack 6).

Engines are tied to the GPU, CUDA and TensorRT versions that built them, so they are built on the
device that runs them: ``glia-edge export --target trt`` always writes a TensorRT-ready ONNX and
calls :func:`onnx_to_engine` only where ``tensorrt`` and a GPU exist; ``glia-edge build-engine``
finishes the job on the device.

Precision comes from the ONNX itself (pitfall: implicit INT8 calibrators are deprecated since
TensorRT 10.1 and later releases drop the FP16/INT8 builder flags): FP16 (casts) and INT8 (Q/DQ)
graphs are built as ``STRONGLY_TYPED`` networks; FP32 graphs as plain networks with TF32 off.
The engine file stays plain (trtexec, Triton and DeepStream read it); metadata goes to the
sidecar ``<engine>.json``. Only APIs present in TensorRT 10.3 are used.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from glia_edge.atomic import atomic_write
from glia_edge.errors import BackendUnavailableError, ExportError
from glia_edge.formats import check_precision, write_sidecar
from glia_edge.meta import ArtifactMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """Optimization profile (batch range), workspace and timing cache of an engine build."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")


def tensorrt_unavailable_reason() -> str | None:
    """``None`` where an engine can be built and run here, else why not (the runtime's one probe)."""
    from glia_edge.runtimes.tensorrt import unavailable_reason

    return unavailable_reason()


def engine_meta(onnx_meta: ArtifactMeta, options: EngineOptions) -> ArtifactMeta:
    """The sidecar metadata of an engine built from an ONNX with ``onnx_meta`` (export and build-engine)."""
    settings = {**asdict(options), "timing_cache": str(options.timing_cache) if options.timing_cache else None}
    return ArtifactMeta.from_json(onnx_meta.derive(format="trt", export={**onnx_meta.export, "engine": settings}).to_json())


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool) -> tuple[Any, Any]:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: " + " | ".join(errors or ["unknown error"]))
    return network, parser


def _profile(builder: Any, network: Any, opts: EngineOptions) -> Any | None:
    """An optimization profile over the batch range, or None for a fully static input."""
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if shape[0] != -1:
        log.info("static input %s %s: no optimization profile", inp.name, shape)
        return None
    rest = shape[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (opts.min_batch, *rest), (opts.opt_batch, *rest), (opts.max_batch, *rest))
    return profile


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)  # False: refuse a cache from another GPU or TensorRT version
    return cache


def onnx_to_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp32",
                   options: EngineOptions = EngineOptions(), meta: ArtifactMeta | None = None) -> Path:
    """Build and write a serialized engine (plus ``<engine>.json`` when ``meta`` is given).

    ``precision`` must match the ONNX: ``fp16``/``int8`` graphs (casts / Q/DQ) are built strongly
    typed. Raises :class:`BackendUnavailableError` without tensorrt or a GPU, and
    :class:`ExportError` when parsing or building fails.
    """
    check_precision("trt", precision)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)
    from glia_edge.runtimes.tensorrt import import_tensorrt

    trt, _ = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path, strongly_typed=precision != "fp32")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 engines must match PyTorch FP32
    profile = _profile(builder, network, options)
    if profile is not None:
        config.add_optimization_profile(profile)
    cache = _load_timing_cache(config, options.timing_cache)
    log.info("building TensorRT %s engine (%s, batch %d/%d/%d)", trt.__version__, precision,
             options.min_batch, options.opt_batch, options.max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)")
    if options.timing_cache is not None:
        data = bytes(cache.serialize())
        atomic_write(Path(options.timing_cache), lambda tmp: tmp.write_bytes(data))
    # Sidecar first, engine last: an engine file only ever appears with its metadata beside it.
    side = write_sidecar(engine_path, meta) if meta is not None else None
    try:
        atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    except BaseException:
        if side is not None:
            side.unlink(missing_ok=True)
        raise
    return engine_path
