"""``glia-edge eval``: SRCC, PLCC (after the 4-parameter logistic fit), KRCC and RMSE of any artifact.

``--checkpoint`` takes a checkpoint, an exported model (.onnx, .xml, .engine), a run folder, or
a pattern with ``{split}``; ``--splits 0-9`` evaluates one artifact per split and adds the medians.
In run folders both the selected epoch (``best``, chosen on the validation part) and the last
epoch are scored unless ``--which`` picks one. ``--crops`` names the evaluation-crop protocol:
LoDa's ``random15`` by default, or the grid (``grid1``, ``grid5``, ``grid9``; ``1``/``5``/``9``).
"""
from __future__ import annotations

import csv as csv_module
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.atomic import atomic_write, check_writable
from glia_edge.cli.common import bars_wanted, cli_errors

METRIC_COLUMNS = ("srcc", "plcc", "krcc", "rmse")


def _backend_options(device: Optional[str], threads: Optional[int], batch_size: int) -> dict[str, Any]:
    options: dict[str, Any] = {"batch_size": batch_size}
    if device:
        options["device"] = device
    if threads:
        options["threads"] = threads
    return options


def _print_table(dataset: str, which: str, results: list[Any], median: dict[str, float] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    crops = results[0].crops if results else ""
    parts = {res.part for res in results}  # split "all" scores every image: there is no test part to name
    scored = "all images" if parts == {"all"} else "test part" if parts <= {"test"} else "test parts and all images"
    table = Table("split", "epoch", "images", "SRCC", "PLCC", "KRCC", "RMSE", "failed",
                  title=f"{dataset} {scored}, {which} checkpoint, crops {crops}")
    for res in results:
        m = res.metrics
        table.add_row(str(res.split), str(res.epoch if res.epoch is not None else "-"), str(m.n),
                      *[f"{getattr(m, k):.4f}" for k in METRIC_COLUMNS], str(res.failed))
    if median is not None:
        table.add_section()
        table.add_row(f"median of {len(results)}", "", "", *[f"{median[k]:.4f}" for k in METRIC_COLUMNS], "",
                      style="bold")
    Console(markup=False).print(table)  # split names are data, not Rich markup


def _write_predictions(path: Path, results: list[Any]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv_module.writer(fh)
            writer.writerow(["split", "path", "score", "prediction"])
            for res in results:
                writer.writerows((res.split, key, score, pred) for key, score, pred in res.predictions)

    atomic_write(path, write)


def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c",
                                   help="Artifact, run folder, or pattern with {split} (runs/koniq/x/split{split})."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="koniq, livec, spaq, kadid or csv."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Annotation file (csv set)."),
    split: Optional[str] = typer.Option(None, "--split", help="N, 'official' or 'all' (default: the split trained on)."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Several splits, e.g. 0-9: reports medians."),
    splits_file: Optional[Path] = typer.Option(None, "--splits-file",
                                               help="Split JSON; must exist (default: beside the checkpoint)."),
    crops: str = typer.Option("random15", "--crops",
                              help="Evaluation crops: random15 (LoDa's, seeded per image), grid1, grid5, grid9."),
    which: str = typer.Option("both", "--which",
                              help="In run folders: best (epoch chosen on validation), last, or both."),
    split_source: Optional[str] = typer.Option(None, "--split-source",
                                               help="glia or loda, when no split file is beside the run."),
    device: Optional[str] = typer.Option(None, "--device", help="Backend device (cpu, cuda, GPU ...)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                         help="CPU threads for the runtime (default: its own)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per inference call."),
    output_format: str = typer.Option("table", "--format", "-f", help="table or json."),
    predictions: Optional[Path] = typer.Option(None, "--predictions",
                                               help="Write per-image predictions (CSV) of the first checkpoint."),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="csv set: scores are DMOS-like."),
    allow_train_overlap: bool = typer.Option(False, "--allow-train-overlap",
                                             help="Score a split of the run's own set whose test part holds the "
                                                  "run's training images (refused without this: inflated metrics)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Evaluate an artifact on a dataset split (or the median over several splits)."""
    from glia_edge.data.crop_protocol import parse_crops
    from glia_edge.errors import DatasetError
    from glia_edge.meta import dumps_json

    if output_format not in ("table", "json"):
        raise typer.BadParameter("must be table or json", param_hint="--format")
    if which not in ("best", "last", "both"):
        raise typer.BadParameter("must be best, last or both", param_hint="--which")
    try:
        protocol = parse_crops(crops)
    except DatasetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--crops") from None
    common: dict[str, Any] = dict(root=root, csv=csv, splits_file=splits_file, crops=protocol,
                                  progress=bars_wanted(progress),
                                  split_source=split_source, allow_train_overlap=allow_train_overlap,
                                  dataset_options={"higher_is_better": False} if lower_is_better else None,
                                  **_backend_options(device, threads, batch_size))
    with cli_errors():
        if predictions:
            check_writable(predictions)  # before the evaluation, not after it
        runs = _evaluate_runs(checkpoint, dataset.lower(), split, splits, which, common)
    if predictions:
        _write_predictions(predictions, runs[0][1])  # the selected (first) checkpoint's predictions
    if output_format == "json":
        payload: dict[str, Any] = {"dataset": dataset.lower(), "crops": protocol.name,
                                   "crops_protocol": protocol.describe(),
                                   "checkpoints": {name: {"results": [r.to_dict() for r in results],
                                                          **({"median": median} if median is not None else {})}
                                                   for name, results, median in runs}}
        first = runs[0]
        payload["results"] = [r.to_dict() for r in first[1]]  # the first checkpoint kind, for simple readers
        if first[2] is not None:
            payload["median"] = first[2]
        typer.echo(dumps_json(payload, indent=2))  # an undefined metric (constant scores) as null
    else:
        for name, results, median in runs:
            _print_table(dataset.lower(), name, results, median)


def _evaluate_runs(checkpoint: str, dataset: str, split: Optional[str], splits: Optional[str], which: str,
                   common: dict[str, Any]) -> list[tuple[str, list[Any], dict[str, float] | None]]:
    """(checkpoint kind, per-split results, medians or None) for ``best`` and/or ``last``.

    ``both`` scores ``last`` only where run folders hold one; artifacts named directly are scored
    once. Every split of every kind is checked (it exists, it does not overlap the run's training
    images) before the first image is scored.
    """
    from glia_edge.data.splits import check_split_numbers, parse_split, parse_split_range
    from glia_edge.errors import CheckpointError
    from glia_edge.evaluate import plan_evaluation, score_plan, split_checkpoint, split_options
    from glia_edge.metrics import median_metrics

    kinds = ["best", "last"] if which == "both" else [which]
    chosen: list[Any] = parse_split_range(splits) if splits else [parse_split(split) if split is not None else None]
    check_split_numbers([s for s in chosen if s is not None])
    plan_kw, score_kw = split_options(common)
    planned: list[tuple[str, list[Path], list[Any]]] = []
    seen: list[list[Path]] = []
    for kind in kinds:
        try:
            paths = [split_checkpoint(checkpoint, s, kind) for s in chosen]
        except CheckpointError:
            if kind == kinds[0]:
                raise
            continue  # runs without this checkpoint kind
        if paths in seen:
            continue  # artifacts given directly: scored once
        seen.append(paths)
        planned.append((kind, paths, [plan_evaluation(p, dataset, split=s, **plan_kw) for p, s in zip(paths, chosen)]))
    out: list[tuple[str, list[Any], dict[str, float] | None]] = []
    for kind, paths, plans in planned:
        results = [score_plan(plan, **score_kw) for plan in plans]
        label = kind if all(p.stem == kind for p in paths) else "given"
        out.append((label, results, median_metrics([r.metrics for r in results]) if splits else None))
    return out


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
