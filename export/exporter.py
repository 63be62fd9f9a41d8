"""``export(...)``: checkpoint -> validated ONNX Runtime, OpenVINO or TensorRT artifact, atomically.

The entry point checks its arguments, sorts the options into :class:`ExportOptions` and runs the
passes in order, each a function from explicit inputs to a path or a value:

1. :func:`load_source`: the PyTorch model, its metadata and the checkpoint's SHA-256;
2. ``torch_to_onnx``: the FP32 ONNX every target starts from;
3. ``fusion_report``: which ViT patterns ONNX Runtime fuses (recorded, so a regression shows);
4. :func:`artifact_meta`: the artifact's :class:`ArtifactMeta`;
5. the target's writer from the format table (``glia_edge.export.writers``);
6. :func:`accuracy_gate`: the artifact against PyTorch on validation images.

Everything is built in a staging folder beside the output and moved into place only after the
gate passed, so an export that fails or is interrupted leaves nothing at the output path. What
lands at ``output``: the ``.onnx`` file for ``onnx``; a folder for ``openvino`` (``model.xml`` +
``model.bin``) and ``trt`` (``model.trt.onnx`` + ``model.trt.onnx.json`` and, where TensorRT and
a GPU exist, ``model.engine`` + ``model.engine.json``).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from glia_edge.errors import AccuracyGateError, CalibrationError
from glia_edge.export.calibration import DEFAULT_CALIB_SIZE, CalibrationSet, ImageList, read_image_list
from glia_edge.export.gate import MIN_GATE_IMAGES, GateReport, gate_too_small, run_gate
from glia_edge.export.options import ExportOptions, export_options
from glia_edge.export.quantize import FP32_OPS
from glia_edge.export.writers import Written, WriterInput, preflight, rewrite_meta
from glia_edge.formats import EXPORT_TARGETS, ArtifactFormat, check_precision, get_format
from glia_edge.meta import ArtifactMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """The loadable artifact, its metadata, the gate's numbers and what the user should know."""

    path: Path
    meta: ArtifactMeta
    gate_report: GateReport | None
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()


# -- passes ------------------------------------------------------------------------------------
def load_source(checkpoint: Path) -> tuple[Any, ArtifactMeta, str]:
    """The PyTorch model (eval mode), its metadata and the checkpoint file's SHA-256."""
    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.meta import sha256_file

    model, meta = load_checkpoint(checkpoint)
    return model, meta, sha256_file(checkpoint)


def artifact_meta(source: ArtifactMeta, *, target: str, precision: str, options: ExportOptions,
                  checkpoint_sha256: str, calib: CalibrationSet | None, fusions: dict[str, Any]) -> ArtifactMeta:
    """The exported artifact's metadata: the checkpoint's, plus how the export was made."""
    onnx = options.onnx
    settings: dict[str, Any] = {"target": target, "exporter": onnx.exporter, "opset": onnx.resolved_opset,
                                "dynamic": onnx.dynamic, "batch": onnx.batch, "crops": options.crops,
                                "fusions": fusions, "output_shape": ["batch", 1] if onnx.score_axis else ["batch"]}
    if precision == "fp16":
        settings["fp32_ops"] = list(FP32_OPS)
    if precision == "int8":
        used = calib.used_images if calib else 0
        settings["calibration"] = {"source": calib.source if calib else None, "images": used,
                                   "skipped": len(calib.images) - used if calib else 0,
                                   "crops": len(calib) if calib else 0}
        settings["quantization"] = asdict(options.openvino) if target == "openvino" else asdict(options.quant)
    meta = source.derive(format=target, precision=precision, source_checkpoint_sha256=checkpoint_sha256,
                         calibration_sha256=calib.sha256 if calib is not None and precision == "int8" else None,
                         export=settings)
    return ArtifactMeta.from_json(meta.to_json())  # exactly what a reader of the artifact gets back


def accuracy_gate(artifact: Path, checkpoint: Path, images: ImageList | None, *, crops: int,
                  max_drop: float | None) -> tuple[GateReport | None, tuple[str, ...]]:
    """The gate's report, or a note saying why it was skipped (no validation images, or fewer than
    the gate needs scored by both; with ``max_drop`` too few is an error, raised by
    :func:`check_gate_images` before the export)."""
    if images is None:
        note = "accuracy gate skipped: no validation images (pass --val DIR|CSV or --calib DIR|CSV)"
        log.warning(note)
        return None, (note,)
    report = run_gate(artifact, checkpoint, images.paths, labels=images.labels, crops=crops, max_drop=max_drop)
    if report is None:  # too few images could be compared (logged by run_gate)
        return None, (f"accuracy gate skipped: fewer than {MIN_GATE_IMAGES} validation images could be scored by both",)
    return report, ()


def check_gate_images(images: ImageList | None, max_drop: float | None, source: object) -> None:
    """Before the long work: ``--max-drop`` needs a gate, and a gate needs enough images."""
    if max_drop is not None and images is not None:
        small = gate_too_small(len(images), source)
        if small is not None:
            raise AccuracyGateError(f"--max-drop: {small}")


#: ``export`` key of an artifact's metadata: the accuracy gate's numbers and what it scored.
GATE_KEY = "gate"


def with_gate(meta: ArtifactMeta, gate: GateReport, *, val: str | Path | None,
              calib: str | Path | None) -> ArtifactMeta:
    """``meta`` with the gate's report in ``export.gate``, and its validation source: ``val``, else
    the seeded subset of the calibration images."""
    source = {"validation": str(val), "validation_kind": "val"} if val else \
        {"validation": str(calib), "validation_kind": "calibration subset"}
    return replace(meta, export={**meta.export, GATE_KEY: {**gate.to_dict(), **source}})


def _writer(fmt: ArtifactFormat) -> Callable[[WriterInput], Written]:
    assert fmt.writer is not None
    module, name = fmt.writer.split(":")
    return getattr(importlib.import_module(module), name)


# -- the entry point ---------------------------------------------------------------------------
def default_output(checkpoint: Path, target: str, precision: str) -> Path:
    """In the working directory: for a single-file format the file ``<checkpoint stem>.<precision>``
    plus the format's first suffix (``.onnx``), else a folder ``<stem>.<precision>.<target>``
    (``.openvino``, ``.trt``)."""
    fmt = get_format(target)
    name = f"{checkpoint.stem}.{precision}"
    return Path.cwd() / (name + fmt.suffixes[0] if fmt.single_file else f"{name}.{target}")


def check_output(output: Path, fmt: ArtifactFormat, checkpoint: Path | None = None) -> Path:
    """``output`` if an export to ``fmt`` may be written there; else ``ValueError`` (or
    :class:`OutputError`) naming the given path and why. Checked now, not after the export: the
    result replaces what is at ``output``."""
    from glia_edge.atomic import check_writable
    from glia_edge.formats import FORMATS

    given = output
    if not output.name or output.name in (".", ".."):  # "." or "/": nothing to name the result by
        raise ValueError(f"--output {given}: needs a file or folder name, not a bare folder")
    if fmt.single_file and output.suffix.lower() not in fmt.suffixes:
        raise ValueError(f"--output for target {fmt.name} must end in {' or '.join(fmt.suffixes)}, got {output}")
    file_suffixes = {s for f in FORMATS.values() for s in f.suffixes} | {".bin"}
    if not fmt.single_file and output.suffix.lower() in file_suffixes:
        raise ValueError(f"--output for target {fmt.name} is a folder (it holds several files), got {output}")
    if fmt.single_file and output.is_dir():
        raise ValueError(f"--output {output} is a folder; target {fmt.name} writes one file")
    if not fmt.single_file and output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; target {fmt.name} writes a folder")
    if checkpoint is not None:  # replacing the output would delete the checkpoint being exported
        ckpt, out = Path(checkpoint).resolve(), output.resolve()
        if ckpt == out or out in ckpt.parents:
            raise ValueError(f"--output {given} holds the checkpoint being exported ({checkpoint}): choose another path")
    if not fmt.single_file and output.is_dir():
        names = export_files(fmt)
        other = sorted(p.name for p in output.iterdir() if p.name not in names or not p.is_file())
        if other:
            raise ValueError(f"--output {output} is a folder that holds other files than an export's for {fmt.name} "
                             f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}): remove them or choose "
                             f"another path, the folder would be replaced")
    # Writable: a folder target is probed through a file inside it (its parent must take the staging folder).
    check_writable(output if fmt.single_file else output / fmt.loadable)
    return output


def export_files(fmt: ArtifactFormat) -> frozenset[str]:
    """The exact file names an export to folder target ``fmt`` writes; a folder holding only these
    (or nothing) is an earlier export that a new one may replace, anything else is the user's."""
    from glia_edge.export.writers import TRT_ONNX_NAME
    from glia_edge.formats import sidecar_path

    loadable = Path(fmt.loadable)
    if fmt.name == "openvino":  # model.xml + model.bin
        return frozenset({loadable.name, loadable.with_suffix(".bin").name})
    if fmt.name == "trt":  # model.trt.onnx (+ .json) and, where built, model.engine (+ .json)
        return frozenset({TRT_ONNX_NAME, sidecar_path(TRT_ONNX_NAME).name, loadable.name, sidecar_path(loadable).name})
    return frozenset({loadable.name})


def check_request(target: str, *, precision: str | None = None, calib_size: int = DEFAULT_CALIB_SIZE, max_drop: float | None = None, batch: int = 8,
                  dynamic: bool = True, crops: int = 1, build_engine: bool | None = None,
                  **opts: Any) -> ExportOptions:
    """Every argument an export can check for free, checked before any work (``--precision auto``
    included, so that a bad value is not blamed on every candidate); returns the sorted options."""
    from glia_edge.benchmarks.checks import check_max_drop

    if target not in EXPORT_TARGETS:
        raise ValueError(f"target must be one of {', '.join(EXPORT_TARGETS)}, got {target!r}")
    check_max_drop(max_drop)
    if isinstance(calib_size, bool) or not isinstance(calib_size, int) or calib_size < 1:
        raise ValueError(f"--calib-size must be a positive integer, got {calib_size!r}")  # keyword calib_size=
    return export_options(target, batch=batch, dynamic=dynamic, crops=crops, build_engine=build_engine,
                          precision=precision, **opts)


def _resolve_source(checkpoint: str | Path | None, precision: str,
                    calib: str | Path | None) -> tuple[Path, str | Path | None]:
    """The checkpoint (the packaged default model when None) and, for its INT8, its own calibration."""
    if checkpoint is None:
        from glia_edge.weights import default_calibration, default_checkpoint

        checkpoint = default_checkpoint()
        if precision == "int8" and calib is None:  # its own calibration photos; --calib overrides
            calib = default_calibration()
            log.info("default model: INT8 calibration on %s (pass --calib for your own images)", Path(calib).parent)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a training run's folder
        found = sorted(p.name for p in checkpoint.glob("*.safetensors"))
        raise FileNotFoundError(f"checkpoint {checkpoint} is a folder: pass a checkpoint file in it"
                                + (f" ({', '.join(found)})" if found else ""))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    return checkpoint, calib


def export(checkpoint: str | Path | None = None, *, target: str, precision: str = "fp32",
           calib: str | Path | None = None, calib_size: int = DEFAULT_CALIB_SIZE, batch: int = 8,
           dynamic: bool = True, output: str | Path | None = None, val: str | Path | None = None,
           max_drop: float | None = None, crops: int = 1, build_engine: bool | None = None,
           **opts: Any) -> ExportResult:
    """Export a GLIA checkpoint for ``target`` at ``precision``; see the module docstring.

    ``precision="auto"`` exports every candidate precision, times them on this machine and keeps
    the fastest within the agreement bound (:mod:`glia_edge.export.auto`).

    ``opts`` are fields of :class:`OnnxOptions` (``exporter``, ``opset``, ``simplify``, ``score_axis``),
    :class:`QuantizeOptions` (``activations``, ``per_channel``, ``calibrate_method`` ...),
    :class:`OpenVinoOptions` (``smooth_quant_alpha``, ``keep_head_float`` ...) and
    :class:`EngineOptions` (``min_batch``, ``max_batch``, ``workspace_gib``, ``timing_cache``) and
    :class:`TrtOnnxOptions` (``int8_graph``: TensorRT INT8 Q/DQ on the ``fp32`` or ``fp16`` graph).
    ``build_engine``: None builds a TensorRT engine where possible, True requires it, False skips it.
    Raises :class:`AccuracyGateError` when ``max_drop`` is exceeded (nothing is written then).
    Error messages name the ``glia-edge export`` flag (``--max-drop``, ``--calib``); each is this
    function's keyword of the same name with underscores (``max_drop=``, ``calib=``).
    """
    options = check_request(target, precision=precision, calib_size=calib_size, max_drop=max_drop, batch=batch,
                            dynamic=dynamic, crops=crops, build_engine=build_engine, **opts)
    if precision == "auto":  # measure the candidates on this machine, keep the fastest within the bound
        from glia_edge.export.auto import export_auto

        return export_auto(checkpoint if checkpoint is None else Path(checkpoint), target=target,
                           output=Path(output) if output else None, calib=calib, calib_size=calib_size, batch=batch,
                           dynamic=dynamic, val=val, max_drop=max_drop, crops=crops, build_engine=build_engine, **opts)
    fmt = get_format(target)
    check_precision(target, precision)
    checkpoint, calib = _resolve_source(checkpoint, precision, calib)
    if precision == "int8" and calib is None:
        raise CalibrationError(f"{target} int8 needs calibration images: pass --calib DIR|CSV")
    if max_drop is not None and calib is None and val is None:
        raise AccuracyGateError("--max-drop needs validation images: pass --val DIR|CSV or --calib DIR|CSV")
    out = check_output(Path(output) if output else default_output(checkpoint, target, precision), fmt, checkpoint)
    preflight(target, options)  # e.g. a required TensorRT engine: probe before any expensive pass

    from glia_edge.atomic import replace_path, staging_dir
    from glia_edge.checkpoint import read_checkpoint_meta
    from glia_edge.export.fusion import fusion_report, vit_dims
    from glia_edge.export.onnx import torch_to_onnx

    preprocess = read_checkpoint_meta(checkpoint).preprocess_config
    calib_set = CalibrationSet.from_path(calib, preprocess, size=calib_size, crops=crops) if calib else None
    val_list = read_image_list(val) if val else (calib_set.images if calib_set is not None else None)
    check_gate_images(val_list, max_drop, f"--val {val}" if val else f"--calib {calib} (--calib-size {calib_size})")
    with staging_dir(out) as work:
        model, source, checkpoint_sha = load_source(checkpoint)
        fp32 = torch_to_onnx(model, work / "fp32.onnx", crop_size=preprocess.crop_size, options=options.onnx)
        heads, hidden = vit_dims(model)
        del model  # free the torch model before quantization
        fusions = fusion_report(fp32, num_heads=heads, hidden_size=hidden).to_dict()
        meta = artifact_meta(source, target=target, precision=precision, options=options,
                             checkpoint_sha256=checkpoint_sha, calib=calib_set, fusions=fusions)
        (work / "out").mkdir()
        written = _writer(fmt)(WriterInput(fp32, work / "out", out, meta, calib_set, options))
        gate, gate_notes = accuracy_gate(written.path, checkpoint, val_list, crops=crops, max_drop=max_drop)
        meta = written.meta
        if gate is not None:  # the numbers travel with the artifact
            meta = with_gate(meta, gate, val=val, calib=calib)
            rewrite_meta(written.path, meta)
        replace_path(written.path if fmt.single_file else work / "out", out)
    path = out if fmt.single_file else out / written.path.name
    files = (out,) if fmt.single_file else tuple(sorted(out.iterdir()))
    log.info("exported %s %s -> %s", target, precision, path)
    return ExportResult(path, meta, gate, written.notes + gate_notes, files)
