"""The ``glia-edge`` console script: one Typer app, one module per subcommand.

Each module in ``COMMAND_MODULES`` defines ``register(app)``. Heavy imports (torch, runtimes)
happen inside the commands, so ``glia-edge --help`` and scoring stay light.
"""
from __future__ import annotations

import importlib
import logging

import typer

COMMAND_MODULES = (
    "glia_edge.cli.info_cmd",
    "glia_edge.cli.export_cmd",
    "glia_edge.cli.train_cmd",
    "glia_edge.cli.eval_cmd",
    "glia_edge.cli.reproduce_cmd",
    "glia_edge.cli.rank_cmd",
    "glia_edge.cli.synth_cmd",
    "glia_edge.cli.watch_cmd",
    "glia_edge.cli.score_cmd",
    "glia_edge.cli.bench_cmd",
    "glia_edge.cli.batch_cmd",
    "glia_edge.cli.serve_cmd",
)

app = typer.Typer(
    name="glia-edge",
    help="Blind image quality assessment (GLIA) from training to edge runtimes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only.")) -> None:
    """glia-edge: train, export, score, benchmark and watch image quality."""
    from rich.console import Console
    from rich.logging import RichHandler

    import warnings

    from PIL import Image

    # glia-edge's own pixel limit (--max-pixels) refuses oversized images with a one-line error;
    # Pillow's two-line warning for those over its lower limit would only repeat it.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # Logs go to stderr: stdout carries results (CSV/JSON) that other programs read.
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()
