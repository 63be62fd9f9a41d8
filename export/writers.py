"""One writer per export target: the FP32 ONNX in, the target's artifact (with metadata) out.

Each writer gets a :class:`WriterInput` (the FP32 ONNX, an empty folder to write into, the
artifact's metadata, the calibration set and the export options) and returns what it wrote as
:class:`Written`. The format table (``glia_edge.formats``) names the writer of each target, so the
exporter never branches on the target.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from glia_edge.errors import BackendUnavailableError, CalibrationError
from glia_edge.export.calibration import CalibrationSet
from glia_edge.export.options import ExportOptions
from glia_edge.export.tensorrt import EngineOptions
from glia_edge.formats import FORMATS
from glia_edge.meta import ArtifactMeta

log = logging.getLogger(__name__)

#: The TensorRT-ready ONNX a ``trt`` export always writes (the engine is built from it).
TRT_ONNX_NAME = "model.trt.onnx"


@dataclass(frozen=True)
class WriterInput:
    fp32_onnx: Path
    out_dir: Path  # empty staging folder
    final_dir: Path  # where out_dir's content lands once the export succeeds (for messages)
    meta: ArtifactMeta
    calib: CalibrationSet | None
    options: ExportOptions


@dataclass(frozen=True)
class Written:
    """The file ``glia_edge.load`` opens, the metadata it carries, and what the user should know."""

    path: Path
    meta: ArtifactMeta
    notes: tuple[str, ...] = ()


def _calib(job: WriterInput) -> CalibrationSet:
    if job.calib is None:
        raise CalibrationError(f"{job.meta.format} int8 needs calibration images: pass --calib DIR|CSV")
    return job.calib


def _onnx_at_precision(job: WriterInput, dest: Path, *, tensorrt: bool, meta: ArtifactMeta,
                       int8_graph: str = "fp32") -> Path:
    """The FP32 ONNX converted to ``meta.precision`` at ``dest``, with ``meta`` in its props.

    ``int8_graph`` (TensorRT INT8 only): Q/DQ on the FP32 graph or on the FP16 graph.
    """
    import onnx

    from glia_edge.export import quantize
    from glia_edge.formats import set_onnx_meta

    precision = meta.precision
    if precision == "fp16":
        quantize.onnx_to_fp16(job.fp32_onnx, dest)
    elif precision == "int8" and tensorrt:
        quantize.onnx_to_trt_qdq(job.fp32_onnx, dest, _calib(job), options=job.options.quant, float_graph=int8_graph)
    elif precision == "int8":
        quantize.onnx_to_int8(job.fp32_onnx, dest, _calib(job), options=job.options.quant)
    else:
        shutil.copyfile(job.fp32_onnx, dest)
    proto = onnx.load(str(dest))
    set_onnx_meta(proto, meta)
    onnx.save(proto, str(dest))
    return dest


def write_onnx(job: WriterInput) -> Written:
    """``model.onnx``: FP32, FP16 (FP32 islands) or INT8 U8S8 Q/DQ for ONNX Runtime."""
    dest = job.out_dir / FORMATS["onnx"].loadable
    return Written(_onnx_at_precision(job, dest, tensorrt=False, meta=job.meta), job.meta)


def write_openvino(job: WriterInput) -> Written:
    """``model.xml`` + ``model.bin``: an OpenVINO IR (INT8 through NNCF)."""
    from glia_edge.export.openvino import onnx_to_openvino

    calib = _calib(job) if job.meta.precision == "int8" else None
    path = onnx_to_openvino(job.fp32_onnx, job.out_dir / FORMATS["openvino"].loadable, precision=job.meta.precision,
                            meta=job.meta, calib=calib, options=job.options.openvino)
    return Written(path, job.meta)


def preflight(target: str, options: ExportOptions) -> None:
    """Checks that cost nothing, run before any expensive pass: a required TensorRT engine needs
    the TensorRT probe (TensorRT, its CUDA runtime bindings and a GPU) to pass first."""
    if target == "trt" and options.build_engine:
        from glia_edge.runtimes.tensorrt import unavailable_error

        error = unavailable_error()  # keeps no builder: its memory is not held through the whole export
        if error is not None:
            raise error


#: ``export`` key of a TensorRT-ready ONNX's metadata: the engine options given to the export
#: (profile batches, workspace), the defaults of ``glia-edge build-engine`` on the device.
ENGINE_OPTIONS_KEY = "engine_options"


def engine_options_record(options: EngineOptions) -> dict[str, Any]:
    """:class:`EngineOptions` as recorded for ``build-engine`` (the timing cache is this machine's path: left out)."""
    return {k: v for k, v in asdict(options).items() if k != "timing_cache"}


def engine_flags(options: EngineOptions) -> str:
    """The ``glia-edge build-engine`` flags that reproduce ``options``' profile."""
    return (f"--min-batch {options.min_batch} --opt-batch {options.opt_batch} --max-batch {options.max_batch} "
            f"--workspace {options.workspace_gib:g}")


def rewrite_meta(path: Path, meta: ArtifactMeta) -> None:
    """Replace the metadata an artifact carries: ONNX ``metadata_props`` (and its sidecar when it has one),
    an OpenVINO IR's ``rt_info`` (weights kept as stored), a TensorRT engine's sidecar."""
    from glia_edge.formats import sidecar_path, write_sidecar

    if meta.format == "trt":
        write_sidecar(path, meta)
        return
    if meta.format == "onnx":
        import onnx

        from glia_edge.formats import set_onnx_meta

        proto = onnx.load(str(path))
        set_onnx_meta(proto, meta)
        onnx.save(proto, str(path))
        if sidecar_path(path).is_file():  # a TensorRT-ready ONNX: build-engine reads the sidecar
            write_sidecar(path, meta)
        return
    import openvino as ov

    from glia_edge.formats import set_openvino_meta
    from glia_edge.ov_core import shared_core

    model = shared_core().read_model(str(path))
    set_openvino_meta(model, meta)
    tmp = path.with_name("resaved.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)  # the weights as they are (INT8 stays INT8)
    del model
    tmp.replace(path)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))


def _trt_onnx_meta(job: WriterInput) -> ArtifactMeta:
    """The TensorRT-ready ONNX's metadata: format ``onnx``, the engine options for ``build-engine``,
    and for INT8 which float graph carries the Q/DQ."""
    from glia_edge.export.quantize import FP32_OPS

    meta = replace(job.meta, format="onnx",
                   export={**job.meta.export, ENGINE_OPTIONS_KEY: engine_options_record(job.options.engine)})
    if meta.precision == "int8":
        graph = job.options.trt.int8_graph
        extra = {"trt_int8_graph": graph, **({"fp32_ops": list(FP32_OPS)} if graph == "fp16" else {})}
        meta = replace(meta, export={**meta.export, **extra})
    return meta


def write_trt(job: WriterInput) -> Written:
    """``model.trt.onnx`` (casts or signed symmetric Q/DQ) with its metadata also in the sidecar
    ``model.trt.onnx.json`` (so ``build-engine`` needs neither onnx nor onnxruntime on the device)
    and, where TensorRT and a GPU exist, ``model.engine`` with its sidecar; elsewhere a note with the
    command to finish on the device."""
    from glia_edge.export.tensorrt import engine_meta, onnx_to_engine
    from glia_edge.formats import read_sidecar, write_sidecar
    from glia_edge.runtimes.tensorrt import TensorRtUnavailableError

    onnx_meta = _trt_onnx_meta(job)
    onnx_path = _onnx_at_precision(job, job.out_dir / TRT_ONNX_NAME, tensorrt=True, meta=onnx_meta,
                                   int8_graph=job.options.trt.int8_graph)
    write_sidecar(onnx_path, onnx_meta)
    build = job.options.build_engine
    reason = "engine build turned off"
    if build is not False:
        meta = engine_meta(onnx_meta, job.options.engine)
        try:  # the build probes TensorRT itself (one probe, one builder): an unusable TensorRT is the note below
            engine = onnx_to_engine(onnx_path, job.out_dir / FORMATS["trt"].loadable, precision=meta.precision,
                                    options=job.options.engine, meta=meta)
        except TensorRtUnavailableError as exc:
            if build:
                raise BackendUnavailableError(str(exc)) from None
            reason = str(exc)
        else:
            return Written(engine, read_sidecar(engine))  # as written: a fixed-batch ONNX records its real batch
    note = (f"No TensorRT engine was built: {reason}. Wrote the TensorRT-ready ONNX and its metadata "
            f"({TRT_ONNX_NAME}.json); finish on the device with: glia-edge build-engine "
            f"{job.final_dir / TRT_ONNX_NAME} --precision {onnx_meta.precision} {engine_flags(job.options.engine)}")
    log.warning(note)
    return Written(onnx_path, onnx_meta, (note,))
