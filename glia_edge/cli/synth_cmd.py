"""``glia-edge synth OUT_DIR``: write a graded synthetic-distortion dataset (images + labels.csv)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from glia_edge.cli.common import cli_errors, fail, split_items


def synth(
    out_dir: Optional[Path] = typer.Argument(None, show_default=False, help="Folder to create: OUT_DIR/images/*.png and OUT_DIR/labels.csv."),
    refs: Optional[Path] = typer.Option(None, "--refs", help="Folder of reference photos (default: scikit-image's "
                                        "bundled colour photos)."),
    levels: int = typer.Option(5, "--levels", min=1, max=5, help="Levels per type (1..levels)."),
    types: Optional[List[str]] = typer.Option(None, "--types", help="Distortion types, comma-separated or repeated "
                                              "(default: all; see --list-types)."),
    size: int = typer.Option(384, "--size", min=16, help="Short side of the references in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random distortions (noise, motion-blur angle)."),
    tiles: int = typer.Option(4, "--tiles", min=1, help="At most this many non-overlapping tiles from a large "
                              "reference (1 = never tile)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
    list_types: bool = typer.Option(False, "--list-types", help="List the distortion types and their per-level "
                                    "parameters, then exit."),
) -> None:
    """Make graded distortions (5 levels, score = 100 - 18 x level) of reference photos."""
    from glia_edge.distortions import DISTORTIONS, make_dataset

    if list_types:
        for name, fn in DISTORTIONS.items():
            typer.echo(f"{name:16s} {fn.params}")  # type: ignore[attr-defined]
        return
    if out_dir is None:
        fail("OUT_DIR is required (the folder to create)")
    with cli_errors():
        try:
            labels = make_dataset(out_dir, refs, split_items(types), levels=levels, seed=seed, size=size,
                                  max_tiles=tiles, overwrite=overwrite, progress=True)
        except ValueError as exc:  # an unknown distortion type
            fail(str(exc))
    rows = sum(1 for _ in open(labels)) - 1
    typer.echo(f"wrote {rows} labelled images to {labels}")


def register(app: typer.Typer) -> None:
    app.command()(synth)
