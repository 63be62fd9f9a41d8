"""``glia-edge bench``: every backend and precision against PyTorch FP32, in one reproducible run.

Exports what it needs, measures all configurations alternating, prints the table and writes
``OUTPUT/bench.{md,csv,json,png}``. ``--min-speedup`` / ``--max-drop`` make it a regression check
(exit code 1 when a bound is missed).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from glia_edge.benchmarks.configs import TARGETS
from glia_edge.cli.common import cli_errors, parse_key_values

if TYPE_CHECKING:
    from rich.console import Console

    from glia_edge.benchmarks.report import BenchReport
    from glia_edge.benchmarks.runner import BenchOptions

CHECK_FAILED_EXIT = 1


def _split(text: str, what: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    unknown = [t for t in items if t not in allowed]
    if not items or unknown:
        raise typer.BadParameter(f"{what}: expected some of {','.join(allowed)}, got {text!r}")
    return items


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise typer.BadParameter(f"--batch takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("--batch sizes must be >= 1")
    return values


def _export_options(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs; values are Python literals (True, 0.15, None, ['a', 'b']) or plain text.
    An unknown key is refused here, not as a failed export in every row of the report."""
    from glia_edge.export.options import known_options

    try:
        opts = parse_key_values(items, "--export-option")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    unknown = sorted(set(opts) - set(known_options()))
    if unknown:
        raise typer.BadParameter(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(known_options())}",
                                 param_hint="--export-option")
    return opts


def _check_output_folder(output: Path) -> None:
    """--output is a folder of reports and artifacts: a file there, a file on the way to it or a
    folder this user cannot write in is refused before any work (nothing is created)."""
    from glia_edge.atomic import check_writable
    from glia_edge.errors import OutputError

    if output.exists() and not output.is_dir():
        raise typer.BadParameter(f"{output} is a file; the bench writes a folder", param_hint="--output")
    try:  # the reports are files inside it: the same probe as every other output
        check_writable(output / "bench.md")
    except OutputError as exc:
        raise typer.BadParameter(str(exc), param_hint="--output") from None


#: The options of ``--end-to-end`` mode; the others are refused there (when given), and these without it.
E2E_OPTIONS = ("end_to_end", "e2e_sizes", "e2e_count", "e2e_files", "frames", "decode_workers", "e2e_repeats")
SHARED_OPTIONS = ("threads", "output")


def _refuse_unused(ctx: typer.Context, end_to_end: bool) -> None:
    """Options given explicitly that the chosen mode would ignore: one line naming them."""
    def explicit(name: str) -> bool:  # from the command line or the environment, not the default
        return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")

    given = [p for p in ctx.command.params if p.name and explicit(p.name)]
    if end_to_end:
        unused = [p for p in given if p.name not in E2E_OPTIONS + SHARED_OPTIONS]
        why = "do not apply with --end-to-end"
    else:
        unused = [p for p in given if p.name in E2E_OPTIONS]
        why = "apply only with --end-to-end"
    if unused:
        names = ", ".join(max(p.opts, key=len) for p in unused)
        raise typer.BadParameter(f"{names} {why}")


def _command(o: BenchOptions) -> str:
    """The canonical command line that reproduces this run: every option that takes a value spelled
    out, the thread count and calibration size resolved. Left out only: ``--model``/``--preset``
    (the packaged default model), ``--images``/``--labels``/``--calib`` (the built-in sets), the
    regression bounds when not given, and the ``--profile``/``--reexport`` switches when off."""
    from glia_edge.benchmarks.runner import resolve_threads
    from glia_edge.export.calibration import DEFAULT_CALIB_SIZE

    args = ["glia-edge", "bench"]
    for flag, value in (("--model", o.model), ("--preset", o.preset)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--targets", ",".join(o.targets), "--precisions", ",".join(o.precisions),
             "--batch", ",".join(map(str, o.batches)), "--crops", str(o.crops),
             "--threads", str(resolve_threads(o.threads))]
    for flag, value in (("--images", o.images), ("--labels", o.labels), ("--calib", o.calib)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--calib-size", str(o.calib_size or DEFAULT_CALIB_SIZE)]
    for flag, value in (("--min-speedup", o.min_speedup), ("--max-drop", o.max_drop)):
        if value is not None:
            args += [flag, str(value)]
    for key, value in o.export_options.items():
        args += ["--export-option", f"{key}={value!r}"]
    args += ["--eval-size", str(o.eval_size or 0), "--repeats", str(o.repeats), "--warmup", str(o.warmup),
             "--device", o.device, "--output", str(o.output),
             "--openvino-modes", ",".join(o.openvino_modes), "--openvino-shapes", ",".join(o.openvino_shapes),
             "--compile" if o.compile else "--no-compile", "--memory" if o.memory else "--no-memory"]
    args += ["--profile"] if o.profile else []
    args += ["--reexport"] if o.reexport else []
    return shlex.join(args)


def _print(report: BenchReport, paths: dict[str, Path], console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from glia_edge.benchmarks.report import recommendation, table_columns

    console = console or Console(markup=False)  # paths and notes are data, not Rich markup
    cols = table_columns(report)

    def table(columns: list[tuple[str, Any]], caption: str | None = None) -> Table:
        out = Table(title=report.settings.get("model", ""), caption=caption)
        for header, _ in columns:  # a narrow terminal wraps cells onto more lines; a number is never cut short
            out.add_column(header, overflow="fold")
        for row in report.rows:
            out.add_row(*[str(fn(row)) for _, fn in columns])
        return out

    full = table(cols)
    if console.measure(full, options=console.options.update_width(10_000)).maximum > console.width:
        # too narrow for every column at full width: the main ones
        largest = max(report.batches, default=None)
        main = {"backend", "precision", "status", f"crops/s b{largest}", "speed-up", "Spearman vs PyTorch",
                "max abs delta, % of range"}
        full = table([c for c in cols if c[0] in main], caption="the main columns; bench.md has them all")
    console.print(full)
    console.print(f"machine: {report.machine_line}")
    console.print(recommendation(report))
    for note in report.settings.get("notes", []):
        console.print(f"note: {note}")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def bench(
    ctx: typer.Context,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint (.safetensors). Default: the packaged model."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Without --model: a random-weight checkpoint of this "
                                         "preset (speed only; accuracy columns compare backends on that model)."),
    targets: str = typer.Option(",".join(TARGETS), "--targets",
                                help=f"Comma-separated: {','.join(TARGETS)}."),
    precisions: str = typer.Option("fp32,fp16,int8,bf16", "--precisions",
                                   help="Comma-separated: fp32,fp16,int8,bf16."),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes in images: latency at 1, throughput at the others."),
    crops: int = typer.Option(1, "--crops", help="Crops per image (1, 5 or 9)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads per backend (default: all cores)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Held-out images: a folder or a CSV (path[,score]). "
                                          "Default: a built-in synthetic-distortion set."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of path,score labels for SRCC/PLCC."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="INT8 calibration images (folder or CSV). Default: "
                                         "built-in photos that share none with the held-out set."),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", min=1, help="At most this many calibration "
                                             "images (default: the exporter's)."),
    export_option: Optional[List[str]] = typer.Option(None, "--export-option", help="KEY=VALUE for every export "
                                                      "(repeatable), e.g. keep_head_float=True, "
                                                      "smooth_quant_alpha=None, exclude_nodes=['/head/Gemm']."),
    eval_size: int = typer.Option(120, "--eval-size", min=0, help="Held-out images used (0 = all)."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timed runs per configuration and batch size."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs first (torch.compile compiles here)."),
    output: Path = typer.Option(Path("bench-out"), "--output", "-o", help="Folder for artifacts and reports."),
    compile: bool = typer.Option(True, "--compile/--no-compile", help="Include the torch.compile row."),
    openvino_modes: str = typer.Option("latency", "--openvino-modes", help="OpenVINO performance hints, "
                                       "comma-separated: latency (one request per batch), throughput (each batch "
                                       "split over the device's streams, as watch runs it): a row per hint."),
    openvino_shapes: str = typer.Option("static", "--openvino-shapes", help="OpenVINO shape policies, "
                                        "comma-separated: static (each batch size compiled with its shape fixed, "
                                        "the backend's default), dynamic (one compilation for every size): a row "
                                        "per policy."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak RSS (one process per row)."),
    profile: bool = typer.Option(False, "--profile", help="Also report which operator types dominate each row."),
    reexport: bool = typer.Option(False, "--reexport", help="Export again even where OUTPUT/artifacts holds a "
                                  "matching artifact (e.g. after the exporter changed)."),
    device: str = typer.Option("auto", "--device", help="PyTorch device: auto, cpu or cuda."),
    min_speedup: Optional[str] = typer.Option(None, "--min-speedup", help="Regression check: X for every non-PyTorch "
                                              "row, or TARGET:PRECISION=X,... for named rows."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Regression check: largest allowed "
                                             "1 - Spearman with the PyTorch FP32 scores."),
    end_to_end: Optional[Path] = typer.Option(None, "--end-to-end", help="Artifact: measure only what users see "
                                              "with it (JPEG files: old vs new decode path vs the new path's "
                                              "decoding alone vs model only; camera frames); writes "
                                              "OUTPUT/e2e.{md,json}."),
    e2e_sizes: str = typer.Option("1024x768,4000x3000", "--e2e-sizes", help="JPEG sizes generated for --end-to-end "
                                  "('' for none)."),
    e2e_count: int = typer.Option(40, "--e2e-count", min=1, help="JPEGs per size (and at most this many from "
                                  "--e2e-files)."),
    e2e_files: Optional[Path] = typer.Option(None, "--e2e-files", help="A folder of your own images, measured too."),
    frames: str = typer.Option("1080p,4k", "--frames", help="Camera frame sizes for --end-to-end: 720p,1080p,4k "
                               "('' for none)."),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", min=1, help="Decode threads of the new "
                                                 "path (default: the cores, up to 4)."),
    e2e_repeats: int = typer.Option(3, "--e2e-repeats", min=1, help="Timed passes over the files per path."),
) -> None:
    """Benchmark every backend and precision against PyTorch FP32 eager, in one run."""
    _refuse_unused(ctx, end_to_end is not None)
    if end_to_end is not None:
        _end_to_end(end_to_end, e2e_sizes, e2e_count, e2e_files, frames, decode_workers, e2e_repeats, threads, output)
        return
    from glia_edge.benchmarks.checks import check_max_drop, parse_min_speedup
    from glia_edge.benchmarks.configs import OPENVINO_MODES, OPENVINO_SHAPES, PRECISIONS, build_matrix
    from glia_edge.benchmarks.report import write_all
    from glia_edge.benchmarks.runner import BenchOptions, run_benchmark
    from glia_edge.preprocess import CROP_COUNTS

    if crops not in CROP_COUNTS:
        raise typer.BadParameter("--crops must be 1, 5 or 9")
    if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
        raise typer.BadParameter(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    try:
        parse_min_speedup(min_speedup)
        check_max_drop(max_drop)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _check_output_folder(output)
    if model is not None and model.suffix.lower() != ".safetensors":
        raise typer.BadParameter(f"{model} is not a .safetensors checkpoint (the bench exports every artifact "
                                 f"from a checkpoint; to time an artifact use --end-to-end)", param_hint="--model")
    if model is None and preset is not None:
        from glia_edge.models.registry import check_model_options

        try:
            check_model_options(preset, {})
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--preset") from None
    opts = BenchOptions(model=model, preset=preset, targets=_split(targets, "--targets", TARGETS),
                        precisions=_split(precisions, "--precisions", PRECISIONS), batches=_batches(batch), crops=crops,
                        threads=threads, images=images, labels=labels, calib=calib, calib_size=calib_size,
                        export_options=_export_options(export_option or []), eval_size=eval_size or None,
                        repeats=repeats, warmup=warmup, output=output, compile=compile,
                        openvino_modes=_split(openvino_modes, "--openvino-modes", tuple(OPENVINO_MODES)),
                        openvino_shapes=_split(openvino_shapes, "--openvino-shapes", tuple(OPENVINO_SHAPES)),
                        memory=memory, profile=profile,
                        reexport=reexport, device=device, min_speedup=min_speedup, max_drop=max_drop)
    try:  # a target none of whose precisions was asked for is refused now, not measured as nothing
        build_matrix(opts.targets, opts.precisions, gpu_tensorrt=True, compile=compile,
                     openvino_modes=opts.openvino_modes, openvino_shapes=opts.openvino_shapes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--targets/--precisions") from None
    opts.command = _command(opts)
    with cli_errors():
        report = run_benchmark(opts)
        paths = write_all(report, output)
    _print(report, paths)
    if report.checks:
        for failure in report.checks:
            typer.secho(f"regression: {failure}", fg=typer.colors.RED, err=True)
        raise typer.Exit(CHECK_FAILED_EXIT)


def _end_to_end(artifact: Path, sizes: str, count: int, files: Optional[Path], frames: str,
                workers: Optional[int], repeats: int, threads: Optional[int], output: Path) -> None:
    import json

    from rich.console import Console

    from glia_edge.atomic import atomic_write
    from glia_edge.benchmarks.endtoend import FRAME_SIZES, parse_size, run_end_to_end, to_dict, to_markdown
    from glia_edge.benchmarks.machine import machine_info, machine_line
    from glia_edge.runtimes.decode_pool import resolve_workers

    try:
        size_list = [parse_size(s) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    frame_list = _split(frames, "--frames", tuple(FRAME_SIZES)) if frames.strip() else ()
    _check_output_folder(output)
    if files is not None and not files.is_dir():
        raise typer.BadParameter(f"{files}: not a folder of images", param_hint="--e2e-files")
    if not size_list and not frame_list and files is None:
        raise typer.BadParameter("nothing to measure: give --e2e-sizes, --e2e-files or --frames")
    args = ["glia-edge", "bench", "--end-to-end", str(artifact), "--e2e-sizes", sizes, "--e2e-count", str(count),
            "--frames", frames, "--decode-workers", str(resolve_workers(workers)), "--e2e-repeats", str(repeats),
            "--output", str(output)]
    args += ["--e2e-files", str(files)] if files else []
    args += ["--threads", str(threads)] if threads else []
    with cli_errors():
        rows = run_end_to_end(artifact, sizes=size_list, count=count, files=files, frames=frame_list,
                              workers=resolve_workers(workers), repeats=repeats, work=output,
                              load_options={"threads": threads} if threads else None)
        line = machine_line(machine_info())
        text = to_markdown(rows, line, shlex.join(args))
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(output / "e2e.md", lambda tmp: tmp.write_text(text))
        doc = {"machine": line, "command": shlex.join(args), "artifact": str(artifact), "rows": to_dict(rows)}
        atomic_write(output / "e2e.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=2)))
    typer.echo(text)
    Console(markup=False).print(f"wrote {output / 'e2e.md'}, {output / 'e2e.json'}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
