"""``glia-edge rank-levels``: check that scores fall as synthetic distortion levels rise."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from glia_edge.cli.common import cli_errors, fail, split_items

#: Exit code when some images could not be scored (as ``glia-edge score``).
EXIT_SOME_FAILED = 1


def _check_selection(labels: Path, refs: list[str] | None, types: list[str] | None) -> None:
    """The labels file must exist and hold every reference and distortion type asked for: checked
    before the model loads, naming what the file does hold."""
    from glia_edge.ranking import read_ladder_rows

    rows = read_ladder_rows(labels)  # missing file, wrong columns, no distorted rows: a DatasetError
    for flag, wanted, column in (("--refs", refs, "ref"), ("--types", types, "distortion")):
        present = sorted({r[column] for r in rows} - {"none"})
        unknown = [w for w in wanted or [] if w not in present]
        if unknown:
            fail(f"{flag}: {labels} has no {', '.join(unknown)} (it holds: {', '.join(present)})")


def rank_levels(labels: Path = typer.Argument(..., help="labels.csv written by `glia-edge synth`."),
                model: Optional[Path] = typer.Option(None, "--model", "-m", help="Any artifact; default: the packaged model."),
                refs: Optional[List[str]] = typer.Option(None, "--refs", help="References to use, comma-separated "
                                                         "or repeated (default: all)."),
                types: Optional[List[str]] = typer.Option(None, "--types", help="Distortion types, comma-separated "
                                                          "or repeated (default: all)."),
                crops: Optional[int] = typer.Option(None, "--crops", help="Crops per image (1, 5 or 9); default the model's."),
                threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Mean Spearman(level, score) per distortion type: near -1 means scores fall as distortion rises.
    Images that cannot be scored are reported (exit code 1); the rest are still ranked."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import glia_edge
    from glia_edge.errors import printable
    from glia_edge.meta import dumps_json
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.ranking import level_ranking

    if crops is not None and crops not in CROP_COUNTS:
        fail(f"--crops must be 1, 5 or 9, got {crops}")
    chosen_refs, chosen_types = split_items(refs), split_items(types)
    with cli_errors():
        _check_selection(labels, chosen_refs, chosen_types)
        backend = glia_edge.load(model, threads=threads)
        report = level_ranking(backend, labels, refs=chosen_refs, types=chosen_types, crops=crops)
    for source, error in report.failed:
        typer.secho(printable(f"error: {source}: {error}"), fg=typer.colors.RED, err=True)
    if as_json:
        typer.echo(dumps_json(report.to_dict(), indent=2))  # strict JSON: null, never NaN
    else:
        table = Table("distortion", "groups", "constant", "Spearman(level, score)",
                      title=f"level ranking of {backend.path.name}")
        for name, value in report.per_type.items():  # constant: series scored the same at every level (count 0)
            table.add_row(escape(name), str(report.groups[name]), str(report.constant.get(name, 0)), f"{value:+.3f}")
        mean = f"{report.mean:+.3f}" if report.per_type else "-"
        table.add_row("[b]mean[/b]", "", "", f"[b]{mean}[/b]")
        Console().print(table)
    if report.failed:
        typer.echo(f"{len(report.failed)} image(s) could not be scored; the rest were ranked", err=True)
        raise typer.Exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    app.command("rank-levels")(rank_levels)
