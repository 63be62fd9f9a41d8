"""``glia-edge export`` (checkpoint -> ONNX / OpenVINO / TensorRT artifact) and ``glia-edge build-engine``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import cli_errors, exit_on_interrupt, fail
from glia_edge.export.calibration import DEFAULT_CALIB_SIZE
from glia_edge.export.onnx import OnnxOptions
from glia_edge.export.options import ExportOptions
from glia_edge.export.tensorrt import EngineOptions, TrtOnnxOptions
from glia_edge.formats import EXPORT_TARGETS, FORMATS, artifact_size_mb


def _print_summary(result: Any, target: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="glia-edge export", show_header=False)
    meta = result.meta
    table.add_row("artifact", escape(str(result.path)))  # a path is data, not Rich markup
    table.add_row("files", escape(", ".join(p.name for p in result.files)))
    table.add_row("size", f"{artifact_size_mb(result.path):.1f} MB")
    table.add_row("target / format", f"{target} / {meta.format}")
    table.add_row("precision", meta.precision)
    if meta.calibration_sha256:
        table.add_row("calibration", f"{meta.export.get('calibration', {}).get('crops')} crops, "
                      f"sha256 {meta.calibration_sha256[:12]}")
    fusions = meta.export.get("fusions") or {}
    if fusions.get("optimizer"):
        table.add_row("ORT fusions", ", ".join(f"{k} {v}" for k, v in fusions["optimizer"].items()))
    gate = result.gate_report
    if gate is not None:
        table.add_row("Spearman vs PyTorch", f"{gate.spearman:.4f} ({gate.images} images)")
        table.add_row("max |delta score|", f"{gate.max_abs_delta:.4g} ({gate.max_rel_delta:.3%} of the score range)")
        if gate.srcc_artifact is not None:
            table.add_row("SRCC / PLCC vs labels", f"{gate.srcc_artifact:.4f} / {gate.plcc_artifact:.4f} "
                          f"(PyTorch {gate.srcc_reference:.4f} / {gate.plcc_reference:.4f})")
    for c in (meta.export.get("auto") or {}).get("candidates", []):
        speed = f"{c['crops_per_s']:.1f} crops/s" if c.get("crops_per_s") else (c.get("error") or "not measured")
        agree = f"Spearman {c['spearman']:.4f}, max |delta| {c['max_delta_share']:.2%}" if c.get("spearman") else ""
        table.add_row(f"auto: {c['precision']} ({c['inference_precision'] or 'as stored'})",
                      f"{speed}; {agree}{' (within the bound)' if c.get('passes') else ''}")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)  # notes hold [extras]


def export(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="GLIA checkpoint (.safetensors); "
                                              "default: the packaged default model."),
    target: str = typer.Option(..., "--target", "-t", help="; ".join(
        f"{n}: {FORMATS[n].description}" for n in EXPORT_TARGETS) + "."),
    precision: str = typer.Option("fp32", "--precision", "-p", help="; ".join(
        f"{n}: {', '.join(FORMATS[n].precisions)}" for n in EXPORT_TARGETS) + "; auto (onnx, openvino): the "
        "fastest on this machine whose agreement with PyTorch FP32 passes the bound (measured, recorded in the "
        "artifact's metadata)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images: a folder or a CSV."),
    calib_size: int = typer.Option(DEFAULT_CALIB_SIZE, "--calib-size", help="Calibration images used (a seeded subset)."),
    batch: int = typer.Option(EngineOptions.opt_batch, "--batch", help="Batch size (fixed with --static; TensorRT's optimal batch)."),
    dynamic: bool = typer.Option(OnnxOptions.dynamic, "--dynamic/--static", help="Dynamic batch axis or a fixed batch."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Artifact path (.onnx file; a folder for "
                                          "openvino and trt)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation images for the accuracy gate (folder or "
                                       "CSV, labels used when present); default: the calibration images."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Fail when 1 - Spearman vs PyTorch (or the "
                                             "SRCC lost against labels) exceeds this."),
    crops: int = typer.Option(ExportOptions.crops, "--crops", help="Crops per image for calibration and the gate (1, 5 or 9)."),
    exporter: str = typer.Option(OnnxOptions.exporter, "--exporter", help="torch.onnx exporter: legacy (opset 17) or dynamo "
                                 "(opset 18)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (17+)."),
    score_axis: bool = typer.Option(OnnxOptions.score_axis, "--score-axis", help="Scores shaped (batch, 1), not (batch,): for "
                                    "DeepStream nvinfer, which strips the batch axis."),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine", help="trt: require / skip the engine build "
                                          "(default: build where tensorrt and a GPU exist)."),
    int8_graph: Optional[str] = typer.Option(None, "--int8-graph", help="trt int8: Q/DQ on the fp32 graph "
                                             f"(default: {TrtOnnxOptions.int8_graph}) or on the fp16 graph (float "
                                             "parts FP16, LayerNorm/Softmax FP32)."),
) -> None:
    """Export a checkpoint to an ONNX Runtime, OpenVINO or TensorRT artifact, checked against PyTorch."""
    from glia_edge.export import export as run_export

    with cli_errors():
        try:
            # a service manager's stop (SIGTERM) cleans up as Ctrl-C does
            with exit_on_interrupt(lambda: "nothing was written at the output (its staging folder is removed)"):
                result = run_export(checkpoint, target=target, precision=precision, calib=calib,
                                    calib_size=calib_size, batch=batch, dynamic=dynamic, output=output, val=val,
                                    max_drop=max_drop, crops=crops, build_engine=engine, exporter=exporter,
                                    opset=opset, score_axis=score_axis,
                                    **({"int8_graph": int8_graph} if int8_graph is not None else {}))
        except ValueError as exc:  # a refused value: one line, as every command's errors
            fail(str(exc))
        _print_summary(result, target)


def _engine_path(onnx_path: Path) -> Path:
    name = onnx_path.name
    stem = name[: -len(".trt.onnx")] if name.endswith(".trt.onnx") else onnx_path.stem
    return onnx_path.with_name(stem + ".engine")


def _number(text: str, flag: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def build_engine(
    onnx_path: Path = typer.Argument(..., help="TensorRT-ready ONNX (model.trt.onnx from glia-edge export; its "
                                     "metadata sidecar model.trt.onnx.json beside it)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8: must match the "
                                            "ONNX's metadata, which decides (the graph carries its precision)."),
    # Read as text so that any bad value (not only an out-of-range number) is one line, not a usage box.
    # Unset: what the export recorded in the ONNX's metadata (its --batch/--static profile), else the defaults.
    min_batch: Optional[str] = typer.Option(None, "--min-batch", help="Smallest batch of the profile (default: "
                                            f"as exported, else {EngineOptions.min_batch})."),
    opt_batch: Optional[str] = typer.Option(None, "--opt-batch", help="Batch the builder tunes for (default: as "
                                            f"exported, else {EngineOptions.opt_batch})."),
    max_batch: Optional[str] = typer.Option(None, "--max-batch", help="Largest batch of the profile (default: as "
                                            f"exported, else {EngineOptions.max_batch})."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="Builder workspace limit in GiB (default: "
                                            f"as exported, else {EngineOptions.workspace_gib:g})."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file (read, and "
                                                "replaced when refused, after a successful build)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Engine path (default: model.engine beside "
                                          "the ONNX); metadata goes to <engine>.json."),
) -> None:
    """Build a TensorRT engine from a TensorRT-ready ONNX, on the device that will run it.

    Needs only the TensorRT extra: the metadata comes from the sidecar beside the ONNX.
    """
    from glia_edge.export.tensorrt import engine_meta, onnx_to_engine, trt_onnx_meta
    from glia_edge.export.writers import ENGINE_OPTIONS_KEY

    try:
        flags = {"min_batch": (min_batch, "--min-batch", int), "opt_batch": (opt_batch, "--opt-batch", int),
                 "max_batch": (max_batch, "--max-batch", int), "workspace_gib": (workspace, "--workspace", float)}
        given = {key: _number(text, flag, kind) for key, (text, flag, kind) in flags.items() if text is not None}
    except ValueError as exc:
        fail(str(exc))
    if precision is not None and precision not in FORMATS["trt"].precisions:
        fail(f"--precision must be one of {', '.join(FORMATS['trt'].precisions)}, got {precision!r}")
    with cli_errors():
        meta = trt_onnx_meta(onnx_path)
        if precision is not None and precision != meta.precision:
            fail(f"{onnx_path.name} is {meta.precision} (its metadata), not {precision}: a TensorRT engine "
                 f"takes its precision from the ONNX; export again with --target trt --precision {precision}")
        recorded = meta.export.get(ENGINE_OPTIONS_KEY) or {}
        settings = {key: given[key] if key in given else recorded.get(key, getattr(EngineOptions, key))
                    for key in flags}
        try:
            opts = EngineOptions(**settings, timing_cache=timing_cache)
        except ValueError as exc:
            fail(f"{exc} (flags given, else as recorded in {onnx_path.name}'s metadata)")
        path = onnx_to_engine(onnx_path, output or _engine_path(onnx_path), precision=meta.precision, options=opts,
                              meta=engine_meta(meta, opts))
        typer.echo(f"wrote {path} ({meta.precision}, {artifact_size_mb(path):.1f} MB) and {path.name}.json")


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("build-engine")(build_engine)
