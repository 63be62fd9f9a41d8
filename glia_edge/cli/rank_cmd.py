"""``glia-edge rank-levels``: check that scores fall as synthetic distortion levels rise."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from glia_edge.cli.common import cli_errors


def rank_levels(labels: Path = typer.Argument(..., help="labels.csv written by `glia-edge synth`."),
                model: Optional[Path] = typer.Option(None, "--model", "-m", help="Any artifact; default: the packaged model."),
                refs: Optional[str] = typer.Option(None, help="Comma-separated references to use (default all)."),
                types: Optional[str] = typer.Option(None, help="Comma-separated distortion types (default all)."),
                crops: Optional[int] = typer.Option(None, help="Crops per image (1, 5 or 9); default the model's."),
                threads: Optional[int] = typer.Option(None, help="Inference threads."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Mean Spearman(level, score) per distortion type: near -1 means scores fall as distortion rises."""
    from rich.console import Console
    from rich.table import Table

    import glia_edge
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.ranking import level_ranking

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    if crops is not None and crops not in CROP_COUNTS:
        raise typer.BadParameter(f"must be 1, 5 or 9, got {crops}", param_hint="--crops")
    with cli_errors():
        backend = glia_edge.load(model, threads=threads)
        report = level_ranking(backend, labels, refs=split(refs), types=split(types), crops=crops)
    for source, error in report.failed:
        typer.secho(f"{source}: {error}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))  # strict JSON: null, never NaN
        return
    table = Table("distortion", "groups", "constant", "Spearman(level, score)",
                  title=f"level ranking of {backend.path.name}")
    for name, value in report.per_type.items():  # constant: series scored the same at every level (count 0)
        table.add_row(name, str(report.groups[name]), str(report.constant.get(name, 0)), f"{value:+.3f}")
    mean = f"{report.mean:+.3f}" if report.per_type else "-"
    table.add_row("[b]mean[/b]", "", "", f"[b]{mean}[/b]")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("rank-levels")(rank_levels)
