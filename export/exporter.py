"""``export(...)``: checkpoint -> validated ONNX Runtime, OpenVINO or TensorRT artifact, atomically.

The entry point stays thin: it resolves options into frozen dataclasses and runs an ordered
list of small passes over one :class:`_Job` (load -> ONNX -> fusion count -> metadata ->
target artifact -> accuracy gate). Everything is built in a temporary folder next to the output
and renamed into place only after the gate passed, so an export that fails or is interrupted
leaves nothing at the output path.

Targets and what lands at ``output``:

- ``onnx``: one ``.onnx`` file (fp32, fp16 or int8 U8S8 Q/DQ);
- ``openvino``: a folder with ``model.xml`` + ``model.bin`` (fp32, fp16, bf16, int8 via NNCF);
- ``trt``: a folder with ``model.trt.onnx`` (fp32, fp16 casts or signed symmetric Q/DQ) and,
  where tensorrt and a GPU are present, ``model.engine`` + ``model.engine.json``; elsewhere the
  result's notes say why and give the ``glia-edge build-engine`` command to run on the device.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from glia_edge.errors import AccuracyGateError, CalibrationError
from glia_edge.export.calibration import DEFAULT_CALIB_SIZE, CalibrationSet, ImageList, read_image_list
from glia_edge.export.gate import GateReport, run_gate
from glia_edge.export.onnx import OnnxOptions
from glia_edge.export.openvino import OpenVinoOptions
from glia_edge.export.quantize import FP32_OPS, QuantizeOptions
from glia_edge.export.tensorrt import EngineOptions
from glia_edge.meta import ArtifactMeta

log = logging.getLogger(__name__)

#: target -> precisions it can export.
TARGETS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "bf16", "int8"),
    "trt": ("fp32", "fp16", "int8"),
}
TRT_ONNX_NAME = "model.trt.onnx"
ENGINE_NAME = "model.engine"
IR_NAME = "model.xml"


@dataclass(frozen=True)
class ExportResult:
    """The loadable artifact, its metadata, the gate's numbers and what the user should know."""

    path: Path
    meta: ArtifactMeta
    gate_report: GateReport | None
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()


@dataclass
class _Job:
    """State the passes share; ``work`` is the temporary folder renamed to ``output`` at the end."""

    checkpoint: Path
    target: str
    precision: str
    output: Path
    work: Path
    crops: int
    onnx: OnnxOptions
    quant: QuantizeOptions
    openvino: OpenVinoOptions
    engine: EngineOptions
    build_engine: bool | None
    calib: CalibrationSet | None = None
    val: ImageList | None = None
    max_drop: float | None = None
    model: Any = None
    source_meta: ArtifactMeta | None = None
    meta: ArtifactMeta | None = None
    fp32_onnx: Path | None = None
    artifact: Path | None = None  # inside ``work``: what glia_edge.load opens
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gate: GateReport | None = None


# -- passes ------------------------------------------------------------------------------------
def load_source(job: _Job) -> None:
    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.export.fusion import vit_dims
    from glia_edge.meta import sha256_file

    job.model, job.source_meta = load_checkpoint(job.checkpoint)
    job.info["source_checkpoint_sha256"] = sha256_file(job.checkpoint)
    job.info["vit_dims"] = vit_dims(job.model)


def export_onnx(job: _Job) -> None:
    from glia_edge.export.onnx import torch_to_onnx

    assert job.source_meta is not None
    crop = job.source_meta.preprocess_config.crop_size
    job.fp32_onnx = torch_to_onnx(job.model, job.work / "fp32.onnx", crop_size=crop, options=job.onnx)
    job.model = None  # free the torch model before quantization


def count_fusions(job: _Job) -> None:
    from glia_edge.export.fusion import fusion_report

    assert job.fp32_onnx is not None
    heads, hidden = job.info["vit_dims"]
    job.info["fusions"] = fusion_report(job.fp32_onnx, num_heads=heads, hidden_size=hidden).to_dict()


def build_meta(job: _Job) -> None:
    assert job.source_meta is not None
    calib_sha = job.calib.sha256 if job.calib is not None and job.precision == "int8" else None
    settings: dict[str, Any] = {"target": job.target, "exporter": job.onnx.exporter,
                                "opset": job.onnx.resolved_opset, "dynamic": job.onnx.dynamic,
                                "batch": job.onnx.batch, "crops": job.crops, "fusions": job.info.get("fusions"),
                                "output_shape": ["batch", 1] if job.onnx.score_axis else ["batch"]}
    if job.precision == "fp16":
        settings["fp32_ops"] = list(FP32_OPS)
    if job.precision == "int8":
        settings["calibration"] = {"source": job.calib.source if job.calib else None,
                                   "images": len(job.calib.images) if job.calib else 0,
                                   "crops": len(job.calib) if job.calib else 0}
        settings["quantization"] = asdict(job.openvino) if job.target == "openvino" else asdict(job.quant)
    meta = job.source_meta.derive(format="openvino" if job.target == "openvino" else "onnx",
                                  precision=job.precision, calibration_sha256=calib_sha,
                                  source_checkpoint_sha256=job.info["source_checkpoint_sha256"], export=settings)
    job.meta = ArtifactMeta.from_json(meta.to_json())  # exactly what a reader of the artifact gets back


def write_onnx_artifact(job: _Job, dest: Path) -> Path:
    """The fp32 / fp16 / int8 ONNX at ``dest`` with metadata (TensorRT's Q/DQ rules for ``trt``)."""
    import onnx

    from glia_edge.export import quantize
    from glia_edge.runtimes.metadata import set_onnx_meta

    assert job.fp32_onnx is not None and job.meta is not None
    if job.precision == "fp16":
        quantize.onnx_to_fp16(job.fp32_onnx, dest)
    elif job.precision == "int8" and job.target == "trt":
        quantize.onnx_to_trt_qdq(job.fp32_onnx, dest, _require_calib(job), options=job.quant)
    elif job.precision == "int8":
        quantize.onnx_to_int8(job.fp32_onnx, dest, _require_calib(job), options=job.quant)
    else:
        shutil.copyfile(job.fp32_onnx, dest)
    proto = onnx.load(str(dest))
    set_onnx_meta(proto, job.meta)
    onnx.save(proto, str(dest))
    return dest


def _require_calib(job: _Job) -> CalibrationSet:
    if job.calib is None:
        raise CalibrationError(f"{job.target} int8 needs calibration images: pass --calib DIR|CSV")
    return job.calib


def write_target(job: _Job) -> None:
    if job.target == "onnx":
        job.artifact = write_onnx_artifact(job, job.work / "model.onnx")
    elif job.target == "openvino":
        from glia_edge.export.openvino import onnx_to_openvino

        assert job.fp32_onnx is not None
        (job.work / "out").mkdir()
        calib = _require_calib(job) if job.precision == "int8" else None
        job.artifact = onnx_to_openvino(job.fp32_onnx, job.work / "out" / IR_NAME, precision=job.precision,
                                        meta=job.meta, calib=calib, options=job.openvino)
    else:
        (job.work / "out").mkdir()
        job.artifact = write_onnx_artifact(job, job.work / "out" / TRT_ONNX_NAME)
        build_engine_if_possible(job)


def build_engine_if_possible(job: _Job) -> None:
    from glia_edge.export.tensorrt import onnx_to_engine, tensorrt_unavailable_reason

    assert job.artifact is not None and job.meta is not None
    command = f"glia-edge build-engine {job.output / TRT_ONNX_NAME} --precision {job.precision}"
    reason = tensorrt_unavailable_reason() if job.build_engine is not False else "engine build turned off"
    if reason:
        if job.build_engine:
            from glia_edge.errors import BackendUnavailableError

            raise BackendUnavailableError(reason)
        note = (f"No TensorRT engine was built: {reason}. Wrote the TensorRT-ready ONNX; "
                f"finish on the device with: {command}")
        log.warning(note)
        job.notes.append(note)
        return
    e = job.engine
    engine_meta = ArtifactMeta.from_json(job.meta.derive(format="trt", export={**job.meta.export, "engine": asdict(e) | {
        "timing_cache": str(e.timing_cache) if e.timing_cache else None}}).to_json())
    job.artifact = onnx_to_engine(job.artifact, job.work / "out" / ENGINE_NAME, precision=job.precision,
                                  min_batch=e.min_batch, opt_batch=e.opt_batch, max_batch=e.max_batch,
                                  workspace_gib=e.workspace_gib, timing_cache=e.timing_cache, meta=engine_meta)
    job.meta = engine_meta


def accuracy_gate(job: _Job) -> None:
    assert job.artifact is not None
    images = job.val or (job.calib.images if job.calib is not None else None)
    if images is None:
        note = "accuracy gate skipped: no validation images (pass --val DIR|CSV or --calib DIR|CSV)"
        log.warning(note)
        job.notes.append(note)
        return
    job.gate = run_gate(job.artifact, job.checkpoint, images.paths, labels=images.labels, crops=job.crops,
                        max_drop=job.max_drop)


#: The export, in order. Each pass reads and extends the job; any exception aborts the export.
PASSES: list[Callable[[_Job], None]] = [load_source, export_onnx, count_fusions, build_meta, write_target,
                                        accuracy_gate]


# -- the entry point ---------------------------------------------------------------------------
_OPTION_CLASSES = (OnnxOptions, QuantizeOptions, OpenVinoOptions, EngineOptions)


def _split_options(opts: dict[str, Any]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = [{} for _ in _OPTION_CLASSES]
    for key, value in opts.items():
        hits = [i for i, cls in enumerate(_OPTION_CLASSES) if key in {f.name for f in fields(cls)}]
        if not hits:
            known = sorted({f.name for cls in _OPTION_CLASSES for f in fields(cls)} | {"build_engine"})
            raise TypeError(f"unknown export option {key!r}; known: {', '.join(known)}")
        for i in hits:
            groups[i][key] = tuple(value) if isinstance(value, list) else value
    return groups


def default_output(checkpoint: Path, target: str, precision: str) -> Path:
    """``<checkpoint stem>.<precision>.onnx`` / ``.openvino`` / ``.trt`` in the working directory."""
    return Path.cwd() / f"{checkpoint.stem}.{precision}.{target}"


def _check_output(output: Path, target: str) -> Path:
    if target == "onnx" and output.suffix.lower() != ".onnx":
        raise ValueError(f"--output for target onnx must end in .onnx, got {output}")
    if target != "onnx" and output.suffix.lower() in (".onnx", ".xml", ".bin", ".engine", ".plan"):
        raise ValueError(f"--output for target {target} is a folder (it holds several files), got {output}")
    return output


def _commit(job: _Job) -> Path:
    """Move the finished artifact from the work folder to ``output`` (replacing an older one)."""
    assert job.artifact is not None
    from glia_edge.atomic import replace_path

    replace_path(job.work / "model.onnx" if job.target == "onnx" else job.work / "out", job.output)
    return job.output if job.target == "onnx" else job.output / job.artifact.name


def export(checkpoint: str | Path | None = None, *, target: str, precision: str = "fp32",
           calib: str | Path | None = None, calib_size: int = DEFAULT_CALIB_SIZE, batch: int = 8,
           dynamic: bool = True, output: str | Path | None = None, val: str | Path | None = None,
           max_drop: float | None = None, crops: int = 1, build_engine: bool | None = None,
           **opts: Any) -> ExportResult:
    """Export a GLIA checkpoint for ``target`` at ``precision``; see the module docstring.

    ``opts`` are fields of :class:`OnnxOptions` (``exporter``, ``opset``, ``simplify``, ``score_axis``),
    :class:`QuantizeOptions` (``activations``, ``per_channel``, ``calibrate_method`` ...),
    :class:`OpenVinoOptions` (``smooth_quant_alpha``, ``keep_head_float`` ...) and
    :class:`EngineOptions` (``min_batch``, ``max_batch``, ``workspace_gib``, ``timing_cache``).
    ``build_engine``: None builds a TensorRT engine where possible, True requires it, False skips it.
    Raises :class:`AccuracyGateError` when ``max_drop`` is exceeded (nothing is written then).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    if precision not in TARGETS[target]:
        raise ValueError(f"target {target} exports {', '.join(TARGETS[target])}, not {precision!r}")
    if checkpoint is None:
        from glia_edge.weights import default_calibration, default_checkpoint

        checkpoint = default_checkpoint()
        if precision == "int8" and calib is None:  # its own calibration photos; --calib overrides
            calib = default_calibration()
            log.info("default model: INT8 calibration on %s (pass --calib for your own images)", calib.parent)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if precision == "int8" and calib is None:
        raise CalibrationError(f"{target} int8 needs calibration images: pass --calib DIR|CSV")
    if max_drop is not None and calib is None and val is None:
        raise AccuracyGateError("--max-drop needs validation images: pass --val DIR|CSV or --calib DIR|CSV")
    out = _check_output(Path(output) if output else default_output(checkpoint, target, precision), target)
    onnx_o, quant_o, ov_o, engine_o = _split_options(opts)
    engine_o.setdefault("opt_batch", batch)
    engine_o.setdefault("max_batch", max(batch, EngineOptions().max_batch))
    if not dynamic:
        engine_o.update(min_batch=batch, opt_batch=batch, max_batch=batch)
    return _run(checkpoint, target, precision, out, calib, calib_size, val, max_drop, crops, build_engine,
                OnnxOptions(dynamic=dynamic, batch=batch, **onnx_o),
                QuantizeOptions.tensorrt(**quant_o) if target == "trt" else QuantizeOptions(**quant_o),
                OpenVinoOptions(**ov_o), EngineOptions(**engine_o))


def _run(checkpoint: Path, target: str, precision: str, out: Path, calib: str | Path | None, calib_size: int,
         val: str | Path | None, max_drop: float | None, crops: int, build_engine: bool | None,
         onnx_o: OnnxOptions, quant_o: QuantizeOptions, ov_o: OpenVinoOptions, engine_o: EngineOptions) -> ExportResult:
    from glia_edge.checkpoint import read_checkpoint_meta

    preprocess = read_checkpoint_meta(checkpoint).preprocess_config
    calib_set = CalibrationSet.from_path(calib, preprocess, size=calib_size, crops=crops) if calib else None
    val_list = read_image_list(val) if val else None
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    job = _Job(checkpoint, target, precision, out, work, crops, onnx_o, quant_o, ov_o, engine_o, build_engine,
               calib=calib_set, val=val_list, max_drop=max_drop)
    try:
        for step in PASSES:
            log.debug("export pass: %s", step.__name__)
            step(job)
        path = _commit(job)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert job.meta is not None
    files = (out,) if target == "onnx" else tuple(sorted(out.iterdir()))
    log.info("exported %s %s -> %s", target, precision, path)
    return ExportResult(path, job.meta, job.gate, tuple(job.notes), files)
