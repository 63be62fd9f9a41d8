"""``glia-edge reproduce DATASET --root DIR``: the papers' table for one dataset, in one command.

Preset (ViT-B, ``glia_vit_base``), training recipe, epochs, evaluation crops (LoDa's 15 seeded
random crops) and the 10 splits are fixed by the protocol; rerunning the command resumes where
it stopped. The table lands in ``runs/reproduce/DATASET/PRESET/table.md`` and ``table.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from glia_edge.cli.common import bars_wanted, cli_errors
from glia_edge.cli.train_cmd import check_preset, parse_overrides


def _cross(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, where = pair.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise typer.BadParameter(f"expected SET=DIR, got {pair!r}", param_hint="--cross")
        out[name.strip().lower()] = where.strip()
    return out


def reproduce_command(
    dataset: str = typer.Argument(..., help="koniq, livec, spaq, kadid (or csv with --csv)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (as released)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Annotation file (csv set)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where the runs and the table go (runs/reproduce/DATASET/PRESET)."),
    cross: list[str] = typer.Option([], "--cross", help="Cross-dataset test set, SET=DIR (koniq: livec=DIR, "
                                                        "spaq=DIR). Repeatable."),
    split_source: str = typer.Option("glia", "--split-source", help="glia (seeded) or loda (LoDa's, regenerated)."),
    splits: str = typer.Option("0-9", "--splits", help="Splits to run (the protocol: 0-9)."),
    backbone_weights: str = typer.Option("pretrained", "--backbone-weights",
                                         help="Local timm checkpoint file, timm name, 'pretrained' or 'none'."),
    local_weights: str = typer.Option("pretrained", "--local-weights",
                                      help="ResNet-50 local stream weights (glia_vit_base_resnet50): file or name."),
    preset: str = typer.Option("glia_vit_base", "--preset", "-p", help="GLIA preset (the papers: ViT-B)."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Epochs (the protocol: 10)."),
    batch_size: int = typer.Option(128, "--batch-size", "-b", min=1, help="Global batch (crops)."),
    eval_crops: str = typer.Option("random15", "--eval-crops",
                                   help="Evaluation crops: random15 (LoDa's, the default), grid1, grid5, grid9."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    workers: int = typer.Option(4, "--workers", min=0, help="Data loader processes."),
    short_side: int = typer.Option(384, "--short-side", help="Resize so the short side is this."),
    model_opt: list[str] = typer.Option([], "--model-opt", help="Model override KEY=VALUE (tests; recorded)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Train the 10 splits of DATASET (resumable) and write the papers' table (Markdown and CSV)."""
    from rich.console import Console
    from rich.table import Table

    from glia_edge.data.splits import parse_split_range
    from glia_edge.reproduce import ReproduceOptions, reproduce

    overrides = parse_overrides(model_opt)
    check_preset(preset, overrides)
    with cli_errors():
        opts = ReproduceOptions(
            dataset=dataset.lower(), root=str(root) if root else None, csv=str(csv) if csv else None,
            output=str(output) if output else None, preset=preset, backbone_weights=backbone_weights,
            local_weights=local_weights, splits=[int(s) for s in parse_split_range(splits)],
            split_source=split_source, eval_crops=eval_crops, epochs=epochs, batch_size=batch_size, device=device,
            workers=workers, cross=_cross(cross), short_side=short_side, model_overrides=overrides,
            progress=bars_wanted(progress))
        rows, md, table_csv = reproduce(opts)
    table = Table("train", "test", "checkpoint", "splits", "SRCC", "PLCC", "KRCC", "RMSE",
                  title=f"{dataset}: medians over splits")
    for r in rows:
        table.add_row(r.train_set, r.test_set, r.checkpoint, str(r.splits),
                      *[f"{getattr(r, k):.3f}" for k in ("srcc", "plcc", "krcc", "rmse")])
    console = Console(markup=False)  # set names and paths are data, not Rich markup
    console.print(table)
    console.print(f"table: {md} and {table_csv}")


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
