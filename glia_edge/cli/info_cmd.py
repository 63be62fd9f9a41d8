"""``glia-edge presets`` and ``glia-edge info ARTIFACT``."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from glia_edge.cli.common import cli_errors


def presets(pattern: str = typer.Argument("glia_*", help="Shell-style pattern.")) -> None:
    """List the registered GLIA presets with their parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from glia_edge.models import create_model, list_models

    table = Table("preset", "backbone", "local stream", "trainable", "total")
    for name in list_models(pattern):
        model = create_model(name)
        counts = model.param_counts()
        table.add_row(name, model.cfg.backbone, model.cfg.local_stream,
                      f"{counts['trainable'] / 1e6:.2f}M", f"{counts['total'] / 1e6:.1f}M")
    Console().print(table)


def info(artifact: Path = typer.Argument(..., help="Checkpoint, ONNX model, OpenVINO IR or TensorRT engine.")) -> None:
    """Print the metadata an artifact carries (JSON)."""
    from glia_edge.runtimes import read_meta

    with cli_errors():
        typer.echo(json.dumps(read_meta(artifact).to_dict(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(presets)
    app.command()(info)
