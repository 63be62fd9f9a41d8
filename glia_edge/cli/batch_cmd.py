"""``glia-edge batch``: score folders, globs, manifests and object-store URIs on a Ray cluster.

Decoding runs as Ray tasks and inference in a pool of actors, each holding one backend built from
the artifact (shipped to the workers through Ray's object store). The output is one Parquet or
CSV file with a row per input: path, score, crops, status, error, the artifact's name and SHA-256,
its format and precision, and the Ray node and process that scored it. Rerunning an interrupted
job with the same ``--output`` skips what was already written (see :mod:`glia_edge.scale.output`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from glia_edge.cli.common import (MAX_PIXELS_HELP, PRECISION_HELP, check_precision_name, checked_artifact_meta,
                                  cli_errors, exit_on_interrupt, fail, quiet_ray_logs, sigterm_as_interrupt)

log = logging.getLogger(__name__)

#: Exit code when some inputs could not be scored (as ``glia-edge score``).
EXIT_SOME_FAILED = 1


def batch(
    inputs: Optional[list[str]] = typer.Argument(
        None, help="Image files, folders (recursive), globs, or pyarrow-filesystem URIs (s3://, gs://, file://)."),
    output: Path = typer.Option(..., "--output", "-o", help="Result file, .parquet or .csv (written atomically)."),
    manifest: Optional[list[str]] = typer.Option(
        None, "--manifest", help="CSV or Parquet file listing images (repeatable); relative paths are relative to it."),
    path_column: str = typer.Option("path", "--path-column", help="The manifest column holding image paths."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray", help="Ray cluster to join: host:port, ray://host:port or auto (default: start a local one)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Artifact to score with (default: packaged model)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="parquet or csv (default: from --output's suffix)."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Crops per image: 1, 5 or 9 (default: the model's)."),
    actors: Optional[int] = typer.Option(None, "--actors", min=1,
                                         help="Inference actors (default: one per cluster CPU left after decoding)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Runtime threads per actor (default: its CPUs)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Crops per inference call."),
    rows_per_task: int = typer.Option(32, "--rows-per-task", min=1, help="Images per decode task and actor call."),
    commit_rows: int = typer.Option(1000, "--commit-rows", min=1, help="Commit results after this many rows."),
    commit_seconds: float = typer.Option(30.0, "--commit-seconds", min=0.1, help="...or after this many seconds."),
    max_restarts: int = typer.Option(3, "--max-restarts", min=0, help="Restarts allowed per actor that dies."),
    task_retries: int = typer.Option(3, "--task-retries", min=0,
                                     help="Retries of a batch whose actor or decode worker died."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help=MAX_PIXELS_HELP.format("")),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of a local Ray instance."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output or discard a partial run."),
) -> None:
    """Score many images on Ray; an interrupted run resumes where it stopped (same --output)."""
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.scale import require_ray
    from glia_edge.scale.inputs import expand_inputs
    from glia_edge.atomic import check_writable
    from glia_edge.scale.output import check_can_start, output_format, parts_dir_of

    if not inputs and not manifest:
        fail("give inputs (files, folders, globs, URIs) or --manifest")
    if crops is not None and crops not in CROP_COUNTS:
        fail(f"--crops must be 1, 5 or 9, got {crops}")
    check_precision_name(precision)
    with cli_errors():
        require_ray()
        try:
            out_fmt = output_format(output, fmt)
            sources, problems = expand_inputs(inputs or [], manifest or [], path_column)
        except ValueError as exc:
            fail(str(exc))
        check_writable(output)  # now, not after every image is scored
        check_can_start(output, overwrite)  # before a Ray instance starts
        def resume_hint() -> str:
            parts = parts_dir_of(output)
            kept = f"scored rows are kept in {parts}; " if parts.is_dir() else ""
            return f"{kept}rerun the same command to resume"

        with exit_on_interrupt(resume_hint):
            summary = _run(sources, problems, ray_address, num_cpus, out_fmt, output, model, crops, actors, threads,
                           batch_size, rows_per_task, commit_rows, commit_seconds, max_restarts, task_retries,
                           precision, max_pixels, overwrite)
    typer.echo(f"scored {summary.total - summary.failed} of {summary.total} inputs"
               + (f" ({summary.skipped} from an earlier run)" if summary.skipped else "")
               + (f"; {summary.failed} could not be read" if summary.failed else "")
               + f"; results in {summary.output}", err=True)
    if summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _run(sources: list[str], problems: dict[str, str], address: Optional[str], num_cpus: Optional[int], out_fmt: str,
         output: Path, model: Optional[Path], crops: Optional[int], actors: Optional[int], threads: Optional[int],
         batch_size: int, rows_per_task: int, commit_rows: int, commit_seconds: float, max_restarts: int,
         task_retries: int, precision: Optional[str], max_pixels: Optional[int], overwrite: bool):  # noqa: ANN202
    import ray

    from glia_edge.scale.batch import BatchConfig, run_batch
    from glia_edge.scale.cluster import connect

    cfg = BatchConfig(output=output, fmt=out_fmt, model=model, crops=crops, max_pixels=max_pixels, actors=actors,
                      threads=threads, batch_size=batch_size, precision=precision, rows_per_task=rows_per_task,
                      commit_rows=commit_rows, commit_seconds=commit_seconds, max_restarts=max_restarts,
                      task_retries=task_retries, overwrite=overwrite)
    if model is not None:  # an unusable artifact, or another --precision: one line, before any Ray process starts
        checked_artifact_meta(model, precision)
    connect(address, num_cpus=num_cpus)
    quiet_ray_logs()
    try:
        with sigterm_as_interrupt():  # after connect: it replaces the handler Ray installs
            return run_batch(sources, problems, cfg)
    finally:
        ray.shutdown()


def register(app: typer.Typer) -> None:
    app.command()(batch)
