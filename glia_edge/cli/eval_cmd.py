"""``glia-edge eval``: SRCC, PLCC (after the 4-parameter logistic fit), KRCC and RMSE of any artifact.

``--checkpoint`` takes a checkpoint, an exported model (.onnx, .xml, .engine), a run folder, or
a pattern with ``{split}``; ``--splits 0-9`` evaluates one artifact per split and adds the medians.
"""
from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import cli_errors

METRIC_COLUMNS = ("srcc", "plcc", "krcc", "rmse")


def _backend_options(device: Optional[str], threads: Optional[int], batch_size: int) -> dict[str, Any]:
    options: dict[str, Any] = {"batch_size": batch_size}
    if device:
        options["device"] = device
    if threads:
        options["threads"] = threads
    return options


def _print_table(dataset: str, results: list[Any], median: dict[str, float] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("split", "images", "SRCC", "PLCC", "KRCC", "RMSE", "failed", title=f"{dataset}: held-out agreement")
    for res in results:
        m = res.metrics
        table.add_row(str(res.split), str(m.n), *[f"{getattr(m, k):.4f}" for k in METRIC_COLUMNS], str(res.failed))
    if median is not None:
        table.add_section()
        table.add_row(f"median of {len(results)}", "", *[f"{median[k]:.4f}" for k in METRIC_COLUMNS], "", style="bold")
    Console().print(table)


def _write_predictions(path: Path, results: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv_module.writer(fh)
        writer.writerow(["split", "path", "score", "prediction"])
        for res in results:
            writer.writerows((res.split, key, score, pred) for key, score, pred in res.predictions)


def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c",
                                   help="Artifact, run folder, or pattern with {split} (runs/koniq/x/split{split})."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="koniq, livec, spaq, kadid or csv."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Annotation file (csv set)."),
    split: Optional[str] = typer.Option(None, "--split", help="N, 'official' or 'all' [the split trained on]."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Several splits, e.g. 0-9: reports medians."),
    splits_file: Optional[Path] = typer.Option(None, "--splits-file", help="Split JSON [beside the checkpoint]."),
    crops: int = typer.Option(1, "--crops", help="Grid crops per image: 1, 5 or 9."),
    which: str = typer.Option("best", "--which", help="In run folders: best or last."),
    device: Optional[str] = typer.Option(None, "--device", help="Backend device (cpu, cuda, GPU ...)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per inference call."),
    output_format: str = typer.Option("table", "--format", help="table or json."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write per-image predictions (CSV)."),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="csv set: scores are DMOS-like."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate an artifact on a dataset split (or the median over several splits)."""
    from glia_edge.data.splits import parse_split, parse_split_range
    from glia_edge.evaluate import evaluate, evaluate_splits, resolve_checkpoint

    if crops not in (1, 5, 9):
        raise typer.BadParameter("must be 1, 5 or 9", param_hint="--crops")
    if output_format not in ("table", "json"):
        raise typer.BadParameter("must be table or json", param_hint="--format")
    common: dict[str, Any] = dict(root=root, csv=csv, splits_file=splits_file, crops=crops, progress=progress,
                                  dataset_options={"higher_is_better": False} if lower_is_better else None,
                                  **_backend_options(device, threads, batch_size))
    with cli_errors():
        if splits:
            results, median = evaluate_splits(checkpoint, dataset.lower(), parse_split_range(splits), which=which,
                                              **common)
        else:
            chosen = parse_split(split) if split is not None else None
            results = [evaluate(resolve_checkpoint(checkpoint, chosen, which), dataset.lower(), split=chosen,
                                **common)]
            median = None
    if predictions:
        _write_predictions(predictions, results)
    if output_format == "json":
        payload: dict[str, Any] = {"dataset": dataset.lower(), "crops": crops, "results": [r.to_dict() for r in results]}
        if median is not None:
            payload["median"] = median
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_table(dataset.lower(), results, median)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
