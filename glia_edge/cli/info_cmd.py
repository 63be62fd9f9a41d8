"""``glia-edge presets`` and ``glia-edge info [ARTIFACT]``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import cli_errors


def presets(pattern: str = typer.Argument("glia_*", help="Shell-style pattern.")) -> None:
    """List the registered GLIA presets with their parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from glia_edge.models import create_model, list_models
    from glia_edge.models.backbone import FROM_CHECKPOINT

    table = Table()
    for column in ("preset", "backbone", "local stream", "trainable", "total"):
        table.add_column(column, overflow="fold")  # names wrap on a narrow terminal instead of being cut
    for name in list_models(pattern):
        # Only the shapes count here: the bare architecture, without the "randomly initialised" warnings.
        model = create_model(name, backbone_weights=FROM_CHECKPOINT, local_weights=FROM_CHECKPOINT)
        counts = model.param_counts()
        table.add_row(name, model.cfg.backbone, model.cfg.local_stream,
                      f"{counts['trainable'] / 1e6:.2f}M", f"{counts['total'] / 1e6:.1f}M")
    Console().print(table)


def default_model_info(precision: str | None = None) -> dict[str, Any]:
    """What ``load()`` without a path opens here, in pick order: every packaged artifact, whether its
    runtime is installed, and the one that would run (``picked``)."""
    from glia_edge.errors import GliaError
    from glia_edge.formats import FORMATS
    from glia_edge.runtimes.base import pick_default
    from glia_edge.weights import DEFAULT_MODEL, PACKAGED

    try:
        path, cls = pick_default(**({"precision": precision} if precision else {}))
        picked: dict[str, Any] = {"path": str(path), "runtime": FORMATS[cls.format].label,
                                  "precision": precision or "fp32"}
    except GliaError as exc:
        picked = {"error": str(exc)}
    order = [{"file": a.file, "runtime": FORMATS[a.runtime].label, "precision": a.precision,
              "packaged": a.path.exists(), "runtime_installed": a.installed} for a in PACKAGED]
    return {"default_model": DEFAULT_MODEL, "picked": picked, "order": order}


def info(artifact: Optional[Path] = typer.Argument(None, help="Checkpoint, ONNX model, OpenVINO IR or TensorRT "
                                                    "engine (default: which packaged model this install runs)."),
         precision: Optional[str] = typer.Option(None, "--precision", help="Without ARTIFACT: the packaged "
                                                 "artifact picked for this precision (fp32 by default, int8).")) -> None:
    """Print the metadata an artifact carries (JSON); with no argument, which packaged artifact the
    default model runs as here, on which runtime and precision, and that artifact's metadata."""
    from glia_edge.runtimes import read_meta

    with cli_errors():
        if artifact is not None:
            typer.echo(json.dumps(read_meta(artifact).to_dict(), indent=2))
            return
        doc = default_model_info(precision)
        if "path" in doc["picked"]:
            doc["meta"] = read_meta(doc["picked"]["path"]).to_dict()
        typer.echo(json.dumps(doc, indent=2))
        if "error" in doc["picked"]:
            typer.secho(f"error: {doc['picked']['error']}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command()(presets)
    app.command()(info)
