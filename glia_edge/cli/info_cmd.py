"""``glia-edge presets`` and ``glia-edge info [ARTIFACT]``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import check_precision_name, checked_artifact_meta, cli_errors, fail


def presets(pattern: str = typer.Argument("glia_*", help="Shell-style pattern.")) -> None:
    """List the registered GLIA presets with their parameter counts."""
    from glia_edge.models import create_model, list_models
    from glia_edge.models.backbone import FROM_CHECKPOINT

    names = list_models(pattern)
    if not names:
        fail(f"no preset matches {pattern!r} (glia-edge presets lists them all)", code=1)
    rows = []
    for name in names:
        # Only the shapes count here: the bare architecture, without the "randomly initialised" warnings.
        model = create_model(name, backbone_weights=FROM_CHECKPOINT, local_weights=FROM_CHECKPOINT)
        counts = model.param_counts()
        rows.append((name, model.cfg.backbone, model.cfg.local_stream,
                     f"{counts['trainable'] / 1e6:.2f}M", f"{counts['total'] / 1e6:.1f}M"))
    _print_rows(("preset", "backbone", "local stream", "trainable", "total"), rows)


def _print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal; off one (a pipe, a file) tab-separated lines, a row per line, so
    names are never split or cut and ``cut``/``awk`` read them."""
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False)  # names and metadata are data, not Rich markup
    if not console.is_terminal:
        for row in (header, *rows):
            typer.echo("\t".join(row))
        return
    table = Table(*header)
    for column in table.columns:
        column.no_wrap = True  # a name is never split across lines
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
         precision: Optional[str] = typer.Option(None, "--precision", help="The artifact's precision (fp32, fp16, "
                                                 "bf16, int8). Without ARTIFACT: the packaged artifact picked for "
                                                 "it (fp32 by default, int8); with ARTIFACT: refused when the "
                                                 "artifact is another.")) -> None:
    """Print the metadata an artifact carries (JSON); with no argument, which packaged artifact the
    default model runs as here, on which runtime and precision, and that artifact's metadata."""
    from glia_edge.runtimes import read_meta

    check_precision_name(precision)
    with cli_errors():
        if artifact is not None:
            typer.echo(json.dumps(checked_artifact_meta(artifact, precision).to_dict(), indent=2))
            return
        doc = default_model_info(precision)
        if "path" in doc["picked"]:
            doc["meta"] = read_meta(doc["picked"]["path"]).to_dict()
        typer.echo(json.dumps(doc, indent=2))
        if "error" in doc["picked"]:
            fail(doc["picked"]["error"])


def register(app: typer.Typer) -> None:
    app.command()(presets)
    app.command(short_help="Print an artifact's metadata (JSON), or which packaged model runs here.")(info)
